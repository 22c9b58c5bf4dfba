//! Config sync over a real Redis (DESIGN §5): `examples/config_sync.rs` run as operators run it,
//! against a `redis-server` each test starts on a free loopback port and stops. Initial load,
//! updates to every worker, two clusters on one Redis, Redis killed and restarted, a killed
//! Library, invalid values, Redis down at start, a file source, and the propagation time from
//! `PUBLISH` to the last worker.
//!
//! `redis-server` must be installed (`.ci/run` installs Debian's package when it is missing).

#![cfg(feature = "redis")]

mod support;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const KEY: &str = "app:config";
const CHANNEL: &str = "app:config:changed";

/// One test at a time: each runs clusters and a Redis, and the benchmark wants a quiet machine.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("dispatch-config-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- Redis ---------------------------------------------------------------------------------

#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;

/// `SET key value` then `PUBLISH channel`; returns how many subscribers heard the message.
fn set_and_publish(redis: &mut redis::Connection, value: &str) -> i64 {
    set(redis, value);
    publish(redis)
}

/// `SET` the config key, without telling anyone.
fn set(redis: &mut redis::Connection, value: &str) {
    redis::cmd("SET")
        .arg(KEY)
        .arg(value)
        .query::<()>(redis)
        .expect("SET");
}

fn publish(redis: &mut redis::Connection) -> i64 {
    redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg("changed")
        .query(redis)
        .expect("PUBLISH")
}

// ---- the example ---------------------------------------------------------------------------

/// The example binary, built by `cargo test` next to this test's own binary.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir.join("examples").join("config_sync");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; with a filtered run, `cargo build --examples` first",
        path.display()
    );
    path
}

/// `worker <id> config v<version>: <json>`, and when this test read it.
#[derive(Debug, Clone)]
struct ConfigLine {
    at: Instant,
    worker: u32,
    version: u64,
    json: String,
}

fn parse(at: Instant, line: &str) -> Option<ConfigLine> {
    let rest = line.strip_prefix("worker ")?;
    let (worker, rest) = rest.split_once(" config v")?;
    let (version, json) = rest.split_once(": ")?;
    Some(ConfigLine {
        at,
        worker: worker.parse().ok()?,
        version: version.parse().ok()?,
        json: json.to_owned(),
    })
}

