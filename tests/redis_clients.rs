//! The Redis front end (crates/redis) against Redis clients no one here
//! wrote: a `redis-cli` script over TLS whose every answer is checked, and
//! redis-py's test module (tests/redis/test_commands.py: every command,
//! WATCH conflicts between two clients, MSET atomicity, and a primary
//! killed between MULTI and EXEC). Also: a node whose cluster is not
//! bootstrapped answers TRYAGAIN and serves once it is (plaintext,
//! `--insecure`).
//!
//! Needs redis-cli (Debian package redis-tools) and redis-py (PyPI package
//! redis); .ci/run installs both. Without them the test fails, saying so.
//! Every process it starts is killed when it ends, also on failure.

use pactdb_core::types::{ClusterMap, Mode};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Node N of the demo: peers on 7000+OFFSET+N, clients on 7100+OFFSET+N,
/// Redis on 6378+OFFSET+N (7289-7291): apart from every other test's ports.
const OFFSET: u16 = 910;
/// The lone node of the not-bootstrapped test: peer, client and Redis ports.
const LONE: (u16, u16, u16) = (7295, 7296, 7297);

fn redis_port(id: u64) -> u16 {
    6378 + OFFSET + id as u16
}

fn require_tools() {
    let cli = Command::new("redis-cli").arg("--version").output();
    assert!(
        cli.is_ok_and(|o| o.status.success()),
        "redis-cli is missing: install the Debian package redis-tools (.ci/run does)"
    );
    let py = Command::new("python3").args(["-c", "import redis"]).output();
    assert!(
        py.is_ok_and(|o| o.status.success()),
        "redis-py is missing: `python3 -m pip install redis` (the PyPI package redis; .ci/run does)"
    );
}

/// A demo started by this test: stopped with SIGTERM, then every node pid in
/// its cluster.json killed, when dropped (also when the test panics).
struct Demo {
    child: Child,
    dir: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(info) = std::fs::read_to_string(self.dir.join("cluster.json")) {
            if let Ok(info) = serde_json::from_str::<serde_json::Value>(&info) {
                for n in info["nodes"].as_array().into_iter().flatten() {
                    if let Some(pid) = n["pid"].as_u64() {
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                }
            }
        }
    }
}

/// A process killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_demo(dir: &Path) -> Demo {
    let log_path = dir.join("demo.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pactdb"))
        .args(["demo", "--data-dir", &dir.join("data").to_string_lossy(), "--port-offset", &OFFSET.to_string()])
        .env_remove("PACTDB_CERTS_DIR")
        .env_remove("PACTDB_INSECURE")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let demo = Demo { child, dir: dir.join("data") };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&log_path).unwrap_or_default().contains("Ctrl-C stops the cluster") {
        assert!(Instant::now() < deadline, "the demo did not come up: {}", std::fs::read_to_string(&log_path).unwrap());
        std::thread::sleep(Duration::from_millis(200));
    }
    demo
}

/// redis-cli with the demo's client certificate.
fn cli_tls(certs: &Path, port: u16) -> Command {
    let mut c = Command::new("redis-cli");
    c.args(["--tls", "--cacert"])
        .arg(certs.join("ca.crt"))
        .arg("--cert")
        .arg(certs.join("client.crt"))
        .arg("--key")
        .arg(certs.join("client.key"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    c
}

fn run_with_stdin(mut cmd: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// What the redis-cli script (tests/redis/script.redis) must print, line
/// by line, as Redis would print it.
const EXPECTED_SCRIPT: &str = "\
PONG
\"hello\"
OK
(error) ERR DB index is out of range
(integer) 0
OK
\"1\"
(nil)
\"1\"
(error) ERR pactdb does not support key expiry: SET ... EX is refused (keys never expire)
\"2\"
(integer) 0
(integer) 1
(integer) 1
(integer) 42
(integer) 41
(integer) 39
(integer) 6
(integer) 2
(integer) 2
(integer) 5
(integer) 2
(error) ERR value is not an integer or out of range
(integer) 2
OK
1) \"A\"
2) \"B\"
3) \"C\"
4) (nil)
(integer) 1
1) \"cli:a\"
2) \"cli:b\"
3) \"cli:n\"
1) \"1\"
2) (empty array)
OK
QUEUED
QUEUED
QUEUED
1) OK
2) (integer) 2
3) \"2\"
OK
(error) ERR unknown command 'FOO', with args beginning with: 
(error) EXECABORT Transaction discarded because of previous errors.
(error) ERR DISCARD without MULTI
(error) ERR EXEC without MULTI
OK
OK
OK
\"cli-script\"
(integer) 32
1)  1) \"get\"
    2) (integer) 2
    3) 1) readonly
       2) fast
    4) (integer) 1
    5) (integer) 1
    6) (integer) 1
    7) (empty array)
    8) (empty array)
    9) (empty array)
   10) (empty array)
(error) ERR wrong number of arguments for 'get' command
(error) ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' 
(error) ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?
";

