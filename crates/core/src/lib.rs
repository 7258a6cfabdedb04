//! pactdb-core: every protocol of pactdb as a deterministic state machine.
//!
//! This crate owns the config store (CASPaxos), passive replication, the
//! key-value state machine, the front end's logic and the wire and WAL
//! formats. It must never touch tokio, a clock, a file, a socket or a global
//! random number generator: time comes in as `now`, randomness from a seed,
//! and everything the outside world must do leaves as an `Effect`.

pub mod bugs;
pub mod config;
pub mod fe;
pub mod io;
pub mod limits;
pub mod log;
pub mod node;
pub mod replica;
pub mod state;
pub mod types;
pub mod wire;

pub use io::{ClientToken, Effect, Input, Lsn};
pub use node::{Checkpoint, Node, NodeConfig};
