//! The Library's socket under attack, in process: a real listener on a temp socket, real Agents,
//! and raw peers that send what an attacker or a broken worker would. Each test keeps an Agent
//! calling in a loop and ends by checking that none of its calls failed.
//!
//! One concept despite its length: every test here drives the same harness (a `Lib` on a temp
//! socket, raw peers, a calling Agent) against one boundary, the Library's admission of peers.

use super::accept::*;
use super::connection::*;
use super::gate::*;
use super::hosted::Services;
use super::peer_log::*;
use crate::service::{CallFuture, ErasedService, MethodInfo, ServiceRegistration};
use crate::settings::Settings;
use crate::wire::{self, CallRequest, Hello, Welcome};
// Test code may cross layers: the Library's socket is tested with the real Agent.
use crate::worker::{Agent, AgentConfig};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;

/// Locks `m`, even if a panic poisoned it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A hand-written service, as the macro would generate it.
struct Echo;

impl ErasedService for Echo {
    fn call(self: Arc<Self>, method: &str, args: &[u8]) -> CallFuture {
        let args = args.to_vec();
        match method {
            "echo" => Box::pin(async move { Ok(args) }),
            _ => crate::__private::unknown_method("echo", method),
        }
    }
}

inventory::submit! {
    ServiceRegistration {
        name: "echo",
        type_name: "Echo",
        methods: &[MethodInfo { name: "echo", signature: "fn echo(&self, s: String) -> String" }],
        init: || Box::pin(async { Ok(Arc::new(Echo) as Arc<dyn ErasedService>) }),
    }
}

/// Counts its calls per argument: each test hits it with its own keys, so tests running at once
/// do not see each other's calls.
struct Tally;

static TALLY: Mutex<BTreeMap<Vec<u8>, u64>> = Mutex::new(BTreeMap::new());

fn tally(key: &[u8]) -> u64 {
    lock(&TALLY).get(key).copied().unwrap_or(0)
}

impl ErasedService for Tally {
    fn call(self: Arc<Self>, method: &str, args: &[u8]) -> CallFuture {
        let args = args.to_vec();
        match method {
            "hit" => Box::pin(async move {
                *lock(&TALLY).entry(args).or_insert(0) += 1;
                Ok(Vec::new())
            }),
            _ => crate::__private::unknown_method("tally", method),
        }
    }
}

inventory::submit! {
    ServiceRegistration {
        name: "tally",
        type_name: "Tally",
        methods: &[MethodInfo { name: "hit", signature: "fn hit(&self, key: Vec<u8>)" }],
        init: || Box::pin(async { Ok(Arc::new(Tally) as Arc<dyn ErasedService>) }),
    }
}

