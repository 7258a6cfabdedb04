//! pactdb-http: the HTTP front end a node serves with `--http-listen`: the
//! JSON/bytes API (`/v1/kv/{key}`, `/v1/txn`, `/v1/status`), its OpenAPI
//! description, Prometheus metrics (`/metrics`) and the live web view (`/`).
//!
//! It owns one thread with its own tokio runtime (the node's event loop is
//! never slowed by HTTP work), the accept loop (TLS with a client
//! certificate of the cluster CA, exactly as the node's client port, or
//! plaintext when the node runs `--insecure`), and an embedded Front End
//! (`pactdb_client::Client`) connected to its own node's client port. It
//! must never decide anything about the data itself: every read and write
//! goes through the Front End, with the same checks and errors as the CLI.

mod api;
pub mod json;
pub mod metrics;
pub mod status;

use anyhow::Context;
use pactdb_client::ClientSecurity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

pub use api::{router, ROUTES};

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection has this long to send a request's headers (and an idle
/// keep-alive connection is closed after it).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request may take in all (a write that cannot commit ends
/// with the Front End's own timeout well before this).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The OpenAPI description of the API, as committed in docs/openapi.json.
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// How the HTTP listener is secured, following the node's own security.
#[derive(Clone)]
pub enum HttpSecurity {
    /// HTTPS, requiring a client certificate of the cluster CA (the node's
    /// client acceptor); the embedded Front End connects with the node's
    /// own certificate.
    Tls { acceptor: TlsAcceptor, client: pactdb_client::ClientTls },
    /// Plain HTTP: only for a node started with `--insecure`.
    Insecure,
}

pub struct HttpConfig {
    pub listen: SocketAddr,
    /// This node's client address: where the embedded Front End connects.
    pub node_client: String,
    pub security: HttpSecurity,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// Binds `cfg.listen` now (so a bad address fails the node's start) and
/// serves on a thread of its own. Returns the bound address.
pub fn spawn(cfg: HttpConfig) -> anyhow::Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind(cfg.listen).with_context(|| format!("cannot listen for HTTP on {}", cfg.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (acceptor, client_security) = match &cfg.security {
        HttpSecurity::Tls { acceptor, client } => (Some(acceptor.clone()), ClientSecurity::Tls(client.clone())),
        HttpSecurity::Insecure => (None, ClientSecurity::Insecure),
    };
    metrics::describe();
    let state = Arc::new(api::App::new(cfg.node_client, client_security, cfg.metrics.clone()));
    let app = router(state);
    let upkeep = cfg.metrics;
    std::thread::Builder::new()
        .name("pactdb-http".to_string())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("the HTTP server cannot start a runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(metrics::UPKEEP_EVERY);
                    loop {
                        every.tick().await;
                        upkeep.run_upkeep();
                    }
                });
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, acceptor, app).await,
                    Err(e) => tracing::error!("the HTTP listener: {e}"),
                }
            })
        })
        .context("starting the HTTP thread")?;
    Ok(addr)
}

async fn accept_loop(listener: tokio::net::TcpListener, tls: Option<TlsAcceptor>, app: axum::Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Wait for a free slot before accepting: beyond the bound,
        // connections wait in the backlog rather than pile up here.
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pause, do not spin.
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(pactdb_node::tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, app).await,
                        Ok(Err(e)) => tracing::info!(%peer, "HTTPS handshake refused: {e}"),
                        Err(_) => tracing::info!(%peer, "HTTPS handshake timed out"),
                    }
                }
                None => serve_connection(tcp, app).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, app: axum::Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!("HTTP connection ended: {e}");
    }
}
