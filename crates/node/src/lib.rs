//! pactdb-node: the runtime that drives the sans-IO core: TCP transport with TLS (`tls.rs`), WAL storage, event loop.

pub mod frame;
pub mod legacy;
pub mod metrics;
pub mod net;
pub mod runtime;
pub mod snapshot;
pub mod tls;
pub mod wal;