/// A Library listening on a temp socket, in this process.
struct Lib {
    _dir: tempdir::Dir,
    socket: PathBuf,
    gate: Arc<Gate>,
    config: Arc<ServeConfig>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Lib {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn serve_config() -> ServeConfig {
    ServeConfig {
        token: TOKEN.into(),
        settings: Settings {
            max_frame: 1 << 17,
            handshake_timeout: Duration::from_secs(1),
            max_in_flight: 8,
            // Every peer of these tests is this one process.
            budgets: crate::settings::DataBudgets {
                connections_per_process: usize::MAX,
                ..Default::default()
            },
            ..Settings::default()
        },
        max_connections: 64,
        max_handshakes: 16,
    }
}

impl Lib {
    async fn start(config: ServeConfig) -> Lib {
        Self::start_with(config, |listener| listener).await
    }

    async fn start_with<L: Accept + Send + 'static>(
        config: ServeConfig,
        wrap: impl FnOnce(UnixListener) -> L,
    ) -> Lib {
        let dir = tempdir::Dir::new();
        let socket = dir.0.join("lib.sock");
        let listener = wrap(UnixListener::bind(&socket).expect("bind"));
        let services = Arc::new(Services::start(1 << 16).await.expect("services"));
        let config = Arc::new(config);
        let gate = Arc::new(Gate::new(&config));
        let task = tokio::spawn(serve_listener(
            listener,
            services,
            Arc::clone(&config),
            Arc::clone(&gate),
        ));
        Lib {
            _dir: dir,
            socket,
            gate,
            config,
            task,
        }
    }

    fn agent_config(&self, token: &str) -> AgentConfig {
        AgentConfig {
            socket: self.socket.clone(),
            token: token.into(),
            worker_id: 0,
            settings: Settings {
                call_timeout: Duration::from_secs(2),
                handshake_timeout: Duration::from_secs(2),
                ..self.config.settings.clone()
            },
        }
    }

    async fn agent(&self) -> Agent {
        Agent::connect(&self.agent_config(TOKEN))
            .await
            .expect("a worker connects")
    }

    async fn raw(&self) -> UnixStream {
        UnixStream::connect(&self.socket).await.expect("connect")
    }
}

mod tempdir {
    pub(super) struct Dir(pub(super) std::path::PathBuf);
    impl Dir {
        pub(super) fn new() -> Self {
            let hex = crate::process::runtime_dir::random_hex(6).expect("random");
            let path = std::env::temp_dir().join(format!("dispatch-unit-{hex}"));
            std::fs::create_dir(&path).expect("mkdir");
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A worker calling the Library in a loop until stopped; every answer is checked.
struct Caller {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Caller {
    fn start(agent: Agent) -> Caller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut calls, mut failures) = (0_u64, 0_u64);
            while !flag.load(Ordering::Relaxed) {
                let payload = calls.to_le_bytes().to_vec();
                match agent.call_raw("echo", "echo", payload.clone(), None).await {
                    Ok(reply) if reply == payload => calls += 1,
                    other => {
                        failures += 1;
                        eprintln!("call {calls} failed: {other:?}");
                    }
                }
            }
            (calls, failures)
        });
        Caller { stop, task }
    }

    /// Stops the loop: `(calls, failures)`.
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the caller task")
    }
}

/// `payload` with its length prefix.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(payload);
    out
}

fn hello_frame(protocol: u32, token: &str, worker_id: u32) -> Vec<u8> {
    let hello = Hello {
        protocol,
        token: token.into(),
        worker_id,
    };
    frame(&wire::codec::encode(&hello).expect("encode"))
}

/// A real tarpc call frame: `tally.hit(key)` with request id `id`.
fn call_frame(id: u64, key: &[u8]) -> Vec<u8> {
    let message = tarpc::ClientMessage::Request(tarpc::Request {
        context: tarpc::context::current(),
        id,
        message: CallRequest {
            service: "tally".into(),
            method: "hit".into(),
            args: serde_bytes::ByteBuf::from(key.to_vec()),
            trace: None,
        },
    });
    frame(&wire::codec::encode(&message).expect("encode"))
}

/// Deterministic noise.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[0]
        })
        .collect()
}

