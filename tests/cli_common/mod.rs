//! A `pactdb demo` for the tests of the CLI as users run it (the README's
//! examples, the client's quick start, values from files, error messages):
//! started in a temporary directory on its own port offset, with no
//! credentials in the environment, and stopped with every node it started
//! however the test ends. It must never leave a process behind.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a demo may take to come up (nodes start, elect, bootstrap).
const DEMO_START_WAIT: Duration = Duration::from_secs(90);
/// How long a stopped demo gets to stop its nodes before they are killed.
const DEMO_STOP_WAIT: Duration = Duration::from_secs(5);

/// A running demo in `dir` (its data in `dir/pactdb-data`). Dropping it
/// stops the demo (SIGTERM: it stops its nodes) and then kills the nodes
/// cluster.json names, should the demo not have.
pub struct Demo {
    child: Child,
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub offset: u16,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + DEMO_STOP_WAIT;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let info = std::fs::read_to_string(self.dir.join("pactdb-data/cluster.json")).unwrap_or_default();
        if let Ok(info) = serde_json::from_str::<serde_json::Value>(&info) {
            for n in info["nodes"].as_array().into_iter().flatten() {
                if let Some(pid) = n["pid"].as_u64() {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
                }
            }
        }
    }
}

impl Demo {
    /// Starts `pactdb demo --port-offset OFFSET EXTRA...` in a new
    /// temporary directory and waits until `pactdb status` run there, with
    /// no credentials given, succeeds.
    pub fn start(offset: u16, extra: &[&str]) -> Demo {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let log = std::fs::File::create(dir.join("demo.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pactdb"))
            .args(["demo", "--port-offset", &offset.to_string()])
            .args(extra)
            .current_dir(&dir)
            .env_remove("PACTDB_CERTS_DIR")
            .env_remove("PACTDB_INSECURE")
            .env_remove("PACTDB_ENDPOINTS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let demo = Demo { child, _tmp: tmp, dir, offset };
        let deadline = Instant::now() + DEMO_START_WAIT;
        loop {
            // Up once it says how to stop it (it handles SIGTERM from then on).
            let said = demo.log();
            if said.contains("Ctrl-C stops the cluster") && demo.pactdb(&["status"]).status.success() {
                return demo;
            }
            assert!(Instant::now() < deadline, "the demo did not come up: {said}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("demo.log")).unwrap_or_default()
    }

    /// `pactdb ARGS` run in the demo's directory, as a user would run it
    /// there (it finds the demo and its certificate through cluster.json).
    pub fn pactdb(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// `pactdb ARGS` as a command to adjust (stdin, env) before running.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pactdb"));
        cmd.args(args)
            .current_dir(&self.dir)
            .env_remove("PACTDB_CERTS_DIR")
            .env_remove("PACTDB_INSECURE")
            .env_remove("PACTDB_ENDPOINTS");
        cmd
    }

    /// Every group's epoch, as `pactdb status --json` shows the views
    /// (empty if status fails). A view change between two calls means a
    /// group changed leader or members: on a loaded machine a primary's
    /// lease can lapse and the group takes a new epoch, which writes a log
    /// entry and so moves the versions (log indexes) later writes get.
    pub fn epochs(&self) -> Vec<(u64, u64)> {
        let out = self.pactdb(&["status", "--json"]);
        let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return Vec::new() };
        status["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| Some((g["group"].as_u64()?, g["epoch"].as_u64()?)))
            .collect()
    }

    /// The nodes' client addresses.
    pub fn endpoints(&self) -> Vec<String> {
        (1..=3).map(|i| format!("127.0.0.1:{}", 7100 + i + self.offset)).collect()
    }

    /// The client certificate dir the demo made.
    pub fn client_certs(&self) -> PathBuf {
        self.dir.join("pactdb-data/certs/client")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Every run of digits as `N`: how a run disturbed by view changes (which
/// shift versions) is compared, so that its words and lines still are.
pub fn without_numbers(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('N') {
            out.push('N');
        }
    }
    out
}
