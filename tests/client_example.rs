//! The client library's quick start (crates/client/examples/quickstart.rs)
//! runs against a demo and prints what it should: this test compiles the
//! example's own source and runs its `quickstart` against a fresh demo.

mod cli_common;

#[allow(dead_code)] // its `main`, for `cargo run --example quickstart`
#[path = "../crates/client/examples/quickstart.rs"]
mod quickstart;

use cli_common::{without_numbers, Demo};
use pactdb_client::{ClientOptions, ClientTls};

/// The demo's port offset: client ports 9841-9843, peer ports 9741-9743.
const PORT_OFFSET: u16 = 2740;

/// Fresh demos tried before giving up on a run without a view change.
const ATTEMPTS: usize = 5;

/// What the quick start prints on a fresh, quiet demo: the key's group has
/// nothing in its log yet, so the versions (log indexes) are known.
const EXPECTED: &str = "put quickstart=hello: version 1\n\
                        get quickstart: hello (version 1)\n\
                        cas quickstart 1->bonjour: version 2\n\
                        cas quickstart 1->hola: refused, the key is at version 2\n\
                        txn committed: quickstart=4 quickstart-copy=4\n\
                        get quickstart-copy: bonjour\n";

/// A view change during the run (a lapsed lease on a loaded machine)
/// writes a log entry and shifts the versions; such a run is tried again
/// on a fresh demo, and if every attempt is disturbed the last is compared
/// with its numbers normalised, as in tests/readme_examples.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_example_runs_against_a_demo() {
    for attempt in 1..=ATTEMPTS {
        let demo = Demo::start(PORT_OFFSET, &[]);
        let before = demo.epochs();
        let opts = ClientOptions::default().tls(ClientTls::load(&demo.client_certs()).unwrap());
        let mut out = Vec::new();
        quickstart::quickstart(&demo.endpoints(), opts, &mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        let quiet = !before.is_empty() && demo.epochs() == before;
        if out == EXPECTED {
            return;
        }
        assert!(!quiet, "the quick start printed:\n{out}\nand not:\n{EXPECTED}");
        if attempt == ATTEMPTS {
            assert_eq!(
                without_numbers(&out),
                without_numbers(EXPECTED),
                "the quick start printed (numbers aside; every attempt saw a view change):\n{out}"
            );
            return;
        }
        eprintln!("attempt {attempt}: a group changed epoch during the run; again on a fresh demo");
    }
}
