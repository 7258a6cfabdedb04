//! The replicated state machine of one group on one replica: what applying
//! the group's committed log produces, and nothing else.
//!
//! It owns the key-value store (`kv`), the exactly-once session table
//! (`sessions`), the request vocabulary and its pure execution (`op`), and
//! the snapshot that carries all of it to a member that fell behind. It must
//! never see an uncommitted entry, and it must never depend on anything but
//! the entries applied to it, in order: every member that applies the same
//! log holds the same state.

pub mod kv;
pub mod op;
pub mod sessions;

use crate::bugs::Bugs;
use crate::log::{Entry, Payload};
use crate::types::{Epoch, Index, RequestId};
use kv::{KvStore, Write};
use op::{execute, OpResult};
use serde::{Deserialize, Serialize};
use sessions::Sessions;

/// Everything a group's applied log determines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    pub kv: KvStore,
    pub sessions: Sessions,
}

impl StateMachine {
    /// Applies the next committed entry and returns the request it carried
    /// out with its response, if it carried one out. A passive entry carries
    /// its effects and response; an active entry carries the request, which
    /// is executed here, in log order, against this member's state.
    /// `bugs.diverge_state` makes this member's state silently go wrong.
    pub fn apply(&mut self, e: &Entry, bugs: &Bugs) -> Option<(RequestId, OpResult)> {
        let (id, response) = match &e.payload {
            Payload::Noop => return None,
            Payload::Effects { id, response, writes } => {
                for w in writes {
                    self.kv.apply(w);
                }
                (*id, response.clone())
            }
            Payload::Sequenced { id, op } => {
                let (response, mut writes) = execute(op, e.index, self.kv.get(op.key()));
                if bugs.diverge_state {
                    for w in writes.iter_mut() {
                        if let Write::Put { value, .. } = w {
                            value.push(b'!');
                        }
                    }
                }
                for w in &writes {
                    self.kv.apply(w);
                }
                (*id, response)
            }
        };
        self.sessions.record(id, e.index, response.clone());
        Some((id, response))
    }
}

/// A replica's whole applied state at one log position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub index: Index,
    pub epoch: Epoch,
    pub state: StateMachine,
}

impl Snapshot {
    /// Whether the state is what its sender hashed: the key-value digest it
    /// carries matches one computed from its contents.
    pub fn is_intact(&self) -> bool {
        self.state.kv.digest() == self.state.kv.recompute_digest()
    }
}
