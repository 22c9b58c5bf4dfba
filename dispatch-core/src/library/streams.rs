//! One stream connection's life, after the handshake: the Agent's `Open`s and `Cancel`s in,
//! each stream's frames out (see `stream::frames`). Every stream of the connection is one
//! subscriber in the Library's [`Hub`]; one writer takes frames from their bounded queues in
//! turn (at most [`BATCH`] per stream per turn, so one busy stream cannot starve the others).

use super::hosted::Services;
use crate::error::RemoteError;
use crate::service::StreamSpec;
use crate::stream::frames::{Down, DownRef, StreamEnd, Up, MAX_STREAMS_PER_CONNECTION};
use crate::stream::hub::{Hub, Out, SubQueue, Topic};
use crate::wire::{self, Framing};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

/// Frames taken from one stream's queue per turn of the writer.
const BATCH: usize = 64;

/// The streams open on one connection: their queues and the feeds they subscribe to.
type Open = Mutex<HashMap<u64, (Arc<SubQueue>, Option<Arc<Topic>>)>>;

/// Serves one stream connection until it closes (`Ok`) or breaks the protocol (`Err`). Every
/// stream still open then leaves its feed (the last subscriber of a key closes it).
pub(super) async fn serve_streams(framed: Framing, services: Arc<Services>) -> io::Result<()> {
    let hub = services.hub();
    let (mut sink, mut source) = framed.split();
    let wake = Arc::new(Notify::new());
    let open: Open = Mutex::default();
    let lock = || open.lock().unwrap_or_else(PoisonError::into_inner);
    let reader = async {
        while let Some(frame) = source.next().await {
            let up: Up = wire::codec::decode(&frame?)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            match up {
                Up::Open {
                    id,
                    service,
                    method,
                    args,
                } => {
                    let mut streams = lock();
                    if streams.contains_key(&id) {
                        continue;
                    }
                    let subscribed = if streams.len() >= MAX_STREAMS_PER_CONNECTION {
                        Err(StreamEnd::TooMany {
                            limit: MAX_STREAMS_PER_CONNECTION as u64,
                        })
                    } else {
                        open_one(hub, &services, &wake, id, service, method, args.into_vec())
                    };
                    let entry = subscribed.unwrap_or_else(|end| {
                        let queue = SubQueue::new(id, StreamSpec::STREAM, Arc::clone(&wake));
                        queue.end(Some(end));
                        (queue, None)
                    });
                    streams.insert(id, entry);
                }
                Up::Cancel { id } => {
                    let removed = lock().remove(&id);
                    if let Some((queue, Some(topic))) = removed {
                        hub.unsubscribe(&topic, &queue);
                    }
                }
            }
        }
        Ok::<(), io::Error>(())
    };
    let writer = async {
        let mut out = Vec::with_capacity(BATCH + 3);
        loop {
            let queues: Vec<Arc<SubQueue>> = lock().values().map(|(q, _)| Arc::clone(q)).collect();
            let mut wrote = false;
            for queue in queues {
                let ended = queue.pop(&mut out, BATCH);
                for frame in out.drain(..) {
                    sink.feed(encode(queue.id, frame)?).await?;
                    wrote = true;
                }
                if ended {
                    let removed = lock().remove(&queue.id);
                    if let Some((queue, Some(topic))) = removed {
                        hub.unsubscribe(&topic, &queue);
                    }
                }
            }
            if !wrote {
                sink.flush().await?;
                wake.notified().await;
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), io::Error>(())
    };
    let result = tokio::select! {
        r = reader => r,
        r = writer => r,
    };
    let streams: Vec<_> = lock().drain().collect();
    let closed = streams.len();
    for (_, (queue, topic)) in streams {
        if let Some(topic) = topic {
            hub.unsubscribe(&topic, &queue);
        }
    }
    let (feeds, subscribers) = hub.counts();
    tracing::debug!(
        closed,
        feeds,
        subscribers,
        "stream connection closed: its streams left their feeds"
    );
    result
}

/// Subscribes stream `id` to `service.method(args)`, or says why it cannot.
fn open_one(
    hub: &Arc<Hub>,
    services: &Services,
    wake: &Arc<Notify>,
    id: u64,
    service: String,
    method: String,
    args: Vec<u8>,
) -> Result<(Arc<SubQueue>, Option<Arc<Topic>>), StreamEnd> {
    let Some(instance) = services.instance(&service) else {
        return Err(StreamEnd::Remote(RemoteError::UnknownService { service }));
    };
    let Some(spec) = instance.stream_spec(&method) else {
        return Err(StreamEnd::Remote(RemoteError::UnknownMethod {
            service,
            method,
        }));
    };
    let queue = SubQueue::new(id, spec, Arc::clone(wake));
    let name = method.clone();
    let topic = hub.subscribe(
        (service, method, args),
        spec.keyed,
        Arc::clone(&queue),
        move |args| instance.open_stream(&name, args),
    );
    Ok((queue, Some(topic)))
}

/// One frame of stream `id`.
fn encode(id: u64, out: Out) -> io::Result<Bytes> {
    let encoded = match out {
        Out::Opened => wire::codec::encode(&Down::Opened { id }),
        Out::Item(bytes) => wire::codec::encode(&DownRef::Item {
            id,
            bytes: serde_bytes::Bytes::new(&bytes),
        }),
        Out::Gap(missed) => wire::codec::encode(&Down::Gap { id, missed }),
        Out::End(error) => wire::codec::encode(&Down::End { id, error }),
    };
    encoded
        .map(Bytes::from)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
