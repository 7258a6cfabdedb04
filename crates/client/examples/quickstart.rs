//! The client library's quick start, runnable: connect, put, get, cas, and
//! a transaction, against a running cluster.
//!
//! With `pactdb demo` running in the current directory (TLS, its client
//! certificate in `pactdb-data/certs/client`):
//!
//! ```text
//! cargo run -p pactdb-client --example quickstart
//! ```
//!
//! Elsewhere, `PACTDB_ENDPOINTS=HOST:PORT,...` names the nodes' client
//! addresses and `PACTDB_CERTS_DIR=DIR` the client's credentials (`ca.crt`,
//! `client.crt`, `client.key`; `pactdb certs issue client`), or
//! `PACTDB_INSECURE=1` connects in plaintext to nodes run with `--insecure`.
//! `tests/client_example.rs` runs [`quickstart`] against a demo and checks
//! what it prints.

use pactdb_client::{Client, ClientOptions, ClientTls, TxnError};
use std::io::Write;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoints: Vec<String> = match std::env::var("PACTDB_ENDPOINTS") {
        Ok(list) => list.split(',').map(str::to_string).collect(),
        // Where `pactdb demo` listens.
        Err(_) => (1..=3).map(|i| format!("127.0.0.1:{}", 7100 + i)).collect(),
    };
    let opts = if std::env::var("PACTDB_INSECURE").is_ok_and(|v| v == "1" || v == "true") {
        ClientOptions::default().insecure()
    } else {
        let dir = std::env::var("PACTDB_CERTS_DIR").unwrap_or_else(|_| "pactdb-data/certs/client".to_string());
        ClientOptions::default().tls(ClientTls::load(std::path::Path::new(&dir))?)
    };
    quickstart(&endpoints, opts, &mut std::io::stdout()).await
}

/// Connects through `endpoints` and writes, reads, compares-and-sets and
/// commits a transaction, saying what happened on `out`.
pub async fn quickstart(endpoints: &[String], opts: ClientOptions, out: &mut impl Write) -> anyhow::Result<()> {
    // One client per process: it finds every group's primary, follows
    // failovers, and retries under the same request id (exactly once).
    let client = Client::connect_opts(endpoints, opts).await?;

    // Every write returns the key's new version.
    let version = client.put("quickstart", "hello").await?;
    writeln!(out, "put quickstart=hello: version {version}")?;

    // A read returns the value and its version, or None for a missing key.
    match client.get("quickstart").await? {
        Some(v) => writeln!(out, "get quickstart: {} (version {})", String::from_utf8_lossy(&v.value), v.version)?,
        None => writeln!(out, "get quickstart: not found")?,
    }

    // Compare-and-set: writes only if the key is still at `version`.
    match client.cas("quickstart", version, "bonjour").await? {
        Ok(new) => writeln!(out, "cas quickstart {version}->bonjour: version {new}")?,
        Err(current) => writeln!(out, "cas quickstart: refused, the key is at version {current}")?,
    }
    // The same compare again fails: the version moved on.
    match client.cas("quickstart", version, "hola").await? {
        Ok(new) => writeln!(out, "cas quickstart {version}->hola: version {new}")?,
        Err(current) => writeln!(out, "cas quickstart {version}->hola: refused, the key is at version {current}")?,
    }

    // A transaction: gets read now (their versions recorded), puts are
    // buffered, and the commit is atomic over every group it touches.
    let mut txn = client.begin();
    let greeting = txn.get("quickstart").await?.map(|v| v.value).unwrap_or_default();
    txn.put("quickstart-copy", greeting);
    txn.put("quickstart", "hej");
    match txn.commit().await {
        Ok(done) => {
            let versions: Vec<String> =
                done.versions.iter().map(|(k, v)| format!("{}={v}", String::from_utf8_lossy(k))).collect();
            writeln!(out, "txn committed: {}", versions.join(" "))?;
        }
        // Nothing was written: a key read changed before the commit. Run
        // it again.
        Err(TxnError::Aborted { reason, .. }) => writeln!(out, "txn aborted: {reason}")?,
        // OutcomeUnknown: ask `client.txn_status(txn)` later.
        Err(e) => return Err(e.into()),
    }
    if let Some(copy) = client.get("quickstart-copy").await? {
        writeln!(out, "get quickstart-copy: {}", String::from_utf8_lossy(&copy.value))?;
    }
    Ok(())
}
