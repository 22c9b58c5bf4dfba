//! Hostile and broken peers on a running cluster's sockets (issue 7).
//!
//! A real cluster runs the `hammer` scenario: every worker calls the Library in a loop and counts
//! its failures. This test process is the attacker: a process of the same user without the
//! cluster token. It reaches the Library's socket through the runtime dir the master logs, and
//! tries every kind of bad peer in turn (wrong token, no hello, oversized length prefix,
//! truncated frames, random bytes, undecodable frames, silence, a hello dripped too slowly, then
//! thousands of connections at once). Each must be closed, at once or at the handshake deadline.
//! At the end the workers' call counts and 0 failures are asserted and printed, and the cluster
//! still answers.
//!
//! The master's control channels are socket pairs inherited at descriptor 3: no path leads to
//! them, so the Library's socket is the whole surface another process can reach (SECURITY.md).
//!
//! Every cluster here keeps its runtime dir under a private base directory of the test (as
//! `XDG_RUNTIME_DIR` and `TMPDIR`), removed at the end.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::Cluster;

/// The handshake timeout of a cluster with the default settings.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer closed "at once": before the handshake deadline could have closed it (idle: a few
/// milliseconds, so this is a correctness bound, not a speed figure).
const AT_ONCE: Duration = HANDSHAKE_TIMEOUT;
/// A peer closed at the handshake deadline, not left open: 10× the timeout, so a machine
/// with every CPU busy still passes (measured idle: 1.0 s; a busy machine once took 4.4 s to
/// close the last of a flood).
const AT_DEADLINE: Duration = Duration::from_secs(10);
/// How long a dripped hello would last if the deadline did not cut it: well past
/// [`AT_DEADLINE`], so a cut drip and an uncut one cannot be confused.
const DRIP_INTERVAL: Duration = Duration::from_millis(400);

/// A private base for runtime dirs, removed on drop.
struct Base(PathBuf);

impl Base {
    fn new() -> Base {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "dispatch-hostile-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir(&path).expect("base dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Base(path)
    }

