//! The Redis source, Egg's agent pattern done once per host: the Library subscribes to the
//! channel, reads the key, and re-reads it on each message, handing each value read to the
//! loader. One pub/sub connection and one command connection per host, in the Library only.
//!
//! A lost connection is retried with backoff; after reconnecting the Library subscribes first
//! and then re-reads the key, so a change made while it was away (even one whose `PUBLISH`
//! nobody heard) is picked up, and none made between the two steps is missed.

use super::error::ConfigError;
use super::feed::{self, ChangeSender, Changes, Feed, HeldVersion};
use super::source::RedisSettings;
use futures::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use std::time::{Duration, Instant};
use tokio::time::timeout;

pub(super) fn origin(settings: &RedisSettings) -> String {
    format!("Redis key `{}` at {}", settings.key, redact(&settings.url))
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((_, host)) = rest.rsplit_once('@') {
            return format!("{scheme}://***@{host}");
        }
    }
    url.to_owned()
}

/// A wait of about `base`: ±25 %, so hosts sharing a Redis do not retry in lockstep.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    base.mul_f64(factor)
}

/// Why a [`Session`] ended.
enum End {
    /// The connection failed: reconnect.
    Lost(String),
    /// The loader is gone: nobody wants the values any more.
    Closed,
}

/// A live subscription and command connection.
struct Session {
    sink: PubSubSink,
    messages: PubSubStream,
    commands: MultiplexedConnection,
}

impl Session {
    /// Connects, subscribes, and opens the command connection, each bounded in time.
    async fn open(client: &redis::Client, settings: &RedisSettings) -> Result<Session, String> {
        let pubsub = timeout(settings.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| format!("no connection within {:?}", settings.connect_timeout))?
            .map_err(|e| e.to_string())?;
        let (mut sink, messages) = pubsub.split();
        timeout(settings.response_timeout, sink.subscribe(&settings.channel))
            .await
            .map_err(|_| {
                format!(
                    "SUBSCRIBE unanswered within {:?}",
                    settings.response_timeout
                )
            })?
            .map_err(|e| format!("SUBSCRIBE {}: {e}", settings.channel))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout));
        let commands = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Session {
            sink,
            messages,
            commands,
        })
    }

    async fn get(&mut self, key: &str) -> redis::RedisResult<Option<Vec<u8>>> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.commands)
            .await
    }

    /// Reads the key and hands its value to the loader. `Err` only when the connection failed
    /// or the loader is gone; a missing or unreadable key is logged and the last good value
    /// stays.
    async fn reread(
        &mut self,
        changes: &ChangeSender,
        held: &HeldVersion,
        settings: &RedisSettings,
    ) -> Result<(), End> {
        let key = &settings.key;
        match self.get(key).await {
            Ok(Some(bytes)) => changes.send(bytes).await.map_err(|_| End::Closed),
            Ok(None) => {
                tracing::warn!(
                    "Redis key `{key}` does not exist: keeping config v{}",
                    held()
                );
                Ok(())
            }
            Err(e) if is_connection_error(&e) => Err(End::Lost(format!("GET {key}: {e}"))),
            Err(e) => {
                tracing::error!(
                    "cannot read Redis key `{key}`: {e}; keeping config v{}",
                    held()
                );
                Ok(())
            }
        }
    }

    /// Follows the channel: each message (or burst of messages) re-reads the key; an idle
    /// subscription is checked with PING. Returns why the session ended.
    async fn follow(
        mut self,
        changes: &ChangeSender,
        held: &HeldVersion,
        settings: &RedisSettings,
        read_first: bool,
    ) -> End {
        if read_first {
            if let Err(end) = self.reread(changes, held, settings).await {
                return end;
            }
        }
        let mut health = tokio::time::interval(settings.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            tokio::select! {
                msg = self.messages.next() => {
                    if msg.is_none() {
                        return End::Lost("the subscription's connection closed".into());
                    }
                    // Messages already waiting need no read each: one read sees the latest.
                    let mut closed = false;
                    while let Some(next) = self.messages.next().now_or_never() {
                        if next.is_none() {
                            closed = true;
                            break;
                        }
                    }
                    if let Err(end) = self.reread(changes, held, settings).await {
                        return end;
                    }
                    if closed {
                        return End::Lost("the subscription's connection closed".into());
                    }
                }
                _ = health.tick() => {
                    match timeout(settings.response_timeout, self.sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return End::Lost(format!("PING: {e}")),
                        Err(_) => return End::Lost(format!("PING unanswered within {:?}", settings.response_timeout)),
                    }
                }
            }
        }
    }
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// A Redis source, from its read at start to following the channel.
pub(super) struct RedisSource {
    client: redis::Client,
    settings: RedisSettings,
    /// The session of the read at start, still subscribed, for following the channel (`None`
    /// when Redis could not be read: the follow connects).
    session: Option<Session>,
}

