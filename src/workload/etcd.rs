//! The etcd driver of `pactdb workload`: a minimal etcd v3 client that makes
//! unary gRPC calls (`KV.Put`, `KV.Range`, `KV.Txn`) directly over HTTP/2
//! (the `h2` crate) with hand-encoded protobuf, so building it needs no
//! `protoc`. Field numbers are those of etcd's `rpc.proto` and `kv.proto`
//! (`etcdserverpb`, `mvccpb`), quoted where they are used.
//!
//! Like etcd's own clients, one connection multiplexes every request its
//! callers have outstanding (one HTTP/2 stream each). Reads are etcd's
//! default: linearizable.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;
use tokio::net::TcpStream;

/// One HTTP/2 connection to one etcd member. Cheap to clone.
#[derive(Clone)]
pub struct Conn {
    send: h2::client::SendRequest<Bytes>,
    base: String,
}

/// Connects to `addr` (`HOST:PORT` of an etcd client URL, plain http).
pub async fn connect(addr: &str) -> anyhow::Result<Conn> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to etcd at {addr} timed out"))??;
    tcp.set_nodelay(true)?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .handshake::<_, Bytes>(tcp)
        .await?;
    tokio::spawn(async move {
        // Ends when the connection closes; requests then fail and are counted.
        let _ = connection.await;
    });
    Ok(Conn { send, base: format!("http://{addr}") })
}

