//! Every error the CLI prints is said once: for each class of error (a key
//! or value over its limit, an unreachable cluster, bad usage, a refused
//! TLS connection, a failed compare-and-set) the message appears exactly
//! once, no `: `-separated part of it repeats, and the exit code is the
//! one README.md's "Exit codes" gives.

mod cli_common;

use cli_common::{stderr, stdout, Demo};
use std::io::Write;
use std::process::{Output, Stdio};

/// The demo's port offset: client ports 9921-9923, peer ports 9821-9823.
const PORT_OFFSET: u16 = 2820;

/// What a person sees: stdout then stderr.
fn seen(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// Checks that `phrase` appears exactly once in what `o` printed and that
/// no line repeats one of its own `: `-separated parts (how an error whose
/// message already holds its cause's words shows when the cause is printed
/// again), and that it exited with `code`.
fn said_once(what: &str, o: &Output, phrase: &str, code: i32) {
    let text = seen(o);
    assert_eq!(o.status.code(), Some(code), "{what}: exit code; it printed:\n{text}");
    assert_eq!(text.matches(phrase).count(), 1, "{what}: `{phrase}` is not said exactly once in:\n{text}");
    if let Some(part) = repeated_part(&text) {
        panic!("{what}: `{part}` is said twice in:\n{text}");
    }
}

/// A `: `-separated part of a line that the line holds twice, if any.
fn repeated_part(text: &str) -> Option<String> {
    for line in text.lines() {
        let parts: Vec<&str> = line.split(": ").map(str::trim).filter(|p| p.len() >= 8).collect();
        for (i, p) in parts.iter().enumerate() {
            if parts[i + 1..].iter().any(|q| q.contains(p) || p.contains(q)) {
                return Some(p.to_string());
            }
        }
    }
    None
}

#[test]
fn the_repetition_checker_catches_a_message_said_twice() {
    let twice =
        "error: key of 5000 bytes exceeds the limit of 4096 bytes: key of 5000 bytes exceeds the limit of 4096 bytes";
    assert!(repeated_part(twice).is_some());
    let nested = "error: cannot reach the cluster: no endpoint answered: timed out (last error: node 1 unreachable)";
    assert_eq!(repeated_part(nested), None);
}

#[test]
fn every_class_of_error_is_said_once() {
    let demo = Demo::start(PORT_OFFSET, &[]);

    // A key over its limit, by every command that takes one.
    let key = "k".repeat(5000);
    let too_long = "key of 5000 bytes exceeds the limit of 4096 bytes";
    said_once("put", &demo.pactdb(&["put", &key, "v"]), too_long, 1);
    said_once("get", &demo.pactdb(&["get", &key]), too_long, 1);
    said_once("delete", &demo.pactdb(&["delete", &key]), too_long, 1);
    said_once("cas", &demo.pactdb(&["cas", &key, "0", "v"]), too_long, 1);
    said_once("txn", &demo.pactdb(&["txn", "put", &key, "v"]), too_long, 1);

    // A value over its limit: from a file (refused before connecting) and
    // in a transaction read from stdin (refused by the client library).
    let big = demo.path("big.bin");
    std::fs::write(&big, vec![b'v'; 1024 * 1024 + 1]).unwrap();
    let o = demo.pactdb(&["put", "k", "--value-file", big.to_str().unwrap()]);
    said_once("put --value-file", &o, "larger than the limit of 1048576 bytes", 1);
    let mut child =
        demo.command(&["txn"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let line = format!("put k {}\ncommit\n", "v".repeat(1024 * 1024 + 1));
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(line.as_bytes());
    });
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    said_once("txn from stdin", &o, "value of 1048577 bytes exceeds the limit of 1048576 bytes", 1);

    // An unreachable cluster.
    let o = demo.pactdb(&["--endpoints", "127.0.0.1:1", "get", "k"]);
    said_once("unreachable", &o, "cannot reach the cluster at 127.0.0.1:1", 1);
    said_once("unreachable", &o, "Connection refused", 1);

    // Bad usage: clap's errors and the CLI's own.
    said_once("no key", &demo.pactdb(&["get"]), "required arguments were not provided", 2);
    said_once("unknown op", &demo.pactdb(&["txn", "frob", "k"]), "unknown op `frob`", 2);
    said_once("bad --if", &demo.pactdb(&["txn", "--if", "k=x", "get", "k"]), "is not a number", 2);
    let o = demo.pactdb(&["put", "k", "v", "--value-file", big.to_str().unwrap()]);
    said_once("value and --value-file", &o, "cannot be used with", 2);
    said_once("no value", &demo.pactdb(&["put", "k"]), "required arguments were not provided", 2);

    // A connection TLS refuses: plaintext to a TLS node, and no
    // credentials at all (not in the demo's directory, no --certs-dir).
    let eps = demo.endpoints().join(",");
    let o = demo.pactdb(&["--endpoints", &eps, "--insecure", "get", "k"]);
    said_once("plaintext to TLS", &o, "the node speaks TLS", 1);
    let only_ca = demo.path("only-ca");
    std::fs::create_dir_all(&only_ca).unwrap();
    std::fs::copy(demo.path("pactdb-data/certs/ca.crt"), only_ca.join("ca.crt")).unwrap();
    let o = demo.pactdb(&["--endpoints", &eps, "--certs-dir", only_ca.to_str().unwrap(), "get", "k"]);
    said_once("no client certificate", &o, "TLS handshake failed", 1);
    let elsewhere = tempfile::tempdir().unwrap();
    let o = demo.command(&["--endpoints", &eps, "get", "k"]).current_dir(elsewhere.path()).output().unwrap();
    said_once("no credentials", &o, "no TLS credentials", 1);

    // A failed compare-and-set (exit 3, the answer is "no").
    assert_eq!(demo.pactdb(&["put", "k", "v"]).status.code(), Some(0));
    said_once("cas mismatch", &demo.pactdb(&["cas", "k", "99", "w"]), "version mismatch: expected 99, current", 3);
    // A missing key.
    said_once("not found", &demo.pactdb(&["get", "missing"]), "key `missing` not found", 3);
}
