//! The client library's quick start (crates/client/examples/quickstart.rs)
//! runs against a demo and prints what it should: this test compiles the
//! example's own source and runs its `quickstart` against a fresh demo.

mod cli_common;

#[allow(dead_code)] // its `main`, for `cargo run --example quickstart`
#[path = "../crates/client/examples/quickstart.rs"]
mod quickstart;

use cli_common::Demo;
use pactdb_client::{ClientOptions, ClientTls};

/// The demo's port offset: client ports 9841-9843, peer ports 9741-9743.
const PORT_OFFSET: u16 = 2740;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_example_runs_against_a_demo() {
    let demo = Demo::start(PORT_OFFSET, &[]);
    let opts = ClientOptions::default().tls(ClientTls::load(&demo.client_certs()).unwrap());
    let mut out = Vec::new();
    quickstart::quickstart(&demo.endpoints(), opts, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    // A fresh demo: the key's group has nothing in its log yet, so the
    // versions (log indexes) are known.
    assert_eq!(
        out,
        "put quickstart=hello: version 1\n\
         get quickstart: hello (version 1)\n\
         cas quickstart 1->bonjour: version 2\n\
         cas quickstart 1->hola: refused, the key is at version 2\n\
         txn committed: quickstart=4 quickstart-copy=4\n\
         get quickstart-copy: bonjour\n",
        "the quick start printed:\n{out}"
    );
}
