//! The request vocabulary of the key-value state machine: the operations a
//! client asks for, what they answer, and `execute`, the pure function that
//! turns one into the other plus the writes it makes.
//!
//! It owns no state. It must never look at anything but its arguments: the
//! passive primary runs it against its overlay, every active member against
//! its applied state, and both must get the same answer from the same input.

use crate::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::state::kv::{Key, Value, Versioned, Write};
use crate::types::Index;
use serde::{Deserialize, Serialize};

/// A key or value over its limit. The wire turns it into a `ClientError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitError {
    KeyTooLarge { len: usize, max: usize },
    ValueTooLarge { len: usize, max: usize },
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

/// A client operation on one key.
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
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }

    /// Checks the limits every operation must meet before it is executed.
    pub fn validate(&self) -> Result<(), LimitError> {
        check_key(self.key())?;
        if let Op::Put { value, .. } | Op::Cas { value, .. } = self {
            check_value(value)?;
        }
        Ok(())
    }
}

/// The outcome of an operation, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Value(Option<Versioned>),
    Written { version: u64 },
    Deleted { existed: bool },
    CasFailed { current_version: u64 },
}

/// Executes `op` as log entry `index` against `current` (the key's value as
/// the primary sees it, including uncommitted writes). Pure: the caller
/// decides where the effects go.
pub fn execute(op: &Op, index: Index, current: Option<&Versioned>) -> (OpResult, Vec<Write>) {
    match op {
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
        assert_eq!(execute(&op, 9, Some(&cur)), (OpResult::CasFailed { current_version: 7 }, vec![]));
        let op = Op::Cas { key: b"k".to_vec(), expected_version: 7, value: b"n".to_vec() };
        let (r, w) = execute(&op, 9, Some(&cur));
        assert_eq!(r, OpResult::Written { version: 9 });
        assert_eq!(w, vec![put("k", "n", 9)]);
        let op = Op::Cas { key: b"k".to_vec(), expected_version: 0, value: b"n".to_vec() };
        assert_eq!(execute(&op, 9, None).0, OpResult::Written { version: 9 });
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
