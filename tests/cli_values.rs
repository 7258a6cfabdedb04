//! Binary and large values through the CLI: `put --value-file FILE` (`-`:
//! stdin) writes a file's bytes unchanged, `get --raw` writes them back
//! unchanged, and a value over the 1 MiB limit is refused with the limit
//! named and nothing written.

mod cli_common;

use cli_common::{stderr, stdout, Demo};
use pactdb_core::limits::MAX_VALUE_BYTES;
use rand::{RngCore, SeedableRng};
use std::io::Write;
use std::process::Stdio;

/// The demo's port offset: client ports 9881-9883, peer ports 9781-9783.
const PORT_OFFSET: u16 = 2780;

/// `pactdb ARGS` with `input` on stdin.
fn with_stdin(demo: &Demo, args: &[&str], input: Vec<u8>) -> std::process::Output {
    let mut child =
        demo.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Written from another thread: the command may stop reading early (a
    // value over the limit) while this one waits for its output.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn values_from_files_and_stdin_round_trip_byte_for_byte() {
    let demo = Demo::start(PORT_OFFSET, &[]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let mut blob = vec![0u8; MAX_VALUE_BYTES];
    rng.fill_bytes(&mut blob);
    // Not UTF-8, with NULs and newlines: what an argument could not carry.
    assert!(std::str::from_utf8(&blob).is_err() && blob.contains(&0) && blob.contains(&b'\n'));
    let file = demo.path("blob.bin");
    std::fs::write(&file, &blob).unwrap();

    let o = demo.pactdb(&["put", "blob", "--value-file", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("OK version="), "{}", stdout(&o));
    let o = demo.pactdb(&["get", "blob", "--raw"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout == blob, "get --raw gave {} bytes, not the {} written", o.stdout.len(), blob.len());

    // From stdin, and cas takes a file too.
    blob.reverse();
    let o = with_stdin(&demo, &["put", "piped", "--value-file", "-"], blob.clone());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(demo.pactdb(&["get", "piped", "--raw"]).stdout == blob, "stdin round trip");
    let version = stdout(&o).trim().strip_prefix("OK version=").unwrap().to_string();
    let small = demo.path("small.bin");
    std::fs::write(&small, [0u8, 1, 2, 0xff]).unwrap();
    let o = demo.pactdb(&["cas", "piped", &version, "--value-file", small.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(demo.pactdb(&["get", "piped", "--raw"]).stdout, vec![0u8, 1, 2, 0xff]);
    // --raw adds nothing: no newline, no version; a missing key prints
    // nothing on stdout (exit 3).
    assert_eq!(demo.pactdb(&["put", "text", "hello"]).status.code(), Some(0));
    assert_eq!(demo.pactdb(&["get", "text", "--raw"]).stdout, b"hello");
    let o = demo.pactdb(&["get", "nothing", "--raw"]);
    assert_eq!((o.status.code(), o.stdout.len()), (Some(3), 0));

    // Over the limit, from a file and from stdin: refused, limit named,
    // nothing written.
    let over = demo.path("over.bin");
    std::fs::write(&over, vec![1u8; MAX_VALUE_BYTES + 1]).unwrap();
    let o = demo.pactdb(&["put", "over", "--value-file", over.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("limit of 1048576 bytes (1 MiB); nothing was written"), "{}", stderr(&o));
    let o = with_stdin(&demo, &["put", "over", "--value-file", "-"], vec![1u8; 4 * MAX_VALUE_BYTES]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("the value on stdin is larger than the limit of 1048576 bytes"), "{}", stderr(&o));
    let o = demo.pactdb(&["cas", "over", "0", "--value-file", over.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(demo.pactdb(&["get", "over"]).status.code(), Some(3), "nothing was written");
}
