//! Every example in README.md prints what the README says it prints.
//!
//! The README's runnable examples are its ```console blocks: a line
//! `$ COMMAND` is run by bash (with `pactdb` on the PATH) in the directory
//! of a fresh `pactdb demo`, in the README's order, and what it prints on
//! stdout and stderr must be the lines under it, up to the next `$ ` or the
//! end of the block. A command must exit 0 unless it ends with the comment
//! `# exit N`. The one thing that truly varies from run to run, and is
//! normalised on both sides, is a transaction id's client and session part
//! (random per process): `8c90e487c95f182f-3-1@0` compares as `<txn>@0`.
//!
//! The versions shown are those of a quiet cluster. On a loaded machine a
//! primary's lease may lapse and its group take a new epoch, which writes
//! a log entry and shifts later versions: a run whose output differs and
//! during which a group's epoch changed proves nothing either way, and is
//! run again on a fresh demo (at most `ATTEMPTS` times); a difference in a
//! run without a view change fails at once. Should every attempt see a view
//! change, the last one is compared with every number normalised (`N`), so
//! that the words, the lines and the exit codes are still checked.

mod cli_common;

use cli_common::{without_numbers, Demo};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo's port offset: client ports 9801-9803, peer ports 9701-9703.
const PORT_OFFSET: u16 = 2700;
/// Fresh demos tried before giving up on getting a run without a view change.
const ATTEMPTS: usize = 5;
/// How long one README command may run (the client's own timeout is 10 s).
const COMMAND_WAIT: Duration = Duration::from_secs(60);

/// One `$ COMMAND` of a console block and what the README shows it print.
#[derive(Debug, PartialEq)]
struct Example {
    /// Its line in README.md (1-based).
    line: usize,
    command: String,
    expected: Vec<String>,
    /// The exit code its `# exit N` comment names, else 0.
    exit: i32,
}

/// The examples of every ```console block, in order.
fn examples(readme: &str) -> Result<Vec<Example>, String> {
    let mut out: Vec<Example> = Vec::new();
    let mut in_block = false;
    for (i, line) in readme.lines().enumerate() {
        let number = i + 1;
        if !in_block {
            in_block = line.trim_end() == "```console";
            continue;
        }
        if line.trim_end() == "```" {
            in_block = false;
        } else if let Some(command) = line.strip_prefix("$ ") {
            let exit = match command.rsplit_once("# exit ") {
                Some((_, code)) => code
                    .trim()
                    .parse()
                    .map_err(|_| format!("README.md line {number}: `# exit {code}` is not a code"))?,
                None => 0,
            };
            out.push(Example { line: number, command: command.to_string(), expected: Vec::new(), exit });
        } else {
            match out.last_mut() {
                Some(ex) if ex.line < number => ex.expected.push(line.trim_end().to_string()),
                _ => return Err(format!("README.md line {number}: output before any `$ ` command")),
            }
        }
    }
    if in_block {
        return Err("README.md ends inside a ```console block".to_string());
    }
    Ok(out)
}

/// A transaction id's random part (16 hex digits, `-SESSION-SEQ`) as
/// `<txn>`; its `@GROUP` stays.
fn normalise(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(len) = txn_id_at(&b[i..]) {
            // Only at a word boundary: not inside a longer hex string.
            if i == 0 || !b[i - 1].is_ascii_hexdigit() {
                out.push_str("<txn>");
                i += len;
                continue;
            }
        }
        let c = line[i..].chars().next().expect("i is on a char boundary");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The length of `HEX16-DIGITS-DIGITS` at the start of `b`, if it is one.
fn txn_id_at(b: &[u8]) -> Option<usize> {
    if b.len() < 20 || !b[..16].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
        return None;
    }
    let mut i = 16;
    for _ in 0..2 {
        if b.get(i) != Some(&b'-') {
            return None;
        }
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        i += 1 + digits;
    }
    Some(i)
}

