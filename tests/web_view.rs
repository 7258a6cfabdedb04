//! The live web view in headless Chromium: tests/web_view.py (selenium)
//! loads `/` of node 1 of an insecure demo, reads a passive group's leader
//! from the DOM, kill -9's it and waits until the page shows another leader
//! at a higher epoch and the dead node as down. Runs without TLS: the
//! browser would otherwise need the client certificate installed.

mod http_common;

use http_common::Demo;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const OFFSET: u16 = 690;
/// The script's own waits add up to well under this.
const SCRIPT_WAIT: Duration = Duration::from_secs(240);

#[test]
fn the_web_view_shows_a_failover_without_reload() {
    let python = Command::new("python3").arg("--version").stdout(Stdio::null()).status();
    assert!(
        python.is_ok_and(|s| s.success()),
        "this test needs python3 (Debian package `python3`; .ci/run installs it)"
    );
    let demo = Demo::start(OFFSET, true);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web_view.py");
    let cluster_json = demo.path().join("pactdb-data/cluster.json");
    // PACTDB_WEB_VIEW_SCREENSHOT=docs/web-view.png refreshes the README's picture.
    let screenshot = std::env::var("PACTDB_WEB_VIEW_SCREENSHOT")
        .unwrap_or_else(|_| demo.path().join("web-view.png").to_string_lossy().to_string());
    let log = demo.path().join("web_view.log");
    let mut child = Command::new("python3")
        .args([script, &format!("{}/", demo.url(1)), &cluster_json.to_string_lossy(), "1", &screenshot])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(demo.path().join("web_view.err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + SCRIPT_WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let err = std::fs::read_to_string(demo.path().join("web_view.err")).unwrap_or_default();
    assert!(status.is_some(), "the browser test did not end within {SCRIPT_WAIT:?}:\n{out}\n{err}");
    assert!(status.unwrap().success(), "the browser test failed:\n{out}\n{err}");
    assert!(out.lines().last() == Some("OK"), "{out}");
    assert!(std::path::Path::new(&screenshot).exists(), "no screenshot at {screenshot}");
}
