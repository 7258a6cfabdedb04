//! The request vocabulary of the key-value state machine: the operations a
//! client asks for, what they answer, and `execute`, the pure function that
//! turns one into the other plus the writes it makes.
//!
//! It owns no state. It must never look at anything but its arguments: the
//! passive primary runs it against its overlay, every active member against
//! its applied state, and both must get the same answer from the same input.

use crate::limits::{MAX_KEY_BYTES, MAX_SCAN_KEYS, MAX_VALUE_BYTES};
use crate::state::kv::{Key, Value, Versioned, Write};
use crate::state::txn::{
    lock_modes, AbortReason, Check, LockMode, TxnId, TxnLimitError, TxnOutcome, TxnRequest, TxnWrite,
};
use crate::types::Index;
use serde::{Deserialize, Serialize};

/// A key or value over its limit, or a transaction over its bounds. The
/// wire turns it into a `ClientError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitError {
    KeyTooLarge {
        len: usize,
        max: usize,
    },
    ValueTooLarge {
        len: usize,
        max: usize,
    },
    Txn(Box<TxnLimitError>),
    /// An `Op::Scan` asking for more than `MAX_SCAN_KEYS` keys.
    ScanTooLarge {
        limit: usize,
        max: usize,
    },
}

/// Checks a key against `MAX_KEY_BYTES`.
pub fn check_key(key: &[u8]) -> Result<(), LimitError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(LimitError::KeyTooLarge { len: key.len(), max: MAX_KEY_BYTES });
    }
    Ok(())
}

/// Checks a value against `MAX_VALUE_BYTES`.
pub fn check_value(value: &[u8]) -> Result<(), LimitError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(LimitError::ValueTooLarge { len: value.len(), max: MAX_VALUE_BYTES });
    }
    Ok(())
}

/// What a client asks a group to do: an operation on one key, or a
/// transaction operation at the transaction's home group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get {
        #[serde(with = "serde_bytes")]
        key: Key,
    },
    Put {
        #[serde(with = "serde_bytes")]
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Value,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Key,
    },
    /// Sets `value` only if the key's version equals `expected_version`
    /// (0 means "the key must not exist").
    Cas {
        #[serde(with = "serde_bytes")]
        key: Key,
        expected_version: u64,
        #[serde(with = "serde_bytes")]
        value: Value,
    },
    /// Commits a transaction: every check holds and every write takes
    /// effect, in every group, or nothing does. Sent to the home group (the
    /// group of its first written key, or first checked one), whose primary
    /// coordinates it; the request id names the transaction.
    Commit(TxnRequest),
    /// What became of a transaction (any client's), asked of its home group.
    /// A coordinator with no record of it records an abort first, so the
    /// answer is final: the transaction can never commit afterwards.
    TxnStatus { txn: TxnId },
    /// Lists the keys of `group` after `after` (from the first when
    /// `None`), at most `limit` of them, in byte order, from the committed
    /// state of the group's leader (read-only, never logged). Appended last
    /// so the encoding of the variants above does not change.
    Scan {
        group: crate::types::GroupId,
        #[serde(with = "serde_bytes")]
        after: Option<Key>,
        limit: u32,
    },
}

impl Op {
    /// The key of an operation on one key; `None` for a transaction operation.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => Some(key),
            Op::Commit(_) | Op::TxnStatus { .. } | Op::Scan { .. } => None,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }

    /// Whether the operation is a single-key write: the requests a front
    /// end's FIFO order covers (see `RequestId` and `ClientRequest::prev`).
    /// Reads are not logged in a passive group, and a transaction is
    /// ordered by two-phase commit, not at one point of one group's log.
    pub fn is_fifo_write(&self) -> bool {
        matches!(self, Op::Put { .. } | Op::Delete { .. } | Op::Cas { .. })
    }

    /// Checks the limits every operation must meet before it is executed.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Op::Commit(req) => req.validate().map_err(|e| match e {
                TxnLimitError::Limit(l) => l,
                e => LimitError::Txn(Box::new(e)),
            }),
            Op::TxnStatus { .. } => Ok(()),
            Op::Scan { after, limit, .. } => {
                if let Some(after) = after {
                    check_key(after)?;
                }
                if *limit as usize > MAX_SCAN_KEYS {
                    return Err(LimitError::ScanTooLarge { limit: *limit as usize, max: MAX_SCAN_KEYS });
                }
                Ok(())
            }
            _ => {
                check_key(self.key().expect("a single-key operation"))?;
                if let Op::Put { value, .. } | Op::Cas { value, .. } = self {
                    check_value(value)?;
                }
                Ok(())
            }
        }
    }
}

/// The outcome of an operation, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Value(Option<Versioned>),
    Written {
        version: u64,
    },
    Deleted {
        existed: bool,
    },
    CasFailed {
        current_version: u64,
    },
    /// A transaction's outcome (the answer to `Commit` and `TxnStatus`).
    Txn(TxnOutcome),
    /// The answer to `Op::Scan`: the keys (byte order; fewer than the limit
    /// only when no more follow) and how many keys the group holds.
    Scanned {
        keys: Vec<serde_bytes::ByteBuf>,
        total: u64,
    },
}

impl OpResult {
    /// Whether this is the result of a single-key write (`Op::is_fifo_write`):
    /// a passive entry carries its response, not its operation.
    pub fn is_fifo_write(&self) -> bool {
        matches!(self, OpResult::Written { .. } | OpResult::Deleted { .. } | OpResult::CasFailed { .. })
    }
}