/// Reads (and drops) whatever comes until the Library closes the connection; how long that took.
async fn closed_within(stream: &mut UnixStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0_u8; 4096];
    loop {
        match tokio::time::timeout_at(started + limit, stream.read(&mut buf)).await {
            Err(_) => panic!("the library kept the connection open for {limit:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Log lines written while the guard lives, on this thread (where a current-thread runtime runs
/// every task of the test).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (captured, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }

    fn lines_with(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_right_token_gets_the_manifest_and_calls_go_through() {
    let lib = Lib::start(serve_config()).await;
    let agent = lib.agent().await;
    assert!(agent.manifest().services.iter().any(|s| s.name == "echo"));
    let reply = agent
        .call_raw("echo", "echo", b"hi".to_vec(), None)
        .await
        .expect("echo");
    assert_eq!(&reply[..], b"hi");
    let err = agent
        .call_raw("echo", "nope", vec![], None)
        .await
        .expect_err("unknown");
    assert!(err.is_unknown(), "{err}");
    let err = agent
        .call_raw("missing", "x", vec![], None)
        .await
        .expect_err("unknown service");
    assert!(matches!(err, crate::Error::UnknownService { .. }), "{err}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_a_clear_error() {
    let lib = Lib::start(serve_config()).await;
    let err = Agent::connect(&lib.agent_config("wrong"))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("wrong cluster token"), "{err}");
}

#[test]
fn secrets_compare_exactly() {
    assert!(same_secret(b"abc", b"abc"));
    assert!(!same_secret(b"abc", b"abd"));
    assert!(!same_secret(b"abc", b"ab"));
}

#[test]
fn only_the_librarys_own_user_may_connect() {
    assert!(check_user(1000, 1000).is_ok());
    assert!(matches!(check_user(0, 1000), Err(Refusal::OtherUser)));
    assert!(matches!(check_user(1001, 1000), Err(Refusal::OtherUser)));
}

#[test]
fn the_connection_caps_fit_in_half_the_descriptor_limit() {
    assert_eq!(socket_caps(None), (MAX_CONNECTIONS, MAX_HANDSHAKES));
    assert_eq!(
        socket_caps(Some(1 << 20)),
        (MAX_CONNECTIONS, MAX_HANDSHAKES)
    );
    // The usual soft limit: 512 descriptors for sockets.
    assert_eq!(socket_caps(Some(1024)), (384, 128));
    let (connections, handshakes) = socket_caps(Some(64));
    assert!(connections + handshakes <= 32, "{connections} {handshakes}");
    assert_eq!(socket_caps(Some(0)), (1, 1));
    assert!(!matches!(open_files_limit(), Some(0)));
}

/// Issue 7, case 3, one kind of bad peer at a time: each is closed (at once, or at the
/// handshake deadline when it could still be a slow worker), and the worker calling all along
/// never sees a failure.
#[tokio::test]
async fn every_malformed_first_frame_is_refused_while_a_worker_keeps_calling() {
    let (log, _guard) = Captured::start();
    let mut config = serve_config();
    config.settings.handshake_timeout = Duration::from_millis(300);
    let lib = Lib::start(config).await;
    let caller = Caller::start(lib.agent().await);
    let quick = Duration::from_millis(250);
    let at_deadline = Duration::from_secs(2);

    let mut cases: Vec<(&str, Vec<u8>, bool, Duration)> = vec![
        // (case, bytes, then close our write side, closed within)
        ("length prefix of 4 GiB", vec![0xff; 4], false, quick),
        (
            "length prefix just over the hello limit",
            ((wire::MAX_HELLO_FRAME + 1) as u32).to_be_bytes().to_vec(),
            false,
            quick,
        ),
        ("random bytes", noise(64 * 1024, 7), false, quick),
        ("well framed, undecodable", frame(&[0xff; 20]), false, quick),
        ("empty frame", frame(&[]), false, quick),
        (
            "hello of another protocol",
            hello_frame(99, TOKEN, 1),
            false,
            quick,
        ),
        (
            "a call without a hello",
            call_frame(1, b"no hello"),
            false,
            quick,
        ),
        (
            "truncated frame, then end of stream",
            frame(&[1; 100])[..30].to_vec(),
            true,
            quick,
        ),
        (
            "truncated hello, then end of stream",
            hello_frame(wire::PROTOCOL_VERSION, TOKEN, 1)[..20].to_vec(),
            true,
            quick,
        ),
        (
            "truncated frame, kept open",
            frame(&[1; 100])[..30].to_vec(),
            false,
            at_deadline,
        ),
        ("nothing at all", Vec::new(), false, at_deadline),
    ];
    // A hello followed by trailing bytes inside its frame is not a hello either.
    let mut padded = wire::codec::encode(&Hello {
        protocol: wire::PROTOCOL_VERSION,
        token: TOKEN.into(),
        worker_id: 1,
    })
    .expect("encode");
    padded.push(0);
    cases.push(("hello with trailing bytes", frame(&padded), false, quick));

    let count = cases.len();
    for (case, bytes, close, limit) in cases {
        let mut stream = lib.raw().await;
        // The Library may close before it read everything: a failed write is part of the test.
        let _ = stream.write_all(&bytes).await;
        if close {
            let _ = stream.shutdown().await;
        }
        let took = closed_within(&mut stream, limit).await;
        eprintln!("{case}: closed after {took:?}");
        if limit == at_deadline {
            assert!(
                took >= Duration::from_millis(250),
                "{case}: closed before the handshake deadline ({took:?})"
            );
        }
    }

    // A peer that drips a valid hello too slowly is cut at one deadline for the whole handshake.
    let (mut reader, mut writer) = lib.raw().await.into_split();
    let hello = hello_frame(wire::PROTOCOL_VERSION, TOKEN, 1);
    let drip = tokio::spawn(async move {
        for byte in hello {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let started = Instant::now();
    let mut buf = [0_u8; 64];
    let n = tokio::time::timeout(at_deadline, reader.read(&mut buf))
        .await
        .expect("dripping peer closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "dripping peer got {n:?}");
    assert!(started.elapsed() < Duration::from_millis(900));
    drip.abort();

    let (calls, failures) = caller.finish().await;
    eprintln!("worker during the attack: calls={calls} failures={failures}");
    assert!(calls > 0);
    assert_eq!(failures, 0);
    assert_eq!(
        lib.gate.refused.load(Ordering::Relaxed),
        count as u64 + 1,
        "{:?}",
        lib.gate
    );
    assert_eq!(lib.gate.authenticated.load(Ordering::Relaxed), 1);
    // Every refusal names the peer: this very process.
    let pid = format!("peer_pid={}", std::process::id());
    let logged = log.lines_with(&pid);
    assert!(logged >= 1, "{}", log.text());
    assert!(logged <= LOG_LINES_PER_WINDOW * 4, "{}", log.text());
    // After all that, a new worker still connects.
    let late = lib.agent().await;
    late.call_raw("echo", "echo", vec![1], None)
        .await
        .expect("a call after the attack");
}

/// Issue 7, case 2: bytes from a peer without the token never reach a service; the same frames
/// after a right hello do (so they were real calls).
#[tokio::test]
async fn nothing_an_unauthenticated_peer_sends_reaches_a_service() {
    let lib = Lib::start(serve_config()).await;
    let keys: [&[u8]; 4] = [b"unauth-a", b"unauth-b", b"unauth-c", b"unauth-ok"];

    // A call as the first frame.
    let mut s = lib.raw().await;
    let _ = s.write_all(&call_frame(1, keys[0])).await;
    closed_within(&mut s, Duration::from_secs(2)).await;

    // A wrong token, with calls pipelined behind it.
    let mut s = lib.raw().await;
    let mut bytes = hello_frame(wire::PROTOCOL_VERSION, "not the token", 1);
    for id in 0..10 {
        bytes.extend(call_frame(id, keys[1]));
    }
    let _ = s.write_all(&bytes).await;
    closed_within(&mut s, Duration::from_secs(2)).await;

    // Another protocol version with the right token, calls pipelined.
    let mut s = lib.raw().await;
    let mut bytes = hello_frame(wire::PROTOCOL_VERSION + 1, TOKEN, 1);
    bytes.extend(call_frame(1, keys[2]));
    let _ = s.write_all(&bytes).await;
    closed_within(&mut s, Duration::from_secs(2)).await;

    // The control: the right hello and the same kind of frame.
    let s = lib.raw().await;
    let mut framed = wire::framed(s, 1 << 17);
    let mut bytes = hello_frame(wire::PROTOCOL_VERSION, TOKEN, 1);
    bytes.extend(call_frame(1, keys[3]));
    framed.get_mut().write_all(&bytes).await.expect("write");
    let welcome = framed.next().await.expect("welcome").expect("welcome");
    assert!(matches!(
        wire::codec::decode::<Welcome>(&welcome),
        Ok(Welcome::Accepted(_))
    ));
    let reply = framed.next().await.expect("reply").expect("reply");
    let reply: tarpc::Response<wire::CallResponse> =
        wire::codec::decode(&reply).expect("a response");
    assert!(matches!(reply.message, Ok(Ok(_))), "{reply:?}");

    assert_eq!(tally(keys[0]), 0);
    assert_eq!(tally(keys[1]), 0);
    assert_eq!(tally(keys[2]), 0);
    assert_eq!(tally(keys[3]), 1);
    assert_eq!(lib.gate.refused.load(Ordering::Relaxed), 3);
}

/// Issue 7, case 3, load: thousands of idle connections opened at once by another thread (as
/// another process would) are shed: never more than `max_handshakes` wait at once, each is
/// closed within about the handshake timeout, a new worker connects in the middle of the flood,
/// and the worker calling all along sees no failure. The log stays a few lines long.
#[tokio::test]
async fn a_flood_of_idle_connections_is_shed_and_never_locks_out_a_worker() {
    const FLOOD: usize = 3000;
    let (log, _guard) = Captured::start();
    let lib = Lib::start(serve_config()).await;
    let max_handshakes = lib.config.max_handshakes;
    let caller = Caller::start(lib.agent().await);
    let socket = lib.socket.clone();
    let started = Instant::now();
    let flood = tokio::task::spawn_blocking(move || {
        let mut streams = Vec::with_capacity(FLOOD);
        for _ in 0..FLOOD {
            streams.push(std::os::unix::net::UnixStream::connect(&socket).expect("connect"));
        }
        let opened = started.elapsed();
        for s in &mut streams {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = [0_u8; 16];
            assert!(
                matches!(s.read(&mut buf), Ok(0) | Err(_)),
                "a flood connection got an answer"
            );
        }
        (opened, started.elapsed())
    });
    // A worker that connects while the flood is on gets in.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let late = lib.agent().await;
    late.call_raw("echo", "echo", vec![2], None)
        .await
        .expect("a call from a worker that connected during the flood");
    let (opened, shed) = flood.await.expect("the flood thread");
    let (calls, failures) = caller.finish().await;
    let gate = &lib.gate;
    eprintln!(
        "flood of {FLOOD}: opened in {opened:?}, all closed after {shed:?}; \
         evicted={} refused={} pending high water={} (cap {max_handshakes}); \
         worker calls={calls} failures={failures}",
        gate.evicted.load(Ordering::Relaxed),
        gate.refused.load(Ordering::Relaxed),
        gate.pending_high_water.load(Ordering::Relaxed),
    );
    assert_eq!(failures, 0);
    assert!(calls > 0);
    assert!(gate.pending_high_water.load(Ordering::Relaxed) <= max_handshakes);
    assert!(gate.evicted.load(Ordering::Relaxed) >= (FLOOD - max_handshakes) as u64);
    assert_eq!(gate.refused.load(Ordering::Relaxed), FLOOD as u64);
    assert!(
        shed < opened + Duration::from_secs(3),
        "shed after {shed:?}"
    );
    assert_eq!(gate.pending(), 0, "every waiting peer left");
    // Rate-limited: a few lines for thousands of refusals, with a count.
    lib.gate.log().flush();
    let lines = log.lines_with("refused");
    assert!(lines <= 3 * (LOG_LINES_PER_WINDOW + 1), "{lines} lines");
    assert!(log.text().contains("more connections"), "{}", log.text());
}

/// A broken worker (it has the token) sends garbage after its handshake: only its own
/// connection is closed, and that is logged once.
#[tokio::test]
async fn garbage_after_the_handshake_closes_only_that_connection() {
    let (log, _guard) = Captured::start();
    let lib = Lib::start(serve_config()).await;
    let caller = Caller::start(lib.agent().await);
    let garbage: [(&str, Vec<u8>); 4] = [
        ("undecodable frame", frame(&noise(200, 3))),
        (
            "length prefix over the frame limit",
            vec![0x7f, 0xff, 0xff, 0xff],
        ),
        ("random bytes", noise(10_000, 11)),
        ("truncated call", call_frame(1, b"x")[..12].to_vec()),
    ];
    for (case, bytes) in garbage {
        let mut stream = authenticated(&lib, 7).await.into_inner().into_inner();
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
        let took = closed_within(&mut stream, Duration::from_secs(2)).await;
        eprintln!("{case}: closed after {took:?}");
    }
    let (calls, failures) = caller.finish().await;
    assert_eq!(failures, 0);
    assert!(calls > 0);
    // Three of them sent something that is not a call; the truncated call is a clean end of
    // stream mid-frame, which the codec reports too.
    let dropped = lib.gate.dropped.load(Ordering::Relaxed);
    assert!((3..=4).contains(&dropped), "{:?}", lib.gate);
    assert!(
        log.text().contains("closed the connection of worker 7"),
        "{}",
        log.text()
    );
}

/// A call whose deadline is past tarpc's timer range (about two years) used to panic the
/// connection's task (and with it every call in flight on it). It is lowered instead.
#[tokio::test]
async fn a_deadline_beyond_the_timer_range_is_lowered_not_a_panic() {
    let lib = Lib::start(serve_config()).await;
    let mut framed = authenticated(&lib, 3).await;
    let key = b"far-deadline";
    for (id, secs) in [(1_u64, u64::MAX), (2, 10 * 365 * 86_400), (3, 5)] {
        // tarpc's layout: variant 0, then the context (deadline, trace context), id, message.
        let request = (
            0_u32,
            (secs, 0_u32),
            ([0_u8; 16], 0_u64, 1_u32),
            id,
            CallRequest {
                service: "tally".into(),
                method: "hit".into(),
                args: serde_bytes::ByteBuf::from(key.to_vec()),
                trace: None,
            },
        );
        let bytes = wire::codec::encode(&request).expect("encode");
        framed.send(Bytes::from(bytes)).await.expect("send");
        let reply = tokio::time::timeout(Duration::from_secs(2), framed.next())
            .await
            .expect("an answer in time")
            .expect("the connection stays open")
            .expect("a frame");
        let reply: tarpc::Response<wire::CallResponse> =
            wire::codec::decode(&reply).expect("a response");
        assert_eq!(reply.request_id, id);
        assert!(matches!(reply.message, Ok(Ok(_))), "{reply:?}");
    }
    assert_eq!(tally(key), 3);
    assert_eq!(lib.gate.dropped.load(Ordering::Relaxed), 0);
}

/// A listener that fails with EMFILE while told to.
struct Exhausted {
    inner: UnixListener,
    failing: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
}

impl Accept for Exhausted {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<UnixStream>> {
        if self.failing.load(Ordering::Relaxed) {
            self.polls.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EMFILE)));
        }
        Accept::poll_accept(&mut self.inner, cx)
    }
}

/// Out of descriptors: accept pauses instead of spinning, logs a line or two, and the worker
/// already connected goes on without a failure. When descriptors are back, workers connect.
#[tokio::test]
async fn accept_errors_pause_the_loop_and_spare_served_connections() {
    let (log, _guard) = Captured::start();
    let failing = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let (f, p) = (Arc::clone(&failing), Arc::clone(&polls));
    let lib = Lib::start_with(serve_config(), move |inner| Exhausted {
        inner,
        failing: f,
        polls: p,
    })
    .await;
    let caller = Caller::start(lib.agent().await);
    failing.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(600)).await;
    failing.store(false, Ordering::Relaxed);
    let polls = polls.load(Ordering::Relaxed);
    // 600 ms at one try per 100 ms: about 6, not thousands.
    assert!((2..=12).contains(&polls), "{polls} accept attempts");
    let late = lib.agent().await;
    late.call_raw("echo", "echo", vec![3], None)
        .await
        .expect("a worker connects once descriptors are back");
    let (calls, failures) = caller.finish().await;
    assert_eq!(failures, 0);
    assert!(calls > 0);
    lib.gate.log().flush();
    // 600 ms overlap at most two log windows: a line and a summary for each.
    assert!(log.lines_with("accept failed") <= 4, "{}", log.text());
}

/// Past `max_connections`, a worker is refused with the reason; once one leaves, it gets in.
#[tokio::test]
async fn the_connection_cap_refuses_with_a_reason() {
    let mut config = serve_config();
    config.max_connections = 2;
    let lib = Lib::start(config).await;
    let first = authenticated(&lib, 1).await;
    let _second = authenticated(&lib, 2).await;
    let err = Agent::connect(&lib.agent_config(TOKEN))
        .await
        .expect_err("over the cap");
    assert!(
        err.to_string().contains("maximum of 2 connections"),
        "{err}"
    );
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(2);
    while lib.gate.served() > 1 {
        assert!(
            Instant::now() < deadline,
            "the first connection was not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lib.agent().await;
}

/// A worker turned away by the cap is told the Library is busy, retries, and gets in as soon
/// as a connection leaves (instead of exiting).
#[tokio::test]
async fn a_worker_refused_by_the_cap_retries_until_a_slot_frees() {
    let mut config = serve_config();
    config.max_connections = 1;
    let lib = Lib::start(config).await;
    let first = authenticated(&lib, 1).await;
    let agent_config = lib.agent_config(TOKEN);
    let waiting =
        tokio::spawn(
            async move { Agent::connect_within(&agent_config, Duration::from_secs(5)).await },
        );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !waiting.is_finished(),
        "the worker gave up instead of retrying"
    );
    drop(first);
    let agent = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the worker got in once a slot freed")
        .expect("task")
        .expect("connected");
    assert!(agent.is_connected());
}

/// A raw connection that completed its handshake as worker `worker_id`.
async fn authenticated(lib: &Lib, worker_id: u32) -> wire::Framing {
    let mut framed = wire::framed(lib.raw().await, 1 << 17);
    framed
        .send(Bytes::from(
            hello_frame(wire::PROTOCOL_VERSION, TOKEN, worker_id)[4..].to_vec(),
        ))
        .await
        .expect("hello");
    let welcome = framed.next().await.expect("welcome").expect("welcome");
    assert!(matches!(
        wire::codec::decode::<Welcome>(&welcome),
        Ok(Welcome::Accepted(_))
    ));
    framed
}

/// The log: one line per peer per window, the rest summed up with counts.
#[test]
fn refusals_are_logged_once_per_peer_and_summed_up() {
    let (log, _guard) = Captured::start();
    let mut peers = PeerLog::new();
    let noisy = Peer {
        pid: Some(4242),
        uid: 1000,
    };
    for _ in 0..1000 {
        peers.event(
            noisy,
            format_args!("refused a connection: wrong cluster token"),
        );
    }
    for pid in 0..20 {
        let peer = Peer {
            pid: Some(pid),
            uid: 1000,
        };
        peers.event(
            peer,
            format_args!("refused a connection: closed before its hello"),
        );
    }
    peers.flush();
    let text = log.text();
    assert_eq!(log.lines_with("peer_pid=4242"), 1, "{text}");
    assert_eq!(
        log.lines_with("refused a connection"),
        LOG_LINES_PER_WINDOW,
        "{text}"
    );
    let summary = LOG_LINES_PER_WINDOW as u64;
    let suppressed = 1000 + 20 - summary;
    assert!(
        text.contains(&format!("refused or dropped {suppressed} more")),
        "{text}"
    );
    assert!(text.contains("999 from pid 4242 uid 1000"), "{text}");
    // A new window logs the noisy peer again, once.
    peers.event(
        noisy,
        format_args!("refused a connection: wrong cluster token"),
    );
    assert_eq!(log.lines_with("peer_pid=4242"), 2, "{text}");
}

/// Log lines name the peer by pid and uid, or say the pid is unknown.
#[test]
fn refusals_name_the_peer() {
    let peer = Peer {
        pid: Some(12),
        uid: 34,
    };
    assert_eq!(peer.to_string(), "pid 12 uid 34");
    assert_eq!(
        Peer::UNKNOWN.to_string(),
        format!("pid unknown uid {}", u32::MAX)
    );
    let refusal = Refusal::Evicted { waiting: 128 };
    assert_eq!(
        refusal.to_string(),
        "dropped to make room: 128 connections were waiting for their hello"
    );
}

/// Settings for the socket-level property tests: few cases, each a round trip through a real
/// socket; no regression files.
fn socket_props(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 10_000,
        ..proptest::test_runner::Config::default()
    }
}

/// Waits until the Library's connection tasks have all ended normally (none panicked).
async fn tasks_finished(gate: &Gate, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while gate.finished.load(Ordering::Relaxed) < expected {
        assert!(
            Instant::now() < deadline,
            "a connection task did not end normally: {gate:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Issue 7, case 4, at the socket: arbitrary bytes (and mutated hellos) sent as a first message,
/// then end of stream. Each connection is refused and its task ends normally (no panic, no
/// hang), none is authenticated, and the worker calling all along sees no failure.
#[test]
fn the_handshake_refuses_arbitrary_first_bytes() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lib = rt.block_on(Lib::start(serve_config()));
    let caller = rt.block_on(async { Caller::start(lib.agent().await) });
    let hello = hello_frame(wire::PROTOCOL_VERSION, TOKEN, 1);
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        // A real hello with a few bytes changed (some changes leave a valid hello: another
        // worker id, or a byte set back to what it was).
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4).prop_map(
            move |changes| {
                let mut h = hello.clone();
                for (at, v) in changes {
                    let i = at.index(h.len());
                    h[i] = v;
                }
                h
            }
        ),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(socket_props(64));
    runner
        .run(&bytes, |bytes| {
            let authenticated = lib.gate.authenticated.load(Ordering::Relaxed);
            rt.block_on(async {
                let finished = lib.gate.finished.load(Ordering::Relaxed);
                let mut stream = lib.raw().await;
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                closed_within(&mut stream, Duration::from_secs(2)).await;
                tasks_finished(&lib.gate, finished + 1).await;
            });
            // Authenticated exactly when the first frame is a hello with the token.
            let expected = authenticated + u64::from(starts_with_a_valid_hello(&bytes));
            prop_assert_eq!(lib.gate.authenticated.load(Ordering::Relaxed), expected);
            Ok(())
        })
        .expect("arbitrary first bytes");
    let (calls, failures) = rt.block_on(caller.finish());
    assert_eq!(failures, 0);
    assert!(calls > 0);
}

/// Whether `bytes` begin with a whole frame holding a hello that the Library accepts.
fn starts_with_a_valid_hello(bytes: &[u8]) -> bool {
    let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
        return false;
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    len <= wire::MAX_HELLO_FRAME
        && rest.get(..len).is_some_and(|payload| {
            wire::codec::decode::<Hello>(payload).is_ok_and(|h| check_hello(&h, TOKEN).is_ok())
        })
}

/// Issue 7, cases 3 and 4, after the handshake: a broken worker (it has the token) sends any mix
/// of real calls, mutated calls, random frames and unframed bytes. Its connection's task always
/// ends normally, and the other worker sees no failure.
#[test]
fn a_served_connection_survives_arbitrary_frames() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lib = rt.block_on(Lib::start(serve_config()));
    let caller = rt.block_on(async { Caller::start(lib.agent().await) });
    let part = prop_oneof![
        any::<u64>().prop_map(|id| call_frame(id, b"props")),
        (
            any::<u64>(),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        )
            .prop_map(|(id, changes)| {
                let mut call = call_frame(id, b"props")[4..].to_vec();
                for (at, v) in changes {
                    let i = at.index(call.len());
                    call[i] = v;
                }
                frame(&call)
            }),
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(|p| frame(&p)),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    let parts = proptest::collection::vec(part, 1..6);
    let mut runner = proptest::test_runner::TestRunner::new(socket_props(64));
    runner
        .run(&parts, |parts| {
            rt.block_on(async {
                let finished = lib.gate.finished.load(Ordering::Relaxed);
                let mut stream = authenticated(&lib, 9).await.into_inner().into_inner();
                for part in parts {
                    if stream.write_all(&part).await.is_err() {
                        break;
                    }
                }
                let _ = stream.shutdown().await;
                closed_within(&mut stream, Duration::from_secs(3)).await;
                tasks_finished(&lib.gate, finished + 1).await;
            });
            Ok(())
        })
        .expect("arbitrary frames after the handshake");
    let (calls, failures) = rt.block_on(caller.finish());
    assert_eq!(failures, 0);
    assert!(calls > 0);
}
