//! The short chaos run: `deploy/chaos.sh --seconds 150` against a cluster
//! of containers of its own (project `pactdb-chaostest-PID` on
//! 10.214.X.0/24, so neither a developer's cluster nor a test run from
//! another checkout on the same machine is touched), made from this
//! build's debug binary. Every fault kind is injected at least once; the run must find no
//! anomaly, and leave no container behind.
//!
//! Skipped, saying so, only when docker is not available.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEED: &str = "14";
const KINDS: [&str; 8] = ["kill", "pause", "isolate", "split", "link", "asymmetric", "restart-all", "rolling"];
/// Building the image, starting the cluster, 150 s of faults (longer if a
/// round of every kind takes longer), the final reads and the checks.
const RUN_TIMEOUT: Duration = Duration::from_secs(20 * 60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docker_available() -> bool {
    Command::new("timeout")
        .args(["30", "docker", "version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The compose project and subnet of this run.
fn project() -> (String, String) {
    let pid = std::process::id();
    (format!("pactdb-chaostest-{pid}"), format!("10.214.{}", pid % 250 + 1))
}

fn script(name: &str) -> Command {
    let (project, subnet) = project();
    let mut cmd = Command::new(root().join("deploy").join(name));
    cmd.current_dir(root())
        .env("PACTDB_BIN", env!("CARGO_BIN_EXE_pactdb"))
        .env("PACTDB_PROJECT", project)
        .env("PACTDB_SUBNET_PREFIX", subnet)
        .env_remove("PACTDB_STATE_DIR")
        .env_remove("PACTDB_CONTAINER_PREFIX")
        .env_remove("PACTDB_NETWORK")
        .env_remove("PACTDB_IMAGE")
        .env_remove("PACTDB_ENDPOINTS");
    cmd
}

fn containers_left() -> String {
    let out = Command::new("timeout")
        .args(["30", "docker", "ps", "-aq", "--filter", &format!("name=^{}-node", project().0)])
        .output()
        .expect("docker ps runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's cluster (if chaos.sh could not).
fn down() {
    let _ = script("down.sh").stdout(Stdio::null()).status();
}

#[test]
fn a_short_chaos_run_finds_no_anomaly_and_injects_every_fault_kind() {
    if !docker_available() {
        println!("SKIPPED: docker is not available here, so the chaos run (deploy/chaos.sh) cannot run");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report: &Path = &dir.path().join("report.json");
    let log = dir.path().join("chaos.log");
    let mut child = script("chaos.sh")
        .args(["--seconds", "150", "--seed", SEED, "--hold", "2-3", "--quiet", "1"])
        .arg("--report")
        .arg(report)
        .arg("--history")
        .arg(dir.path().join("history.jsonl"))
        .stdout(std::fs::File::create(&log).expect("a log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("deploy/chaos.sh starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for chaos.sh") {
            break Some(status);
        }
        if started.elapsed() > RUN_TIMEOUT {
            // chaos.sh heals and removes its cluster on SIGTERM.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let grace = Instant::now();
            while child.try_wait().ok().flatten().is_none() && grace.elapsed() < Duration::from_secs(180) {
                std::thread::sleep(Duration::from_secs(1));
            }
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    println!("{output}");
    let left = containers_left();
    if !left.is_empty() {
        down();
    }
    let status = status.unwrap_or_else(|| panic!("the chaos run took over {}s", RUN_TIMEOUT.as_secs()));
    assert!(left.is_empty(), "chaos.sh left containers of {} behind: {left}", project().0);
    let summary = output.lines().rev().find(|l| l.contains(" ops, ") && l.ends_with(" anomalies"));
    let summary = summary.unwrap_or_else(|| panic!("no summary line in the output (exit {status})"));
    assert!(summary.ends_with(", 0 anomalies"), "{summary}");
    assert!(status.success(), "chaos.sh exited with {status}: {summary}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).expect("the report was written")).expect("JSON");
    let kinds: Vec<&str> =
        report["by_kind"].as_array().expect("by_kind").iter().filter_map(|k| k["kind"].as_str()).collect();
    for kind in KINDS {
        assert!(kinds.contains(&kind), "no {kind} fault was injected: {summary}");
    }
    let faults: u64 = summary.split(", ").nth(1).and_then(|f| f.split(' ').next()?.parse().ok()).expect("M faults");
    assert!(faults >= KINDS.len() as u64, "{summary}");
}