/// The state an operation executes against: a group's applied state (an
/// active member's), or a passive primary's applied state plus its overlay
/// of uncommitted entries, which sees at least every lock the applied state
/// will hold when the entry applies.
pub trait ExecState {
    /// The key's value and version as the executing entry will find it.
    fn get(&self, key: &[u8]) -> Option<Versioned>;
    /// Whether `txn` taking `key` in `mode` conflicts with a prepared
    /// transaction's lock.
    fn lock_conflict(&self, key: &[u8], mode: LockMode, txn: TxnId) -> bool;
}

/// Executes `op` as log entry `index` against `state`. Pure: the caller
/// decides where the writes go. `txn` names the transaction a `Commit` is.
pub fn execute(op: &Op, index: Index, txn: TxnId, state: &impl ExecState) -> (OpResult, Vec<Write>) {
    match op {
        Op::Commit(req) => {
            let (outcome, writes) = execute_commit(req, index, txn, state);
            (OpResult::Txn(outcome), writes)
        }
        // Never logged: the coordinator answers it (see `txn::coordinator`),
        // and the leader a scan (`replica::scan`). Anything else a faulty
        // peer logs is answered the same way by every member, never executed.
        Op::TxnStatus { .. } | Op::Scan { .. } => {
            let reason = AbortReason::Refused { reason: "a status query is not executed".into() };
            (OpResult::Txn(TxnOutcome::Aborted { reason }), Vec::new())
        }
        op => execute_kv(op, index, state.get(op.key().expect("a single-key operation")).as_ref()),
    }
}

/// Commits a transaction that touches one group only, in one step: if every
/// check holds and no key is locked, every write takes effect at `index`.
pub fn execute_commit(req: &TxnRequest, index: Index, txn: TxnId, state: &impl ExecState) -> (TxnOutcome, Vec<Write>) {
    if let Err(reason) = validate_part(&req.checks, &req.writes, &req.reads, txn, state) {
        return (TxnOutcome::Aborted { reason }, Vec::new());
    }
    let writes = req.writes.iter().map(|w| w.at(index)).collect();
    let versions = req.writes.iter().map(|w| (w.key.clone(), index)).collect();
    let reads = req.reads.iter().map(|k| (k.clone(), state.get(k))).collect();
    (TxnOutcome::Committed { versions, reads }, writes)
}

/// Whether `txn` may commit (or prepare) these checks and writes now: no
/// key is locked against it, and every checked key is at its version.
pub fn validate_part(
    checks: &[Check],
    writes: &[TxnWrite],
    reads: &[Key],
    txn: TxnId,
    state: &impl ExecState,
) -> Result<(), AbortReason> {
    for (key, mode) in lock_modes(checks, writes, reads) {
        if state.lock_conflict(key, mode, txn) {
            return Err(AbortReason::Locked { key: key.to_vec() });
        }
    }
    for c in checks {
        let actual = state.get(&c.key).map_or(0, |v| v.version);
        if actual != c.version {
            return Err(AbortReason::VersionChanged { key: c.key.clone(), expected: c.version, actual });
        }
    }
    Ok(())
}

/// Executes an operation on one key as log entry `index` against `current`
/// (the key's value as the entry will find it).
fn execute_kv(op: &Op, index: Index, current: Option<&Versioned>) -> (OpResult, Vec<Write>) {
    match op {
        Op::Commit(_) | Op::TxnStatus { .. } | Op::Scan { .. } => {
            unreachable!("execute routes transaction operations elsewhere")
        }
        Op::Get { .. } => (OpResult::Value(current.cloned()), Vec::new()),
        Op::Put { key, value } => (
            OpResult::Written { version: index },
            vec![Write::Put { key: key.clone(), value: value.clone(), version: index }],
        ),
        Op::Delete { key } => {
            let existed = current.is_some();
            let effects = if existed { vec![Write::Delete { key: key.clone() }] } else { Vec::new() };
            (OpResult::Deleted { existed }, effects)
        }
        Op::Cas { key, expected_version, value } => {
            let current_version = current.map_or(0, |v| v.version);
            if current_version != *expected_version {
                return (OpResult::CasFailed { current_version }, Vec::new());
            }
            (
                OpResult::Written { version: index },
                vec![Write::Put { key: key.clone(), value: value.clone(), version: index }],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str, version: u64) -> Write {
        Write::Put { key: k.into(), value: v.into(), version }
    }

    #[test]
    fn cas_compares_versions() {
        let cur = Versioned { value: b"v".to_vec(), version: 7 };
        let op = Op::Cas { key: b"k".to_vec(), expected_version: 6, value: b"n".to_vec() };
        assert_eq!(execute_kv(&op, 9, Some(&cur)), (OpResult::CasFailed { current_version: 7 }, vec![]));
        let op = Op::Cas { key: b"k".to_vec(), expected_version: 7, value: b"n".to_vec() };
        let (r, w) = execute_kv(&op, 9, Some(&cur));
        assert_eq!(r, OpResult::Written { version: 9 });
        assert_eq!(w, vec![put("k", "n", 9)]);
        let op = Op::Cas { key: b"k".to_vec(), expected_version: 0, value: b"n".to_vec() };
        assert_eq!(execute_kv(&op, 9, None).0, OpResult::Written { version: 9 });
    }

    #[test]
    fn oversize_input_is_refused() {
        let op = Op::Put { key: vec![0; MAX_KEY_BYTES + 1], value: vec![] };
        assert!(op.validate().is_err());
        let op = Op::Put { key: vec![0; 4], value: vec![0; MAX_VALUE_BYTES + 1] };
        assert!(op.validate().is_err());
        let op = Op::Put { key: vec![0; MAX_KEY_BYTES], value: vec![0; MAX_VALUE_BYTES] };
        assert!(op.validate().is_ok());
    }
}