impl RedisSource {
    /// A source for `settings`, not connected yet.
    ///
    /// # Errors
    /// [`ConfigError::Unavailable`] when the URL is not a Redis URL: no fallback mends that.
    pub(super) fn open(settings: &RedisSettings) -> Result<RedisSource, ConfigError> {
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|e| ConfigError::Unavailable {
                origin: origin(settings),
                message: format!("not a Redis URL: {e}"),
            })?;
        Ok(RedisSource {
            client,
            settings: settings.clone(),
            session: None,
        })
    }
}

impl Feed for RedisSource {
    /// Connects, subscribes, and reads the key; the session stays for
    /// [`changes`](Feed::changes), subscribed first so no change after this read is missed.
    async fn read_initial(&mut self) -> Result<Vec<u8>, ConfigError> {
        let unavailable = |message: String| ConfigError::Unavailable {
            origin: origin(&self.settings),
            message,
        };
        match Session::open(&self.client, &self.settings).await {
            Err(e) => Err(unavailable(format!("cannot reach Redis: {e}"))),
            Ok(mut session) => {
                let read = match session.get(&self.settings.key).await {
                    Ok(Some(bytes)) => Ok(bytes),
                    Ok(None) => Err(unavailable("the key does not exist".into())),
                    Err(e) => return Err(unavailable(format!("GET: {e}"))),
                };
                self.session = Some(session);
                read
            }
        }
    }

    fn changes(self, held: HeldVersion) -> Changes {
        let (tx, rx) = feed::channel();
        tokio::spawn(run(self.client, self.settings, self.session, tx, held));
        rx
    }
}

/// The Library's whole life with Redis: follow, and on a lost connection reconnect with backoff,
/// subscribe again and re-read the key. Logs each loss and each recovery once. Ends when the
/// loader is gone.
async fn run(
    client: redis::Client,
    settings: RedisSettings,
    mut session: Option<Session>,
    changes: ChangeSender,
    held: HeldVersion,
) {
    let url = redact(&settings.url);
    let mut down_since = session.is_none().then(Instant::now);
    loop {
        let (current, fresh) = match session.take() {
            Some(s) => (s, false),
            None => (
                reconnect(
                    &client,
                    &settings,
                    &url,
                    down_since.unwrap_or_else(Instant::now),
                )
                .await,
                true,
            ),
        };
        let why = match current.follow(&changes, &held, &settings, fresh).await {
            End::Lost(why) => why,
            End::Closed => return,
        };
        tracing::warn!(
            "lost the connection to Redis at {url} ({why}): workers keep config v{}; reconnecting",
            held()
        );
        down_since = Some(Instant::now());
    }
}

/// Connects again, retrying with backoff until it works.
async fn reconnect(
    client: &redis::Client,
    settings: &RedisSettings,
    url: &str,
    since: Instant,
) -> Session {
    let mut wait = settings.backoff_initial;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        match Session::open(client, settings).await {
            Ok(session) => {
                tracing::info!(
                    "reconnected to Redis at {url} after {:?} ({attempts} attempts): subscribed \
                     to `{}` again, re-reading `{}`",
                    since.elapsed(),
                    settings.channel,
                    settings.key
                );
                return session;
            }
            Err(e) => {
                tracing::debug!("Redis connection attempt {attempts} failed: {e}");
                tokio::time::sleep(jitter(wait)).await;
                wait = (wait * 2).min(settings.backoff_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_the_logs() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("rediss://user:p@ss@host/"), "rediss://***@host/");
    }

    #[test]
    fn the_backoff_jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(400));
            assert!(
                d >= Duration::from_millis(300) && d <= Duration::from_millis(500),
                "{d:?}"
            );
        }
    }
}
