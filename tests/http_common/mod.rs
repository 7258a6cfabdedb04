//! A `pactdb demo` for the HTTP tests (tests/http_api.rs, metrics.rs,
//! web_view.rs): started in a temp dir on a port offset of its own, stopped
//! with every node it started however the test ends; and curl, the client
//! nobody here wrote.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running demo. Dropping it stops the demo (SIGTERM: it stops its nodes)
/// and then kill -9's every node cluster.json names, should one be left.
pub struct Demo {
    child: Child,
    pub dir: tempfile::TempDir,
    pub offset: u16,
    pub insecure: bool,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
        }
    }
}

impl Demo {
    /// Starts `pactdb demo --port-offset OFFSET` (with `--insecure` if
    /// asked) and waits until `pactdb status` succeeds against it.
    pub fn start(offset: u16, insecure: bool) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pactdb"));
        if insecure {
            cmd.arg("--insecure");
        }
        let child = cmd
            .args(["demo", "--port-offset", &offset.to_string()])
            .current_dir(dir.path())
            .env_remove("PACTDB_CERTS_DIR")
            .env_remove("PACTDB_INSECURE")
            .env_remove("PACTDB_ENDPOINTS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let demo = Demo { child, dir, offset, insecure };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let said = std::fs::read_to_string(demo.dir.path().join("demo.log")).unwrap_or_default();
            if said.contains("Ctrl-C stops the cluster") && demo.pactdb(&["status"]).status.success() {
                return demo;
            }
            assert!(Instant::now() < deadline, "the demo did not come up: {said}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cluster_json(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path().join("pactdb-data/cluster.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn pids(&self) -> Vec<u64> {
        let text = std::fs::read_to_string(self.path().join("pactdb-data/cluster.json")).unwrap_or_default();
        let info: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        info["nodes"].as_array().into_iter().flatten().filter_map(|n| n["pid"].as_u64()).collect()
    }

    /// `pactdb ARGS` run in the demo's dir (it finds the demo through cluster.json).
    pub fn pactdb(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pactdb"))
            .args(args)
            .current_dir(self.path())
            .env_remove("PACTDB_CERTS_DIR")
            .env_remove("PACTDB_INSECURE")
            .env_remove("PACTDB_ENDPOINTS")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Node `id`'s HTTP base URL.
    pub fn url(&self, id: u64) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{}", 8100 + self.offset + id as u16)
    }

    /// The client certificate dir the demo made (TLS mode).
    pub fn client_certs(&self) -> PathBuf {
        self.path().join("pactdb-data/certs/client")
    }

    /// curl with the demo's client certificate (TLS mode), `-sS`, the status
    /// code appended on a last line of its own.
    pub fn curl(&self, args: &[&str]) -> Curl {
        let mut cmd = curl_command();
        if !self.insecure {
            let c = self.client_certs();
            cmd.args(["--cacert", &c.join("ca.crt").to_string_lossy()]);
            cmd.args(["--cert", &c.join("client.crt").to_string_lossy()]);
            cmd.args(["--key", &c.join("client.key").to_string_lossy()]);
        }
        Curl::run(cmd.args(args))
    }
}

/// curl, or a failure that names the package to install.
pub fn curl_command() -> Command {
    let ok = Command::new("curl").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok, "these tests need curl (Debian package `curl`; .ci/run installs it)");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-D", "-", "-w", "\n%{http_code}"]);
    cmd
}

/// What curl got: status, headers (lower-cased names), body.
pub struct Curl {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl Curl {
    pub fn run(cmd: &mut Command) -> Curl {
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let stdout = out.stdout;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        // Headers (-D -), then the body, then "\n<code>".
        let cut = stdout.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let status: u16 = String::from_utf8_lossy(&stdout[cut..]).trim().parse().unwrap_or(0);
        let rest = &stdout[..cut];
        // An interim answer (`100 Continue`) comes first with its own headers.
        let mut rest = rest;
        let mut split = rest.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(0);
        while rest[split..].starts_with(b"HTTP/") {
            rest = &rest[split..];
            split = rest.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(0);
        }
        let headers = String::from_utf8_lossy(&rest[..split])
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Curl { status, headers, body: rest[split..].to_vec(), stderr }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}
