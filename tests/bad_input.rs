//! Bad input against real nodes: each gets a clear error (or, for a frame
//! the transport cannot parse, a closed connection and a log line), and the
//! cluster keeps serving and loses nothing. The nodes run with --insecure,
//! so that malformed frames reach the frame decoder rather than the TLS
//! handshake (tests/security.rs covers what TLS refuses).

mod common;

use common::TestCluster;
use pactdb_client::{Error, TxnError};
use pactdb_core::fe::FeError;
use pactdb_core::limits::{MAX_KEY_BYTES, MAX_TXN_KEYS, MAX_VALUE_BYTES};
use pactdb_core::state::op::Op;
use pactdb_core::state::txn::{TxnRequest, TxnWrite};
use pactdb_core::types::RequestId;
use pactdb_core::wire::{self, ClientError, ClientMsg, ClientReply, ClientRequest};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes and reports whether the node closed the connection.
async fn closed_after(addr: &str, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

fn frame(version: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(version);
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_loses_nothing() {
    let cluster = TestCluster::start(3, 3, &["--insecure"]).await;
    let client = cluster.client().await;
    for i in 0..100 {
        client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let node1 = cluster.nodes[&1].client.clone();
    let peer1 = cluster.nodes[&1].peer.clone();

    // An unknown wire version: the connection is closed, with a logged reason.
    let status = wire::encode(&ClientMsg::GetStatus);
    assert!(closed_after(&node1, &frame(9, &status)).await, "unknown version closes the connection");
    // A frame of format 1 (bincode), as a node or client not yet upgraded
    // sends it: refused the same way, and the log says what it was.
    assert!(closed_after(&node1, &frame(1, &status)).await, "a format-1 frame closes the connection");
    // A frame claiming 4 GiB: closed without allocating it.
    assert!(closed_after(&node1, &[0xff, 0xff, 0xff, 0xff, 1]).await, "oversize frame closes the connection");
    // The same on the peer port.
    assert!(closed_after(&peer1, &frame(7, b"junk")).await, "peer port refuses unknown versions too");

    // A well-framed message that does not decode: a clear protocol error.
    let mut s = pactdb_node::net::FramedConn::connect(&node1).await.unwrap();
    s.send(&[vec![0xee, 0xee, 0xee]]).await.unwrap();
    let mut buf = Vec::new();
    s.recv(&mut buf).await.unwrap();
    match wire::decode::<ClientReply>(&buf).unwrap() {
        ClientReply::ProtocolError { reason } => assert!(reason.contains("decode"), "{reason}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }

    // Oversize keys and values are refused with their limits.
    match client.put("k", vec![b'x'; MAX_VALUE_BYTES + 1]).await {
        Err(Error::Fe(FeError::Refused(ClientError::ValueTooLarge { len, max }))) => {
            assert_eq!((len, max), (MAX_VALUE_BYTES + 1, MAX_VALUE_BYTES))
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    match client.put(vec![b'k'; MAX_KEY_BYTES + 1], "v").await {
        Err(Error::Fe(FeError::Refused(ClientError::KeyTooLarge { .. }))) => {}
        other => panic!("expected KeyTooLarge, got {other:?}"),
    }
    // The largest allowed value is fine.
    client.put("big", vec![b'x'; MAX_VALUE_BYTES]).await.unwrap();

    // A request naming a stale epoch is answered with the current view. (A
    // view may change between reading it and sending; then ask again.)
    let key = cluster.key_in(0, "stale");
    let mut answered = false;
    for attempt in 0..20 {
        let view = cluster.view(0).await.unwrap();
        let leader = cluster.nodes[&view.leader].client.clone();
        let req = ClientRequest {
            id: RequestId { client: 42, session: 0, seq: attempt + 1 },
            group: 0,
            epoch: view.epoch - 1,
            op: Op::Put { key: key.clone().into_bytes(), value: b"v".to_vec() },
            consistency: Default::default(),
            after: 0,
            prev: 0,
        };
        match pactdb_client::call(&leader, &ClientMsg::Request(req), Duration::from_secs(5)).await.unwrap() {
            ClientReply::Response { result: Err(ClientError::StaleEpoch { view: current }), .. } => {
                assert!(current.epoch > view.epoch - 1, "the answer carries a newer view");
                answered = true;
                break;
            }
            ClientReply::Response { result: Err(ClientError::NotLeader { .. }), .. } => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("expected StaleEpoch, got {other:?}"),
        }
    }
    assert!(answered, "a stale-epoch request was answered with StaleEpoch");

    // Transactions: over a bound, empty, contradicting themselves, or reusing
    // a transaction id with other contents: each refused, nothing written.
    let (a, b) = (cluster.key_in(0, "txn"), cluster.key_in(1, "txn"));
    let too_many = (0..=MAX_TXN_KEYS).fold(client.txn(), |t, i| t.put(format!("many-{i}"), "x"));
    match too_many.commit().await {
        Err(TxnError::Other(Error::Fe(FeError::Refused(ClientError::InvalidTransaction { reason })))) => {
            assert!(reason.contains(&MAX_TXN_KEYS.to_string()), "{reason}")
        }
        other => panic!("expected InvalidTransaction, got {other:?}"),
    }
    assert_eq!(client.get("many-0").await.unwrap(), None);
    let first = client.txn().put(a.clone(), "first").put(b.clone(), "first").commit().await.expect("it commits");
    let txn = first.txn.expect("it ran");
    // The same transaction id, other contents, as a hand-written client
    // might send it: refused, and neither key changes.
    let reused = TxnRequest {
        checks: vec![],
        writes: vec![
            TxnWrite { key: a.clone().into_bytes(), value: Some(b"second".to_vec()) },
            TxnWrite { key: b.clone().into_bytes(), value: Some(b"second".to_vec()) },
        ],
        reads: vec![],
    };
    let mut refused = false;
    for _ in 0..20 {
        let view = cluster.view(0).await.unwrap();
        let leader = cluster.nodes[&view.leader].client.clone();
        let req = ClientRequest {
            id: txn.request_id(),
            group: 0,
            epoch: view.epoch,
            op: Op::Commit(reused.clone()),
            consistency: Default::default(),
            after: 0,
            prev: 0,
        };
        match pactdb_client::call(&leader, &ClientMsg::Request(req), Duration::from_secs(5)).await.unwrap() {
            ClientReply::Response { result: Err(ClientError::Malformed { reason }), .. } => {
                assert!(reason.contains("reused"), "{reason}");
                refused = true;
                break;
            }
            ClientReply::Response {
                result: Err(ClientError::NotLeader { .. } | ClientError::StaleEpoch { .. }),
                ..
            } => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("expected the reused id to be refused, got {other:?}"),
        }
    }
    assert!(refused, "a reused transaction id was refused");
    assert_eq!(client.get(a.clone()).await.unwrap().unwrap().value, b"first");
    assert_eq!(client.get(b.clone()).await.unwrap().unwrap().value, b"first");

    // The node said why it closed those connections.
    let log = cluster.log_of(1);
    assert!(log.contains("unknown wire version 9"), "the log names the bad version:\n{log}");
    assert!(log.contains("unknown wire version 1 (bincode"), "the log names the format-1 version:\n{log}");

    // Nothing was lost and the cluster still serves.
    for i in 0..100 {
        assert_eq!(client.get(format!("k{i}")).await.unwrap().unwrap().value, format!("v{i}").into_bytes());
    }
    client.put("after", "ok").await.unwrap();
    assert_eq!(client.get("after").await.unwrap().unwrap().value, b"ok");
}
