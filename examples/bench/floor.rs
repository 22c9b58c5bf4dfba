//! The physical floor: the same process layout as a cluster (processes of this binary, one
//! current-thread tokio runtime each) doing the least work a call can: a length-prefixed frame
//! written to a `UnixStream` and echoed back.
//!
//! Both sides read through a buffer and answer every frame already buffered with one write, so
//! with many frames in flight they batch as tarpc does; with one in flight each round trip is
//! one read and one write per side.

use crate::measure::{self, Measured, Plan};
use crate::Job;
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

const BUFFER: usize = 64 * 1024;

/// A connection: reads through a buffer, writes straight to the socket.
type Conn = BufReader<UnixStream>;

/// The echo server: accepts one connection per client (`--workers`), echoes every frame, and
/// exits when all of them have closed. Prints `LISTENING` once it accepts connections.
pub(crate) fn serve(args: &crate::Args) -> Result<bool> {
    serve_connections(args, "the floor server", |stream| {
        echo(BufReader::with_capacity(BUFFER, stream))
    })
}

/// A bench server (the floor's, plain tarpc's): binds `--socket`, prints `LISTENING`, serves
/// each of the `--workers` connections with `conn` on a current-thread runtime, and exits when
/// all of them have closed, or fails past the job's lifetime.
pub(crate) fn serve_connections<F>(
    args: &crate::Args,
    what: &str,
    conn: impl Fn(UnixStream) -> F,
) -> Result<bool>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    crate::die_with_parent(args.parent)?;
    let job = Job::from_child_args(args)?;
    let socket = args.socket.clone().context("--socket is required")?;
    let serve = async {
        let listener =
            UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
        println!("LISTENING");
        let mut connections = tokio::task::JoinSet::new();
        for _ in 0..job.workers {
            let (stream, _) = listener.accept().await?;
            connections.spawn(conn(stream));
        }
        while let Some(done) = connections.join_next().await {
            done??;
        }
        Ok(true)
    };
    current_thread()?.block_on(async {
        tokio::time::timeout(lifetime(&job), serve)
            .await
            .with_context(|| format!("{what} outlived its clients' time limit"))?
    })
}

/// Echoes frames until the client closes.
async fn echo(mut conn: Conn) -> Result<()> {
    let (mut body, mut out) = (Vec::new(), Vec::with_capacity(BUFFER));
    while read_frame(&mut conn, &mut body).await? {
        loop {
            push_frame(&mut out, &body);
            if !frame_buffered(&conn) {
                break;
            }
            read_frame(&mut conn, &mut body).await?;
        }
        conn.get_mut().write_all(&out).await?;
        out.clear();
    }
    Ok(())
}

/// The measuring client: warms up, measures as the job says, prints its `BENCH` line.
pub(crate) fn client(args: &crate::Args) -> Result<bool> {
    crate::die_with_parent(args.parent)?;
    let job = Job::from_child_args(args)?;
    let socket = args.socket.clone().context("--socket is required")?;
    current_thread()?.block_on(async {
        let stream = UnixStream::connect(&socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let server = stream.peer_cred()?.pid().context("the server's pid")?;
        let mut conn = BufReader::with_capacity(BUFFER, stream);
        let body = vec![0x5a_u8; job.payload];
        let (warmup, plan) = job.plans();
        rounds(&mut conn, &body, job.inflight, warmup).await?;
        let cpu = measure::CpuMeter::start(server as u32)?;
        let measured = rounds(&mut conn, &body, job.inflight, plan).await?;
        println!("BENCH {} {}", measured.line(), cpu.line()?);
        Ok(true)
    })
}

/// Keeps `inflight` frames outstanding until `plan` says stop, then waits for the rest.
/// Replies come back in order, so each one's latency is taken from the oldest send time.
async fn rounds(conn: &mut Conn, body: &[u8], inflight: usize, plan: Plan) -> Result<Measured> {
    let issued = AtomicU64::new(0);
    let start = Instant::now();
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(inflight);
    let mut latencies = measure::Latencies::default();
    let (mut reply, mut out) = (Vec::new(), Vec::with_capacity(BUFFER));
    while sent.len() < inflight.max(1) && plan.more(&issued, start) {
        push_frame(&mut out, body);
        sent.push_back(Instant::now());
    }
    while !sent.is_empty() {
        if !out.is_empty() {
            conn.get_mut().write_all(&out).await?;
            out.clear();
        }
        loop {
            anyhow::ensure!(
                read_frame(conn, &mut reply).await?,
                "the server closed the connection"
            );
            if let Some(t) = sent.pop_front() {
                latencies.record(measure::nanos(t.elapsed()));
            }
            if plan.more(&issued, start) {
                push_frame(&mut out, body);
                sent.push_back(Instant::now());
            }
            if sent.is_empty() || !frame_buffered(conn) {
                break;
            }
        }
    }
    Ok(Measured::new(start.elapsed(), latencies))
}

/// Appends a frame: the body's length (4 bytes, little endian), then the body.
fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// Reads one frame into `body`; `false` on a clean end of stream.
async fn read_frame(conn: &mut Conn, body: &mut Vec<u8>) -> Result<bool> {
    let mut len = [0_u8; 4];
    match conn.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    body.resize(u32::from_le_bytes(len) as usize, 0);
    conn.read_exact(body).await?;
    Ok(true)
}

/// Whether a whole frame is in the read buffer already (reading it costs no system call).
fn frame_buffered(conn: &Conn) -> bool {
    let buffered = conn.buffer();
    buffered.len() >= 4
        && buffered.len() - 4
            >= u32::from_le_bytes([buffered[0], buffered[1], buffered[2], buffered[3]]) as usize
}

/// The runtime flavour the cluster's processes use.
pub(crate) fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// How long a floor process may live at most (it ends earlier, when its clients are done).
pub(crate) fn lifetime(job: &Job) -> Duration {
    Duration::from_secs(60) + job.duration * 3
}