    fn env(&self) -> [(&str, &str); 2] {
        let dir = self.0.to_str().expect("utf-8 temp dir");
        [("XDG_RUNTIME_DIR", dir), ("TMPDIR", dir)]
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The runtime dir the master logged at start.
fn runtime_dir(cluster: &Cluster) -> PathBuf {
    cluster.await_log("runtime_dir=", 1, Duration::from_secs(20));
    let log = cluster.stderr();
    let dir = log
        .split("runtime_dir=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the master logs its runtime dir");
    PathBuf::from(dir)
}

/// The latest `(calls, failures)` each worker reported, summed.
fn progress(cluster: &Cluster) -> (u64, u64) {
    let out = cluster.stdout();
    let mut latest = std::collections::BTreeMap::new();
    for line in out.lines().filter(|l| l.starts_with("PROGRESS hammer")) {
        let worker = support::field(line, "worker").unwrap_or("?").to_owned();
        latest.insert(
            worker,
            (
                support::number(line, "calls") as u64,
                support::number(line, "failures") as u64,
            ),
        );
    }
    latest.values().fold((0, 0), |(c, f), (calls, failures)| {
        (c + calls, f + failures)
    })
}

/// Waits until the workers together report more than `calls` calls: the Library still answers.
fn still_answers(cluster: &Cluster, calls: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, failures) = progress(cluster);
        assert_eq!(failures, 0, "a worker saw a failure\n{}", cluster.stderr());
        if now > calls {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the workers stopped making calls at {now}\n--- stderr\n{}",
            cluster.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `payload` with its length prefix.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A hello as an Agent would write it (bincode, varint integers: every value here is below 251,
/// so each takes one byte).
fn hello(protocol: u8, token: &str, worker_id: u8) -> Vec<u8> {
    assert!(token.len() < 251);
    let mut payload = vec![protocol, token.len() as u8];
    payload.extend_from_slice(token.as_bytes());
    payload.push(worker_id);
    frame(&payload)
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

/// Reads until the Library closes the connection: how long that took, and what it sent.
fn closed_within(
    stream: &mut UnixStream,
    started: Instant,
    limit: Duration,
) -> (Duration, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "the library kept the connection open for {limit:?}"
        );
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return (started.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset: closed with our bytes unread.
            Err(_) => return (started.elapsed(), got),
        }
    }
}

/// One bad peer: connects, sends `bytes` (then ends its stream if `end`), and checks that the
/// Library closes the connection within `limit` (and not before `at_least`).
fn attack(
    socket: &Path,
    case: &str,
    bytes: &[u8],
    end: bool,
    at_least: Duration,
    limit: Duration,
) -> Vec<u8> {
    let started = Instant::now();
    let mut stream = UnixStream::connect(socket).expect("connect to the library");
    // The Library may close before it read everything: a failed write is part of the test.
    let _ = stream.write_all(bytes);
    if end {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let (took, got) = closed_within(&mut stream, started, limit);
    println!("  {case}: closed after {took:.2?}");
    assert!(
        took >= at_least,
        "{case}: closed after {took:?}, before {at_least:?}"
    );
    got
}

/// Opens `count` connections at once (or as many as this process may), sends `bytes` on each,
/// and waits until the Library has closed every one: `(opened, how long opening took, how long
/// until all were closed)`.
fn flood(socket: &Path, count: usize, bytes: &[u8]) -> (usize, Duration, Duration) {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        match UnixStream::connect(socket) {
            Ok(mut s) => {
                if !bytes.is_empty() {
                    let _ = s.write_all(bytes);
                }
                streams.push(s);
            }
            // Out of descriptors in this process: the flood is as big as it can be.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::EMFILE | nix::libc::ENFILE)
                ) =>
            {
                break
            }
            Err(e) => panic!("connect failed during the flood: {e}"),
        }
    }
    let opened = started.elapsed();
    for s in &mut streams {
        closed_within(s, started, opened + AT_DEADLINE);
    }
    (streams.len(), opened, started.elapsed())
}

#[test]
fn every_bad_peer_is_refused_and_the_workers_never_see_a_failure() {
    let base = Base::new();
    let cluster = Cluster::start(&["hammer", "--workers", "2", "--secs", "60"], &base.env());
    // A second cluster of the same binary, same user, same base: it must never collide with
    // the first, nor see anything of the attack on it.
    let neighbour = Cluster::start(&["hammer", "--workers", "1", "--secs", "60"], &base.env());
    cluster.await_log("cluster ready", 1, Duration::from_secs(20));
    neighbour.await_log("cluster ready", 1, Duration::from_secs(20));
    let dir = runtime_dir(&cluster);
    let socket = dir.join("library.sock");
    assert_ne!(
        dir,
        runtime_dir(&neighbour),
        "two clusters share a runtime dir"
    );

    // 1. Permissions: the dir is 0700, the socket 0600, both ours.
    let uid = nix::unistd::getuid().as_raw();
    let dir_meta = std::fs::symlink_metadata(&dir).expect("runtime dir");
    let socket_meta = std::fs::symlink_metadata(&socket).expect("library socket");
    assert!(dir_meta.is_dir());
    assert_eq!(dir_meta.mode() & 0o777, 0o700);
    assert_eq!(socket_meta.mode() & 0o777, 0o600);
    assert_eq!((dir_meta.uid(), socket_meta.uid()), (uid, uid));
    println!("runtime dir {} (0700), socket (0600)", dir.display());

    let before = still_answers(&cluster, 0);
    let us = std::process::id();
    println!("attacker pid {us}: one bad peer at a time");
    let no_time = Duration::ZERO;

    // 2. Authentication.
    let refused = attack(
        &socket,
        "a wrong token",
        &hello(2, &"0".repeat(32), 0),
        false,
        no_time,
        AT_ONCE,
    );
    assert!(
        refused.windows(19).any(|w| w == b"wrong cluster token"),
        "no reason given: {refused:?}"
    );
    attack(
        &socket,
        "another protocol version",
        &hello(9, &"0".repeat(32), 0),
        false,
        no_time,
        AT_ONCE,
    );
    attack(
        &socket,
        "an empty token",
        &hello(2, "", 0),
        false,
        no_time,
        AT_ONCE,
    );

    // 3. Framing.
    attack(
        &socket,
        "a length prefix of 4 GiB",
        &[0xff; 4],
        false,
        no_time,
        AT_ONCE,
    );
    attack(
        &socket,
        "a length prefix of 1 MiB",
        &(1_u32 << 20).to_be_bytes(),
        false,
        no_time,
        AT_ONCE,
    );
    attack(
        &socket,
        "random bytes",
        &noise(64 * 1024, 1),
        false,
        no_time,
        AT_ONCE,
    );
    attack(
        &socket,
        "a well-framed undecodable payload",
        &frame(&noise(40, 2)),
        false,
        no_time,
        AT_ONCE,
    );
    attack(
        &socket,
        "an empty frame",
        &frame(&[]),
        false,
        no_time,
        AT_ONCE,
    );
    attack(
        &socket,
        "a truncated frame, then end of stream",
        &frame(&[7; 100])[..20],
        true,
        no_time,
        AT_ONCE,
    );
    attack(
        &socket,
        "a truncated frame, kept open",
        &frame(&[7; 100])[..20],
        false,
        HANDSHAKE_TIMEOUT / 2,
        AT_DEADLINE,
    );
    attack(
        &socket,
        "a connection that sends nothing",
        &[],
        false,
        HANDSHAKE_TIMEOUT / 2,
        AT_DEADLINE,
    );

    // A hello dripped one byte at a time: one deadline covers the whole handshake.
    let started = Instant::now();
    let mut drip = UnixStream::connect(&socket).expect("connect");
    for byte in hello(2, &"0".repeat(32), 0) {
        if drip.write_all(&[byte]).is_err() {
            break;
        }
        std::thread::sleep(DRIP_INTERVAL);
    }
    let (took, _) = closed_within(&mut drip, started, AT_DEADLINE);
    println!("  a hello dripped a byte per {DRIP_INTERVAL:?}: closed after {took:.2?}");
    // Uncut, the 39 bytes would take 15.6 s.
    assert!(took < AT_DEADLINE, "the drip was not cut at the deadline");

    let after_cases = still_answers(&cluster, before);

    // 3. Load: thousands of idle connections at once, then a thousand sending garbage.
    let (opened, open_took, shed) = flood(&socket, 3000, &[]);
    println!(
        "flood: {opened} idle connections opened in {open_took:.2?}, all closed after {shed:.2?}"
    );
    assert!(opened >= 1000, "only {opened} connections could be opened");
    let after_flood = still_answers(&cluster, after_cases);
    let (opened, open_took, shed) = flood(&socket, 1000, &frame(&noise(64, 3)));
    println!("flood: {opened} garbage connections opened in {open_took:.2?}, all closed after {shed:.2?}");
    let after_attack = still_answers(&cluster, after_flood);
    println!(
        "workers' calls: {before} before the attack, {after_cases} after the single cases, \
         {after_flood} after the idle flood, {after_attack} after the garbage flood"
    );

    // Logged with the attacker's pid and uid, and rate-limited: a few lines for 4000 peers.
    cluster.await_log("more connections", 1, Duration::from_secs(5));
    let log = cluster.stderr();
    let ours = format!("peer_pid={us} peer_uid={uid}");
    let lines = log.lines().filter(|l| l.contains(&ours)).count();
    let refusals = log.lines().filter(|l| l.contains("refused")).count();
    println!("library log: {lines} lines name the attacker, {refusals} lines about refusals");
    assert!(
        lines >= 1,
        "refusals are not logged with the peer's pid and uid\n{log}"
    );
    assert!(
        refusals < 200,
        "{refusals} log lines: not rate-limited\n{log}"
    );
    // The neighbour saw none of it.
    assert!(
        !neighbour.stderr().contains("refused"),
        "the other cluster saw the attack\n{}",
        neighbour.stderr()
    );

    // Stop both; every worker reports its calls and 0 failures.
    cluster.signal(nix::sys::signal::Signal::SIGTERM);
    neighbour.signal(nix::sys::signal::Signal::SIGTERM);
    for (name, run) in [
        ("attacked", cluster.wait(Duration::from_secs(20))),
        ("neighbour", neighbour.wait(Duration::from_secs(20))),
    ] {
        run.assert_success();
        let results = run.lines("RESULT hammer");
        assert!(!results.is_empty(), "{name}: no result\n{}", run.stdout);
        for line in results {
            println!("{name}: {line}");
            assert_eq!(
                support::field(line, "failures"),
                Some("0"),
                "{name}: {line}"
            );
            assert!(support::number(line, "calls") > 0.0, "{name}: {line}");
        }
    }
    // Both runtime dirs are gone with their masters.
    assert!(!dir.exists(), "the runtime dir outlived its master");
}

#[test]
fn a_runtime_dir_left_by_a_killed_master_is_removed_at_the_next_start() {
    let base = Base::new();
    let cluster = Cluster::start(&["hammer", "--workers", "1", "--secs", "60"], &base.env());
    cluster.await_log("cluster ready", 1, Duration::from_secs(20));
    let stale = runtime_dir(&cluster);
    assert!(
        cluster.kill_master(Duration::from_secs(5)).is_some(),
        "children outlived the killed master"
    );
    assert!(stale.exists(), "a SIGKILLed master cannot clean up");
    // Something of ours that only looks similar is left alone.
    let lookalike = base.0.join("dispatch-2024-notes");
    std::fs::create_dir(&lookalike).expect("lookalike");

    let run = support::run(
        &["demo", "--workers", "1"],
        &base.env(),
        Duration::from_secs(30),
    );
    run.assert_success();
    assert!(!stale.exists(), "the stale runtime dir was not removed");
    assert!(
        lookalike.exists(),
        "a directory that is not a runtime dir was removed"
    );
    assert!(
        run.stderr
            .contains("removed the runtime dir of dead master"),
        "{}",
        run.stderr
    );
}