impl Conn {
    /// `KV.Put`: writes `value` under `key`.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let mut msg = Vec::with_capacity(key.len() + value.len() + 8);
        put_bytes_field(&mut msg, 1, key);
        put_bytes_field(&mut msg, 2, value);
        self.unary("Put", &msg).await.map(|_| ())
    }

    /// `KV.Range` of one key: its value, if it exists.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, String> {
        let mut msg = Vec::with_capacity(key.len() + 4);
        put_bytes_field(&mut msg, 1, key);
        let reply = self.unary("Range", &msg).await?;
        range_value(&reply)
    }

    /// `KV.Range` of one key: its value and `mod_revision`, if it exists.
    pub async fn get_kv(&self, key: &[u8]) -> Result<Option<Kv>, String> {
        let reply = self.unary("Range", &encode_range(key, None)).await?;
        Ok(range_kvs(&reply)?.into_iter().next())
    }

    /// `KV.Range` over `[key, range_end)`: every pair, in key order, as of
    /// one revision (a range is a consistent snapshot in etcd).
    pub async fn range(&self, key: &[u8], range_end: &[u8]) -> Result<Vec<Kv>, String> {
        let reply = self.unary("Range", &encode_range(key, Some(range_end))).await?;
        range_kvs(&reply)
    }

    /// `KV.Txn`: if every key's `mod_revision` is still the one given (0:
    /// the key must not exist), puts every `(key, value)`. `Ok(true)` if it
    /// did; `Ok(false)` if a compare failed and nothing was written.
    pub async fn put_if_unchanged(&self, compares: &[(&[u8], i64)], puts: &[(&[u8], &[u8])]) -> Result<bool, String> {
        let reply = self.unary("Txn", &encode_txn(compares, puts)).await?;
        txn_succeeded(&reply)
    }

    /// One unary call of `/etcdserverpb.KV/{method}`; returns the reply message.
    async fn unary(&self, method: &str, msg: &[u8]) -> Result<Bytes, String> {
        let mut body = BytesMut::with_capacity(5 + msg.len());
        body.put_u8(0);
        body.put_u32(msg.len() as u32);
        body.extend_from_slice(msg);
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{}/etcdserverpb.KV/{method}", self.base))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| format!("building a request: {e}"))?;
        let mut send = self.send.clone().ready().await.map_err(|e| format!("etcd connection: {e}"))?;
        let (response, mut stream) = send.send_request(req, false).map_err(|e| format!("etcd send: {e}"))?;
        stream.send_data(body.freeze(), true).map_err(|e| format!("etcd send: {e}"))?;
        let response = response.await.map_err(|e| format!("etcd response: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("etcd answered HTTP {}", response.status()));
        }
        // A "trailers-only" answer carries the gRPC status in its headers.
        if let Some(status) = grpc_status(response.headers()) {
            if status != "0" {
                return Err(grpc_error(&status, response.headers()));
            }
        }
        let mut body = response.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("etcd response body: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(|e| format!("etcd response trailers: {e}"))?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(status) if status == "0" => {}
            Some(status) => return Err(grpc_error(&status, trailers.as_ref().expect("trailers are present"))),
            None if data.is_empty() => return Err("etcd answered without a gRPC status".into()),
            None => {}
        }
        unframe(data.freeze())
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    headers.get("grpc-status").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn grpc_error(status: &str, headers: &http::HeaderMap) -> String {
    let message =
        headers.get("grpc-message").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    format!("etcd gRPC status {status}: {message}")
}

/// The one message of a gRPC reply body: `[u8 compressed = 0][u32 len][msg]`.
fn unframe(data: Bytes) -> Result<Bytes, String> {
    if data.len() < 5 {
        return Err(format!("etcd reply of {} bytes is shorter than a gRPC frame header", data.len()));
    }
    if data[0] != 0 {
        return Err("etcd sent a compressed reply".into());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() < 5 + len {
        return Err(format!("etcd reply frame of {len} bytes is cut at {}", data.len() - 5));
    }
    Ok(data.slice(5..5 + len))
}

/// One key of a range reply (`mvccpb.KeyValue`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: Bytes,
    pub value: Bytes,
    /// The revision of the key's last change: what a `Txn` compares.
    pub mod_revision: i64,
}

/// A `RangeRequest`: `key` = 1, `range_end` = 2 (none: the one key).
fn encode_range(key: &[u8], range_end: Option<&[u8]>) -> Vec<u8> {
    let mut msg = Vec::with_capacity(key.len() + range_end.map_or(0, <[u8]>::len) + 8);
    put_bytes_field(&mut msg, 1, key);
    if let Some(end) = range_end {
        put_bytes_field(&mut msg, 2, end);
    }
    msg
}

/// A `TxnRequest` (`compare` = 1, `success` = 2, no `failure` ops):
/// one `Compare` per key that its `mod_revision` is EQUAL to the one given,
/// and one `RequestOp` with a `request_put` per write.
fn encode_txn(compares: &[(&[u8], i64)], puts: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut msg = Vec::new();
    let mut inner = Vec::new();
    for (key, rev) in compares {
        // Compare: `result` = 1 (EQUAL is 0, proto3's default, so it is not
        // sent), `target` = 2 (MOD = 2), `key` = 3, `mod_revision` = 6.
        // `mod_revision` is a member of the `target_union` oneof, which is
        // sent even when it is 0, as etcd's Go client does.
        inner.clear();
        put_varint_field(&mut inner, 2, 2);
        put_bytes_field(&mut inner, 3, key);
        put_varint_field(&mut inner, 6, *rev as u64);
        put_bytes_field(&mut msg, 1, &inner);
    }
    let mut put = Vec::new();
    for (key, value) in puts {
        // RequestOp: `request_put` = 2, a PutRequest (`key` = 1, `value` = 2).
        put.clear();
        put_bytes_field(&mut put, 1, key);
        put_bytes_field(&mut put, 2, value);
        inner.clear();
        put_bytes_field(&mut inner, 2, &put);
        put_bytes_field(&mut msg, 2, &inner);
    }
    msg
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A length-delimited protobuf field (wire type 2).
fn put_bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    put_varint(buf, (u64::from(field) << 3) | 2);
    put_varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// A varint protobuf field (wire type 0).
fn put_varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(buf, u64::from(field) << 3);
    put_varint(buf, v);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("protobuf: truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("protobuf: varint too long".into())
}

/// Every field of a message as `(field number, wire type, payload)`; varint
/// and fixed payloads are returned as their raw bytes.
fn fields(msg: &Bytes) -> Result<Vec<(u32, u8, Bytes)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let tag = get_varint(msg, &mut pos)?;
        let (field, wire) = ((tag >> 3) as u32, (tag & 7) as u8);
        let start = pos;
        let end = match wire {
            0 => {
                get_varint(msg, &mut pos)?;
                pos
            }
            1 => pos + 8,
            2 => {
                let len = get_varint(msg, &mut pos)? as usize;
                pos.checked_add(len).ok_or("protobuf: length overflows")?
            }
            5 => pos + 4,
            w => return Err(format!("protobuf: unsupported wire type {w}")),
        };
        if end > msg.len() {
            return Err("protobuf: truncated field".into());
        }
        let payload = if wire == 2 { msg.slice(pos..end) } else { msg.slice(start..end) };
        out.push((field, wire, payload));
        pos = end;
    }
    Ok(out)
}

/// The value of the first key in a `RangeResponse` (`kvs` = field 2, a
/// `KeyValue` whose `value` is field 5), or `None` when it has no keys.
fn range_value(reply: &Bytes) -> Result<Option<Bytes>, String> {
    for (field, wire, kv) in fields(reply)? {
        if field == 2 && wire == 2 {
            let value = fields(&kv)?.into_iter().find(|(f, w, _)| *f == 5 && *w == 2).map(|(_, _, v)| v);
            return Ok(Some(value.unwrap_or_default()));
        }
    }
    Ok(None)
}

/// Every `KeyValue` of a `RangeResponse` (`kvs` = 2; in a KeyValue `key`
/// = 1, `mod_revision` = 3, `value` = 5).
fn range_kvs(reply: &Bytes) -> Result<Vec<Kv>, String> {
    let mut out = Vec::new();
    for (field, wire, kv) in fields(reply)? {
        if field != 2 || wire != 2 {
            continue;
        }
        let mut one = Kv { key: Bytes::new(), value: Bytes::new(), mod_revision: 0 };
        for (f, w, payload) in fields(&kv)? {
            match (f, w) {
                (1, 2) => one.key = payload,
                (3, 0) => one.mod_revision = get_varint(&payload, &mut 0)? as i64,
                (5, 2) => one.value = payload,
                _ => {}
            }
        }
        out.push(one);
    }
    Ok(out)
}

/// `succeeded` (= 2) of a `TxnResponse`; absent means false (proto3 does
/// not send a default value).
fn txn_succeeded(reply: &Bytes) -> Result<bool, String> {
    let mut succeeded = false;
    for (field, wire, payload) in fields(reply)? {
        if field == 2 && wire == 0 {
            succeeded = get_varint(&payload, &mut 0)? != 0;
        }
    }
    Ok(succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_put_request_as_protobuf() {
        let mut msg = Vec::new();
        put_bytes_field(&mut msg, 1, b"k1");
        put_bytes_field(&mut msg, 2, &[7u8; 200]);
        assert_eq!(&msg[..4], &[0x0a, 2, b'k', b'1']);
        // 200 needs a two-byte varint: 0xc8 0x01.
        assert_eq!(&msg[4..7], &[0x12, 0xc8, 0x01]);
        assert_eq!(msg.len(), 4 + 3 + 200);
    }

    #[test]
    fn decodes_the_value_of_a_range_response() {
        let mut kv = Vec::new();
        put_bytes_field(&mut kv, 1, b"key");
        put_varint(&mut kv, 2 << 3);
        put_varint(&mut kv, 300);
        put_bytes_field(&mut kv, 5, b"value");
        let mut header = Vec::new();
        put_varint(&mut header, 3 << 3);
        put_varint(&mut header, 12345);
        let mut reply = Vec::new();
        put_bytes_field(&mut reply, 1, &header);
        put_bytes_field(&mut reply, 2, &kv);
        put_varint(&mut reply, 4 << 3);
        put_varint(&mut reply, 1);
        assert_eq!(range_value(&Bytes::from(reply)).unwrap().as_deref(), Some(&b"value"[..]));
        let mut empty = Vec::new();
        put_bytes_field(&mut empty, 1, &header);
        assert_eq!(range_value(&Bytes::from(empty)).unwrap(), None);
    }

    #[test]
    fn unframes_a_grpc_message_and_rejects_short_ones() {
        let framed = Bytes::from_static(&[0, 0, 0, 0, 2, 9, 9]);
        assert_eq!(&unframe(framed).unwrap()[..], &[9, 9]);
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 3, 9])).is_err());
        assert!(unframe(Bytes::from_static(&[0, 0])).is_err());
    }

    #[test]
    fn encodes_a_txn_comparing_mod_revisions_and_putting_on_success() {
        let msg = encode_txn(&[(b"a", 300), (b"b", 0)], &[(b"a", b"7"), (b"b", b"")]);
        let want: Vec<u8> = [
            // compare 1: Compare{target: MOD, key: "a", mod_revision: 300}
            &[0x0a, 8, 0x10, 2, 0x1a, 1, b'a', 0x30, 0xac, 0x02][..],
            // compare 2: mod_revision 0 is sent (a oneof member): key "b" must not exist
            &[0x0a, 7, 0x10, 2, 0x1a, 1, b'b', 0x30, 0][..],
            // success 1: RequestOp{request_put: PutRequest{key: "a", value: "7"}}
            &[0x12, 8, 0x12, 6, 0x0a, 1, b'a', 0x12, 1, b'7'][..],
            // success 2: an empty value is still sent as a field
            &[0x12, 7, 0x12, 5, 0x0a, 1, b'b', 0x12, 0][..],
        ]
        .concat();
        assert_eq!(msg, want);
        assert!(encode_txn(&[], &[]).is_empty());
    }

    #[test]
    fn encodes_a_range_with_and_without_an_end() {
        assert_eq!(encode_range(b"k", None), vec![0x0a, 1, b'k']);
        assert_eq!(encode_range(b"acct-", Some(b"acct.")), [&[0x0a, 5][..], b"acct-", &[0x12, 5], b"acct."].concat());
    }

    #[test]
    fn decodes_every_pair_of_a_range_response_with_its_mod_revision() {
        let kv = |key: &[u8], rev: u64, value: &[u8]| {
            let mut kv = Vec::new();
            put_bytes_field(&mut kv, 1, key);
            put_varint_field(&mut kv, 2, 5); // create_revision: skipped
            put_varint_field(&mut kv, 3, rev);
            put_varint_field(&mut kv, 4, 9); // version: skipped
            put_bytes_field(&mut kv, 5, value);
            kv
        };
        let mut header = Vec::new();
        put_varint_field(&mut header, 3, 12345);
        let mut reply = Vec::new();
        put_bytes_field(&mut reply, 1, &header);
        put_bytes_field(&mut reply, 2, &kv(b"acct-000001", 70_000, b"990"));
        put_bytes_field(&mut reply, 2, &kv(b"acct-000002", 3, b"1010"));
        put_varint_field(&mut reply, 4, 2);
        let kvs = range_kvs(&Bytes::from(reply)).unwrap();
        assert_eq!(
            kvs,
            vec![
                Kv { key: Bytes::from_static(b"acct-000001"), value: Bytes::from_static(b"990"), mod_revision: 70_000 },
                Kv { key: Bytes::from_static(b"acct-000002"), value: Bytes::from_static(b"1010"), mod_revision: 3 },
            ]
        );
        let mut empty = Vec::new();
        put_bytes_field(&mut empty, 1, &header);
        assert!(range_kvs(&Bytes::from(empty)).unwrap().is_empty());
    }

    #[test]
    fn reads_whether_a_txn_succeeded() {
        let mut header = Vec::new();
        put_varint_field(&mut header, 3, 77);
        let mut ok = Vec::new();
        put_bytes_field(&mut ok, 1, &header);
        put_varint_field(&mut ok, 2, 1);
        put_bytes_field(&mut ok, 3, &[0x12, 0]); // responses: one ResponseOp{response_put}
        assert!(txn_succeeded(&Bytes::from(ok)).unwrap());
        // A failed compare: `succeeded` is false, which proto3 leaves out.
        let mut failed = Vec::new();
        put_bytes_field(&mut failed, 1, &header);
        assert!(!txn_succeeded(&Bytes::from(failed)).unwrap());
        assert!(txn_succeeded(&Bytes::from_static(&[0x10])).is_err(), "a truncated varint is refused");
    }
}
