//! pactdb-node: the runtime that drives the sans-IO core: TCP transport, WAL storage, event loop.

pub mod frame;
pub mod legacy;
pub mod net;
pub mod runtime;
pub mod snapshot;
pub mod wal;