/// Runs one README command in the demo's directory; its output (stdout
/// and stderr, in the order written) and exit code.
fn run(demo: &Demo, bin: &std::path::Path, command: &str) -> (Vec<String>, i32) {
    let out_file = demo.path(".readme-example.out");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // The newline ends a trailing `# exit N` comment before the redirection.
    let script = format!("{{ {command}\n}} > {} 2>&1", out_file.display());
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .current_dir(&demo.dir)
        .env("PATH", path)
        .env_remove("PACTDB_CERTS_DIR")
        .env_remove("PACTDB_INSECURE")
        .env_remove("PACTDB_ENDPOINTS")
        .stdin(Stdio::null())
        .spawn()
        .expect("bash runs (Debian package bash)");
    let deadline = Instant::now() + COMMAND_WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{command}` did not finish within {COMMAND_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    (text.lines().map(|l| l.trim_end().to_string()).collect(), status.code().unwrap_or(-1))
}

#[test]
fn every_console_example_in_the_readme_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let examples = examples(&readme).unwrap();
    // The tour and the transactions are there: a README that lost its
    // console blocks must not pass by having nothing to check.
    assert!(examples.len() >= 15, "only {} console examples in README.md", examples.len());
    assert!(examples.iter().any(|e| e.command.starts_with("pactdb put greeting hello")), "the tour is missing");
    assert!(examples.iter().any(|e| e.command.starts_with("pactdb txn ")), "the transactions are missing");

    for attempt in 1..=ATTEMPTS {
        let demo = Demo::start(PORT_OFFSET, &[]);
        let before = demo.epochs();
        let outputs = run_all(&demo, &examples);
        let quiet = !before.is_empty() && demo.epochs() == before;
        let failures = differences(&examples, &outputs, normalise);
        if failures.is_empty() {
            return;
        }
        assert!(!quiet, "{} README examples differ:\n{}", failures.len(), failures.join("\n"));
        if attempt == ATTEMPTS {
            let failures = differences(&examples, &outputs, |l| without_numbers(&normalise(l)));
            assert!(
                failures.is_empty(),
                "{} README examples differ (numbers aside; every attempt saw a view change):\n{}",
                failures.len(),
                failures.join("\n")
            );
            eprintln!("every attempt saw a view change: the examples were compared with their numbers normalised");
            return;
        }
        eprintln!(
            "attempt {attempt}: a group changed epoch during the run ({before:?} -> {:?}), {} examples differ; \
             again on a fresh demo",
            demo.epochs(),
            failures.len()
        );
    }
}

/// Runs every example in order: what each printed, and its exit code.
fn run_all(demo: &Demo, examples: &[Example]) -> Vec<(Vec<String>, i32)> {
    let bin = demo.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pactdb"), bin.join("pactdb")).unwrap();
    examples.iter().map(|ex| run(demo, &bin, &ex.command)).collect()
}

/// A description of each example whose output (both sides passed through
/// `norm`) or exit code differs from the README's.
fn differences(examples: &[Example], outputs: &[(Vec<String>, i32)], norm: impl Fn(&str) -> String) -> Vec<String> {
    let mut failures = Vec::new();
    for (ex, (got, code)) in examples.iter().zip(outputs) {
        let expected: Vec<String> = ex.expected.iter().map(|l| norm(l)).collect();
        let actual: Vec<String> = got.iter().map(|l| norm(l)).collect();
        if actual != expected || *code != ex.exit {
            failures.push(format!(
                "README.md line {}: $ {}\n  README shows (exit {}):\n    {}\n  it printed (exit {code}):\n    {}",
                ex.line,
                ex.command,
                ex.exit,
                ex.expected.join("\n    "),
                got.join("\n    ")
            ));
        }
    }
    failures
}

#[test]
fn console_blocks_parse_into_commands_outputs_and_exit_codes() {
    let text = "intro\n```\n$ not run\n```\n```console\n$ pactdb get k   # exit 3\nkey `k` not found\n$ pactdb put k \
                v\nOK version=1\n\n```\n";
    let got = examples(text).unwrap();
    assert_eq!(
        got,
        vec![
            Example {
                line: 6,
                command: "pactdb get k   # exit 3".into(),
                expected: vec!["key `k` not found".into()],
                exit: 3
            },
            Example {
                line: 8,
                command: "pactdb put k v".into(),
                expected: vec!["OK version=1".into(), "".into()],
                exit: 0
            },
        ]
    );
    assert!(examples("```console\noutput first\n```\n").is_err());
    assert!(examples("```console\n$ pactdb status\n").is_err());
}

#[test]
fn only_a_transaction_ids_random_part_is_normalised() {
    assert_eq!(normalise("COMMITTED (txn 8c90e487c95f182f-3-1@0)"), "COMMITTED (txn <txn>@0)");
    assert_eq!(
        normalise(r#"{"txn":"fe07885303ffb19d-4-3@1","outcome":"committed"}"#),
        r#"{"txn":"<txn>@1","outcome":"committed"}"#
    );
    // Versions, keys and other numbers are compared as they are.
    assert_eq!(normalise("alice version=4"), "alice version=4");
    assert_eq!(normalise("0000000000000000 1-2"), "0000000000000000 1-2");
    assert_ne!(normalise("txn 8c90e487c95f182f-3-1@0"), normalise("txn 8c90e487c95f182f-3-1@1"));
    assert_eq!(without_numbers("alice = 70 (version 12)"), "alice = N (version N)");
}
