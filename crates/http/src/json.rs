//! How a value is written in JSON, the one form `pactdb get --json`, `pactdb
//! txn --json` and the HTTP API share: the text if it is UTF-8 (`value`),
//! else standard base64 with padding (`value_base64`, the encoding etcd's
//! JSON uses), so that `value` is always the exact text or null.
//!
//! It must never guess: bytes that are not UTF-8 are never written lossily.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;

/// A value in JSON (flattened into the object that holds it).
#[derive(Serialize, Debug, PartialEq, Eq)]
pub enum JsonValue {
    #[serde(rename = "value")]
    Text(Option<String>),
    #[serde(rename = "value_base64")]
    Base64(String),
}

impl JsonValue {
    /// `None`: a missing key (`"value": null`).
    pub fn new(value: Option<&[u8]>) -> JsonValue {
        match value {
            None => JsonValue::Text(None),
            Some(v) => match std::str::from_utf8(v) {
                Ok(s) => JsonValue::Text(Some(s.to_string())),
                Err(_) => JsonValue::Base64(STANDARD.encode(v)),
            },
        }
    }
}

/// The bytes of a `value_base64` field; `None` if it is not standard base64.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors_and_round_trips() {
        for (plain, encoded) in
            [("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(decode_base64(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(JsonValue::new(Some(&[0xff, 0xfe, 0x00])), JsonValue::Base64("//4A".into()));
        let bytes: Vec<u8> = (0..=255).collect();
        let JsonValue::Base64(encoded) = JsonValue::new(Some(&bytes)) else { panic!("not UTF-8: base64") };
        assert_eq!(decode_base64(&encoded).unwrap(), bytes);
        assert!(decode_base64("a b").is_none());
    }

    #[test]
    fn utf8_is_written_as_text_and_a_missing_key_as_null() {
        assert_eq!(serde_json::to_string(&JsonValue::new(Some(b"hi"))).unwrap(), r#"{"value":"hi"}"#);
        assert_eq!(serde_json::to_string(&JsonValue::new(None)).unwrap(), r#"{"value":null}"#);
        assert_eq!(serde_json::to_string(&JsonValue::new(Some(&[0xff]))).unwrap(), r#"{"value_base64":"/w=="}"#);
    }
}
