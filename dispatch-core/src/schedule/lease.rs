//! The fleet's Redis (issue 17): per-tick claims for fleet-wide schedules, and renewed leases
//! with fencing tokens for leaders.
//!
//! A **tick claim** is `SET dispatch:{cluster}:tick:{schedule}:{tick} <host> NX PX <lease>`: of
//! every master that tries, one gets `OK`, and only that one runs the tick. The key outlives the
//! tick by the lease, longer than any skew between the hosts' clocks we tolerate, so a host
//! whose clock is late cannot claim it again.
//!
//! A **lease** is `SET <key> <holder> NX PX <ttl>`, renewed by a script that extends it only
//! if the holder is still us (compare-and-`PEXPIRE`) and released by one that deletes it only if
//! so; each acquisition takes a fencing token from `INCR <key>:fence`, larger than any earlier
//! holder's. A holder counts itself leader only until `ttl × 0.8` after it *sent* its last
//! successful `SET` or renewal: Redis starts the expiry later than that, so the holder's belief
//! ends before the key does, whatever the network delay, under clock-rate drift below 20 %.

use redis::aio::MultiplexedConnection;
use std::time::{Duration, Instant};

/// The share of the lease a holder trusts (the rest is the margin for drift).
const TRUST: f64 = 0.8;

const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                       return redis.call('del', KEYS[1]) else return 0 end";

/// A connection to the fleet's Redis, bounded in time.
pub(crate) async fn connect(url: &str, limit: Duration) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(Some(limit));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())
}

/// The key of one tick's claim.
pub(crate) fn tick_key(cluster: &str, schedule: &str, tick: u64) -> String {
    format!("dispatch:{cluster}:tick:{schedule}:{tick}")
}

/// Claims one tick for `host`: `Ok(true)` when this host is the one to run it.
pub(crate) async fn claim_tick(
    conn: &mut MultiplexedConnection,
    key: &str,
    host: &str,
    lease: Duration,
) -> redis::RedisResult<bool> {
    let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(host)
        .arg("NX")
        .arg("PX")
        .arg(ms)
        .query_async(conn)
        .await?;
    Ok(set.is_some())
}

const RAISE: &str = "local v = tonumber(redis.call('get', KEYS[1])) \
                     if v == nil or v < tonumber(ARGV[1]) then redis.call('set', KEYS[1], ARGV[1]) end \
                     return 1";

/// The key remembering a schedule's last tick run in the fleet.
pub(crate) fn last_key(cluster: &str, schedule: &str) -> String {
    format!("dispatch:{cluster}:last:{schedule}")
}

/// Raises the remembered last tick of a schedule to `tick` (never lowers it).
pub(crate) async fn remember_tick(
    conn: &mut MultiplexedConnection,
    key: &str,
    tick: u64,
) -> redis::RedisResult<()> {
    redis::cmd("EVAL")
        .arg(RAISE)
        .arg(1)
        .arg(key)
        .arg(tick)
        .query_async::<i64>(conn)
        .await
        .map(|_| ())
}

/// The remembered last tick of a schedule.
pub(crate) async fn last_tick(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> redis::RedisResult<Option<u64>> {
    redis::cmd("GET").arg(key).query_async(conn).await
}

/// A leader lease on one key, for one holder.
#[derive(Debug)]
pub(crate) struct Lease {
    key: String,
    holder: String,
    ttl: Duration,
    /// While leader: until when this holder may believe so, and its fencing token.
    held: Option<(Instant, u64)>,
}

impl Lease {
    /// A lease on `key` for `holder`, lasting `ttl` without renewal.
    pub(crate) fn new(key: String, holder: String, ttl: Duration) -> Lease {
        Lease {
            key,
            holder,
            ttl,
            held: None,
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The fencing token while leader (and the lease is not past its trusted time).
    pub(crate) fn token(&self) -> Option<u64> {
        self.held
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, token)| token)
    }

    /// Until when this holder may believe it leads (`None`: it does not).
    pub(crate) fn trusted_until(&self) -> Option<Instant> {
        self.held
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(until, _)| until)
    }

    /// One step: renew when leader, try to acquire when not. Returns whether this holder is
    /// leader after it. A Redis error ends the leadership at once (the caller logs it).
    pub(crate) async fn step(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<bool> {
        let sent = Instant::now();
        let trusted = sent + self.ttl.mul_f64(TRUST);
        let result = self.try_step(conn, trusted).await;
        if result.is_err() {
            self.held = None;
        }
        result
    }

    async fn try_step(
        &mut self,
        conn: &mut MultiplexedConnection,
        trusted: Instant,
    ) -> redis::RedisResult<bool> {
        if let Some((_, token)) = self.held {
            let renewed: i64 = redis::cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(&self.key)
                .arg(&self.holder)
                .arg(self.ttl_ms())
                .query_async(conn)
                .await?;
            self.held = (renewed == 1 && Instant::now() < trusted).then_some((trusted, token));
            if self.held.is_some() {
                return Ok(true);
            }
        }
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.holder)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(conn)
            .await?;
        if set.is_none() {
            return Ok(false);
        }
        let token: u64 = redis::cmd("INCR")
            .arg(format!("{}:fence", self.key))
            .query_async(conn)
            .await?;
        self.held = (Instant::now() < trusted).then_some((trusted, token));
        Ok(self.held.is_some())
    }

    /// Who holds the lease now, as Redis says.
    pub(crate) async fn holder(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Option<String>> {
        redis::cmd("GET").arg(&self.key).query_async(conn).await
    }

    /// How long the lease has left, as Redis says (`None`: no one holds it).
    pub(crate) async fn remaining(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Option<Duration>> {
        let ms: i64 = redis::cmd("PTTL").arg(&self.key).query_async(conn).await?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    /// Gives the lease up (if still ours), so that another host takes over at once.
    pub(crate) async fn release(&mut self, conn: &mut MultiplexedConnection) {
        self.held = None;
        let _: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(&self.key)
            .arg(&self.holder)
            .query_async(conn)
            .await;
    }
}