/// A running `config_sync` cluster in its own process group, killed on drop.
struct Example {
    child: Option<Child>,
    pgid: i32,
    workers: u32,
    stdout: Arc<Mutex<Vec<(Instant, String)>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Example {
    fn start(workers: u32, args: &[&str]) -> Example {
        let mut child = Command::new(example())
            .args(["--workers", &workers.to_string()])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start the example");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let readers = vec![
            {
                let stdout = Arc::clone(&stdout);
                std::thread::spawn(move || {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        let now = Instant::now();
                        stdout.lock().unwrap().push((now, line));
                    }
                })
            },
            {
                let stderr = Arc::clone(&stderr);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(err);
                    let mut buf = [0_u8; 4096];
                    while let Ok(n) = reader.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        stderr
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                })
            },
        ];
        Example {
            pgid: child.id() as i32,
            child: Some(child),
            workers,
            stdout,
            stderr,
            readers,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn stdout(&self) -> String {
        let lines = self.stdout.lock().unwrap();
        lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    fn configs(&self) -> Vec<ConfigLine> {
        let lines = self.stdout.lock().unwrap();
        lines.iter().filter_map(|(at, l)| parse(*at, l)).collect()
    }

    fn report(&self) -> String {
        format!(
            "\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits until every worker printed `version`; returns their lines, by worker.
    fn await_version(&self, version: u64, limit: Duration) -> Vec<ConfigLine> {
        let deadline = Instant::now() + limit;
        loop {
            let mut got: Vec<ConfigLine> = self
                .configs()
                .into_iter()
                .filter(|c| c.version == version)
                .collect();
            got.sort_by_key(|c| c.worker);
            got.dedup_by_key(|c| c.worker);
            if got.len() == self.workers as usize {
                return got;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for every worker to print config v{version}{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn await_log(&self, needle: &str, limit: Duration) {
        self.await_logs(needle, 1, limit);
    }

    /// Waits until the log holds `needle` at least `count` times.
    fn await_logs(&self, needle: &str, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.stderr().matches(needle).count() < count {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "waited {limit:?} for {needle:?} in the log{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Fails at once when the cluster gave up (no use waiting for it).
    fn assert_running(&self) {
        assert!(
            !self.stderr().contains("cluster failed"),
            "the cluster failed{}",
            self.report()
        );
    }

    /// The highest version any worker printed.
    fn max_version(&self) -> u64 {
        self.configs().iter().map(|c| c.version).max().unwrap_or(0)
    }

    /// Stops the cluster with SIGTERM and checks it exits 0 and leaves no process behind.
    fn stop(mut self) -> String {
        let _ = kill(Pid::from_raw(self.pgid), Signal::SIGTERM);
        let status = self.wait(Duration::from_secs(20));
        assert!(
            status.success(),
            "the example exited {status:?}{}",
            self.report()
        );
        self.stderr()
    }

    /// Waits for the master to exit, then checks that no process of its group is left.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
                let _ = child.wait();
                panic!("the example did not exit within {limit:?}{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !support::running_in_group(self.pgid).is_empty() {
            assert!(
                Instant::now() < deadline,
                "processes of the example outlived its master{}",
                self.report()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn redis_args(redis: &RedisServer) -> Vec<String> {
    vec![
        "--redis".into(),
        redis.url(),
        "--key".into(),
        KEY.into(),
        "--channel".into(),
        CHANNEL.into(),
    ]
}

fn start_on(redis: &RedisServer, workers: u32, extra: &[&str]) -> Example {
    let mut args = redis_args(redis);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Example::start(workers, &args)
}

const LIMIT: Duration = Duration::from_secs(20);

fn json(greeting: &str, rate: u32) -> String {
    format!(r#"{{"greeting":"{greeting}","rate":{rate}}}"#)
}

/// No new version for `quiet`: the cluster ignored what it was sent.
fn assert_no_new_version(cluster: &Example, version: u64, quiet: Duration) {
    std::thread::sleep(quiet);
    assert_eq!(
        cluster.max_version(),
        version,
        "a new version appeared{}",
        cluster.report()
    );
}

// ---- tests ---------------------------------------------------------------------------------

#[test]
fn every_worker_starts_with_the_config_and_gets_every_change_once() {
    let _serial = serial();
    let redis = RedisServer::start();
    let mut client = redis.client();
    set(&mut client, &json("hello", 10));
    let cluster = start_on(&redis, 2, &[]);

    // Each worker's first line is v1: its code ran with the config already there.
    let first = cluster.await_version(1, LIMIT);
    for line in &first {
        assert_eq!(line.json, json("hello", 10));
    }
    for worker in 0..2 {
        let mine: Vec<u64> = cluster
            .configs()
            .iter()
            .filter(|c| c.worker == worker)
            .map(|c| c.version)
            .collect();
        assert_eq!(mine.first(), Some(&1), "{}", cluster.report());
    }

    // One Redis subscription for the host, not one per worker.
    let subscribers: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(CHANNEL)
        .query(&mut client)
        .unwrap();
    assert_eq!(subscribers, vec![(CHANNEL.to_owned(), 1)]);

    assert_eq!(set_and_publish(&mut client, &json("hi", 20)), 1);
    for line in cluster.await_version(2, LIMIT) {
        assert_eq!(line.json, json("hi", 20));
    }

    // The same value again, or a message without a change, is not a new version.
    set_and_publish(&mut client, &json("hi", 20));
    publish(&mut client);
    // Key order and spacing do not make a new value either: the JSON is canonical.
    set_and_publish(&mut client, r#"{ "rate": 20, "greeting": "hi" }"#);
    assert_no_new_version(&cluster, 2, Duration::from_millis(300));

    set_and_publish(&mut client, &json("hey", 30));
    for line in cluster.await_version(3, LIMIT) {
        assert_eq!(line.json, json("hey", 30));
    }
    // Every worker printed each version exactly once, in order.
    for worker in 0..2 {
        let mine: Vec<u64> = cluster
            .configs()
            .iter()
            .filter(|c| c.worker == worker)
            .map(|c| c.version)
            .collect();
        assert_eq!(mine, vec![1, 2, 3], "{}", cluster.report());
    }
    let log = cluster.stop();
    assert!(
        log.contains(&format!("config v3 from Redis key `{KEY}`")),
        "{log}"
    );
}

#[test]
fn two_clusters_on_one_redis_converge_on_every_change() {
    let _serial = serial();
    let redis = RedisServer::start();
    let mut client = redis.client();
    set(&mut client, &json("one", 1));
    let a = start_on(&redis, 2, &[]);
    let b = start_on(&redis, 2, &[]);
    a.await_version(1, LIMIT);
    b.await_version(1, LIMIT);

    // Two hosts: two subscriptions, each fanning out to its own workers.
    assert_eq!(set_and_publish(&mut client, &json("two", 2)), 2);
    for cluster in [&a, &b] {
        for line in cluster.await_version(2, LIMIT) {
            assert_eq!(line.json, json("two", 2));
        }
    }
    assert_eq!(set_and_publish(&mut client, &json("three", 3)), 2);
    for cluster in [&a, &b] {
        for line in cluster.await_version(3, LIMIT) {
            assert_eq!(line.json, json("three", 3));
        }
    }
    a.stop();
    b.stop();
}

#[test]
fn redis_killed_and_restarted_keeps_the_last_config_and_rereads_the_key() {
    let _serial = serial();
    let mut redis = RedisServer::start();
    let mut client = redis.client();
    set(&mut client, &json("before", 1));
    let cluster = start_on(&redis, 2, &[]);
    cluster.await_version(1, LIMIT);

    // Redis dies: the Library notices, the workers keep v1 and keep running.
    redis.kill();
    cluster.await_log("lost the connection to Redis", LIMIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        support::running_in_group(cluster.pgid).len(),
        4,
        "master, Library and 2 workers{}",
        cluster.report()
    );
    assert_eq!(cluster.max_version(), 1);
    assert!(
        cluster.stderr().contains("workers keep config v1"),
        "{}",
        cluster.report()
    );

    // Redis comes back, but the Library cannot subscribe yet (a password it lacks stands for
    // "before the Library has re-subscribed", deterministically). The change is SET and
    // PUBLISHed then: nobody hears the message.
    redis.restart(&["--requirepass", "gate"]);
    let mut admin = redis
        .connection(Some("gate"))
        .expect("connect with the password");
    assert_eq!(
        set_and_publish(&mut admin, &json("while away", 2)),
        0,
        "the Library must not be subscribed yet"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cluster.max_version(), 1);

    // Once it can, the Library subscribes again and re-reads the key: the missed change arrives.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query::<()>(&mut admin)
        .unwrap();
    for line in cluster.await_version(2, LIMIT) {
        assert_eq!(line.json, json("while away", 2));
    }
    cluster.await_log("reconnected to Redis", LIMIT);

    // And it follows the channel again.
    assert_eq!(set_and_publish(&mut admin, &json("after", 3)), 1);
    for line in cluster.await_version(3, LIMIT) {
        assert_eq!(line.json, json("after", 3));
    }
    let log = cluster.stop();
    // Each loss and recovery is logged once, not once per retry.
    assert_eq!(
        log.matches("lost the connection to Redis").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("reconnected to Redis").count(), 1, "{log}");
}

#[test]
fn an_invalid_value_is_rejected_by_name_and_the_last_good_one_stays() {
    let _serial = serial();
    let redis = RedisServer::start();
    let mut client = redis.client();
    set(&mut client, &json("good", 1));
    let cluster = start_on(&redis, 2, &[]);
    cluster.await_version(1, LIMIT);

    // Not JSON; JSON of the wrong shape; a value the example's validator refuses.
    let rejected = format!(
        "the config from Redis key `{KEY}` at {} is invalid",
        redis.url()
    );
    set_and_publish(&mut client, "{not json");
    cluster.await_logs(&rejected, 1, LIMIT);
    set_and_publish(&mut client, r#"{"greeting":5}"#);
    cluster.await_logs(&rejected, 2, LIMIT);
    set_and_publish(&mut client, r#"{"greeting":""}"#);
    cluster.await_logs(&rejected, 3, LIMIT);
    let log = cluster.stderr();
    for why in [
        "key must be a string at line 1 column 2; keeping config v1",
        "invalid type: integer `5`, expected a string at line 1 column 13; keeping config v1",
        "the greeting is empty; keeping config v1",
    ] {
        assert!(
            log.contains(&format!("{rejected}: {why}")),
            "{why}{}",
            cluster.report()
        );
    }
    // A key of the wrong Redis type.
    redis::cmd("DEL").arg(KEY).query::<()>(&mut client).unwrap();
    redis::cmd("LPUSH")
        .arg(KEY)
        .arg("x")
        .query::<()>(&mut client)
        .unwrap();
    publish(&mut client);
    cluster.await_log(&format!("cannot read Redis key `{KEY}`"), LIMIT);
    assert_no_new_version(&cluster, 1, Duration::from_millis(200));

    // The next good value is v2: rejected ones never took a number.
    redis::cmd("DEL").arg(KEY).query::<()>(&mut client).unwrap();
    set_and_publish(&mut client, &json("better", 2));
    for line in cluster.await_version(2, LIMIT) {
        assert_eq!(line.json, json("better", 2));
    }
    cluster.stop();
}

#[test]
fn redis_down_at_start_is_a_clear_error_unless_there_is_a_fallback() {
    let _serial = serial();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let args = ["--redis", &url, "--key", KEY, "--channel", CHANNEL];

    // No fallback: the start fails, naming Redis and the key, and nothing is left running.
    let mut failed = Example::start(2, &args);
    let status = failed.wait(LIMIT);
    assert!(!status.success(), "{}", failed.report());
    let log = failed.stderr();
    assert!(
        log.contains(&format!(
            "cannot read the config from Redis key `{KEY}` at {url}: cannot reach Redis"
        )),
        "{log}"
    );
    assert!(failed.configs().is_empty(), "{}", failed.report());

    // With a fallback: the workers start with it, and Redis's value replaces it once Redis is
    // up (the Library keeps trying).
    let mut with_fallback = args.to_vec();
    let fallback = json("fallback", 0);
    with_fallback.extend(["--fallback", &fallback]);
    let cluster = Example::start(2, &with_fallback);
    for line in cluster.await_version(1, LIMIT) {
        assert_eq!(line.json, fallback);
    }
    assert!(cluster.stderr().contains("started with the fallback value"));
    let redis = RedisServer::on(port);
    let mut client = redis.client();
    set(&mut client, &json("from redis", 1));
    for line in cluster.await_version(2, LIMIT) {
        assert_eq!(line.json, json("from redis", 1));
    }
    cluster.stop();
}

#[test]
fn a_killed_library_comes_back_without_a_new_version() {
    let _serial = serial();
    let redis = RedisServer::start();
    let mut client = redis.client();
    set(&mut client, &json("first", 1));
    let cluster = start_on(&redis, 2, &[]);
    cluster.await_version(1, LIMIT);
    set_and_publish(&mut client, &json("steady", 2));
    cluster.await_version(2, LIMIT);
    let library = support::pid_after(&cluster.stderr(), "started the library").expect("pid");
    kill(Pid::from_raw(library), Signal::SIGKILL).expect("kill the Library");
    cluster.await_log("library restarted", LIMIT);

    // The new Library re-read the same value: not a new version for the workers.
    assert_no_new_version(&cluster, 2, Duration::from_millis(300));
    assert_eq!(set_and_publish(&mut client, &json("changed", 3)), 1);
    for line in cluster.await_version(3, LIMIT) {
        assert_eq!(line.json, json("changed", 3));
    }
    // The restarted Library numbers as the master does (it learned v2 from the workers).
    cluster.await_log(&format!("config v3 from Redis key `{KEY}`"), LIMIT);
    cluster.stop();
}

/// Replaces a file at once (write, then rename), as editors and deploy tools do: a poll never
/// sees it half written.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_config_file_change_reaches_every_worker() {
    let _serial = serial();
    let dir = TempDir::new("file");
    let path = dir.path().join("app.toml");
    std::fs::write(&path, "greeting = \"from a file\"\nrate = 1\n").unwrap();
    let path_str = path.to_string_lossy().into_owned();
    let cluster = Example::start(2, &["--file", &path_str]);
    for line in cluster.await_version(1, LIMIT) {
        assert_eq!(line.json, json("from a file", 1));
    }
    replace(&path, "greeting = \"edited\"\nrate = 2\n");
    for line in cluster.await_version(2, LIMIT) {
        assert_eq!(line.json, json("edited", 2));
    }
    replace(&path, "greeting = ");
    cluster.await_log(
        &format!("the config from file {path_str} is invalid"),
        LIMIT,
    );
    std::fs::remove_file(&path).unwrap();
    cluster.await_log(&format!("cannot read config file {path_str}"), LIMIT);
    assert_eq!(cluster.max_version(), 2);
    replace(&path, "greeting = \"back\"\n");
    for line in cluster.await_version(3, LIMIT) {
        assert_eq!(line.json, json("back", 0));
    }
    cluster.stop();
}

#[test]
fn an_in_memory_config_set_by_a_worker_reaches_every_worker() {
    let _serial = serial();
    let initial = json("initial", 1);
    let set = json("set by worker 0", 2);
    let cluster = Example::start(3, &["--memory", &initial, "--set", &set]);
    for line in cluster.await_version(1, LIMIT) {
        assert_eq!(line.json, initial);
    }
    for line in cluster.await_version(2, LIMIT) {
        assert_eq!(line.json, set);
    }
    cluster.await_log(
        "config v2 from SharedConfig::set in the worker with pid",
        LIMIT,
    );
    // A value set at run time outlives a Library crash: the restarted Library resumes from
    // it instead of publishing its initial value again.
    let library = support::pid_after(&cluster.stderr(), "started the library").expect("pid");
    kill(Pid::from_raw(library), Signal::SIGKILL).expect("kill the Library");
    cluster.await_log("resumed config v2 from before the restart", LIMIT);
    assert_no_new_version(&cluster, 2, Duration::from_millis(300));
    cluster.stop();

    // An invalid value set by a worker is rejected in the Library, which says where it came
    // from; the workers keep the initial value.
    let cluster = Example::start(2, &["--memory", &initial, "--set", r#"{"greeting":""}"#]);
    cluster.await_version(1, LIMIT);
    cluster.await_log(
        "the config from SharedConfig::set in the worker with pid",
        LIMIT,
    );
    assert!(
        cluster
            .stderr()
            .contains("is invalid: the greeting is empty; keeping config v1"),
        "{}",
        cluster.report()
    );
    assert_no_new_version(&cluster, 1, Duration::from_millis(200));
    cluster.stop();
}

#[test]
fn every_one_of_fifty_changes_reaches_every_worker_and_the_time_it_took_is_printed() {
    let _serial = serial();
    const WORKERS: u32 = 2;
    const ROUNDS: u64 = 50;
    let redis = RedisServer::start();
    let mut client = redis.client();
    set(&mut client, &json("round", 0));
    let cluster = start_on(&redis, WORKERS, &[]);
    cluster.await_version(1, LIMIT);
    let mut took = Vec::new();
    for round in 1..=ROUNDS {
        set(&mut client, &json("round", round as u32));
        let published = Instant::now();
        publish(&mut client);
        let lines = cluster.await_version(round + 1, LIMIT);
        let last = lines.iter().map(|l| l.at).max().expect("lines");
        took.push(last.duration_since(published));
    }
    cluster.stop();
    took.sort();
    let pct = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)];
    println!(
        "config propagation, PUBLISH to the last of {WORKERS} workers printing it ({ROUNDS} \
         changes, {} build): p50 {:?}, p90 {:?}, max {:?}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        pct(50),
        pct(90),
        took[took.len() - 1]
    );
}