#[test]
fn redis_clients_work_against_the_demo() {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let demo = start_demo(tmp.path());
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.dir.join("cluster.json")).unwrap()).unwrap();
    let certs = PathBuf::from(info["certs_dir"].as_str().expect("a TLS demo names its client certs"));
    for (i, n) in info["nodes"].as_array().unwrap().iter().enumerate() {
        let want = format!("127.0.0.1:{}", redis_port(i as u64 + 1));
        assert_eq!(n["redis"].as_str(), Some(want.as_str()), "cluster.json names each node's Redis address");
    }

    // Up once PING answers through TLS; plaintext is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli_tls(&certs, redis_port(1)).arg("PING").output().unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
            break;
        }
        assert!(Instant::now() < deadline, "PING over TLS never answered: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let plain = Command::new("redis-cli").args(["-p", &redis_port(1).to_string(), "PING"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("PONG"), "plaintext must not be served: {plain:?}");
    let said = format!("{}{}", String::from_utf8_lossy(&plain.stdout), String::from_utf8_lossy(&plain.stderr));
    assert!(said.contains("serves Redis over TLS only"), "a plaintext client is told why: {plain:?}");

    // The redis-cli script, answer by answer.
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/redis/script.redis")).unwrap();
    let mut cmd = cli_tls(&certs, redis_port(2));
    cmd.arg("--no-raw");
    let out = run_with_stdin(cmd, &script);
    let printed = String::from_utf8_lossy(&out.stdout);
    if printed != EXPECTED_SCRIPT {
        for (i, (got, want)) in printed.lines().zip(EXPECTED_SCRIPT.lines()).enumerate() {
            assert_eq!(got, want, "line {} of the redis-cli script's output differs; all of it:\n{printed}", i + 1);
        }
        panic!("the redis-cli script printed a different number of lines:\n{printed}");
    }

    // The failover target: a passive group's primary and two of its keys;
    // the redis-py test connects through another node.
    let map: ClusterMap = serde_json::from_value(info["cluster"].clone()).unwrap();
    let client_certs = pactdb_client::ClientSecurity::Tls(pactdb_client::ClientTls::load(&certs).unwrap());
    let endpoints: Vec<String> = map.nodes.values().map(|a| a.client.clone()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (_, views) = rt.block_on(pactdb_client::fetch_views_with(&endpoints, &client_certs)).unwrap();
    let view = views.iter().find(|v| v.mode == Mode::Passive).expect("the demo has a passive group");
    let keys: Vec<String> = (0..)
        .map(|i| format!("py:failover:{i}"))
        .filter(|k| map.group_of(k.as_bytes()) == view.group)
        .take(2)
        .collect();
    let victim = info["nodes"].as_array().unwrap().iter().find(|n| n["id"].as_u64() == Some(view.leader)).unwrap();
    let survivor = map.nodes.keys().copied().find(|&id| id != view.leader).unwrap();

    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/redis/test_commands.py"))
        .env("REDIS_PORTS", format!("{},{},{}", redis_port(1), redis_port(2), redis_port(3)))
        .env("REDIS_TLS_DIR", &certs)
        .env("REDIS_RUN", "py")
        .env("FAILOVER_PID", victim["pid"].as_u64().unwrap().to_string())
        .env("FAILOVER_KEYS", keys.join(","))
        .env("FAILOVER_PORT", redis_port(survivor).to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "the redis-py tests failed:\n{report}");
    assert!(report.contains("test_failover_between_multi_and_exec"), "the failover test ran:\n{report}");
    drop(demo);
}

#[test]
fn a_node_not_bootstrapped_answers_tryagain_then_serves() {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let (peer, client, redis) = LONE;
    let node = Killed(
        Command::new(env!("CARGO_BIN_EXE_pactdb"))
            .args(["node", "--id", "1", "--data-dir"])
            .arg(tmp.path().join("n1"))
            .args(["--listen", &format!("127.0.0.1:{peer}"), "--client-listen", &format!("127.0.0.1:{client}")])
            .args(["--peers", &format!("1=127.0.0.1:{peer}"), "--insecure"])
            .args(["--redis-listen", &format!("127.0.0.1:{redis}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli").args(["-p", &redis.to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli(&["PING"]) != "PONG" {
        assert!(Instant::now() < deadline, "the Redis listener never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = cli(&["GET", "k"]);
    assert!(answer.starts_with("TRYAGAIN cluster not ready"), "{answer}");

    let out = Command::new(env!("CARGO_BIN_EXE_pactdb"))
        .args(["--insecure", "bootstrap", "--endpoints", &format!("127.0.0.1:{client}"), "--replicas", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "bootstrap failed: {}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli(&["SET", "k", "v"]) != "OK" {
        assert!(Instant::now() < deadline, "SET never succeeded after the bootstrap: {}", cli(&["SET", "k", "v"]));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cli(&["GET", "k"]), "v");
    drop(node);
}
