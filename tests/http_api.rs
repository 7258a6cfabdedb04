//! The HTTP API of a node (`--http-listen`), driven with curl against a
//! TLS demo: HTTPS with the client certificate, refused without one; every
//! route, the conditional writes, the limits and the errors in the CLI's
//! words; the served OpenAPI description is the committed one.

mod http_common;

use http_common::Demo;

/// Node N's HTTP port is 8100 + this + N (peers 7000+, clients 7100+).
const OFFSET: u16 = 630;

#[test]
fn the_http_api_reads_writes_and_commits_like_the_cli() {
    let demo = Demo::start(OFFSET, false);
    let (n1, n2) = (demo.url(1), demo.url(2));

    // A plain PUT, read back from another node; the version in both headers.
    let put = demo.curl(&["-X", "PUT", "--data-binary", "hello", &format!("{n1}/v1/kv/greeting")]);
    assert_eq!(put.status, 200, "{}", put.text());
    let v1: u64 = put.json()["version"].as_u64().unwrap();
    assert_eq!(put.header("x-pactdb-version"), Some(v1.to_string().as_str()));
    assert_eq!(put.header("etag"), Some(format!("\"{v1}\"").as_str()));
    let get = demo.curl(&[&format!("{n2}/v1/kv/greeting")]);
    assert_eq!((get.status, get.text().as_str()), (200, "hello"));
    assert_eq!(get.header("content-type"), Some("application/octet-stream"));
    assert_eq!(get.header("etag"), Some(format!("\"{v1}\"").as_str()));
    // The CLI sees the same value and version.
    let cli = demo.pactdb(&["get", "--json", "greeting"]);
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!((cli["value"].as_str(), cli["version"].as_u64()), (Some("hello"), Some(v1)));

    // Reads at the CLI's consistencies; a bad one is refused with its words.
    for c in ["linearizable", "session", "stale", "stale=5000"] {
        let r = demo.curl(&[&format!("{n1}/v1/kv/greeting?consistency={c}")]);
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "consistency {c}");
    }
    let bad = demo.curl(&[&format!("{n1}/v1/kv/greeting?consistency=eventual")]);
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "unknown consistency `eventual`: use linearizable, session, stale or stale=MS");

    // If-Match: a compare-and-set; a stale version gets 412 and the current one.
    let stale = demo.curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("If-Match: \"{}\"", v1 + 100),
        "--data-binary",
        "nope",
        &format!("{n1}/v1/kv/greeting"),
    ]);
    assert_eq!(stale.status, 412, "{}", stale.text());
    assert_eq!(stale.json()["error"], format!("version mismatch: expected {}, current {v1}", v1 + 100));
    assert_eq!(stale.json()["version"], v1);
    assert_eq!(stale.header("etag"), Some(format!("\"{v1}\"").as_str()));
    let cas = demo.curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("If-Match: \"{v1}\""),
        "--data-binary",
        "bonjour",
        &format!("{n2}/v1/kv/greeting"),
    ]);
    assert_eq!(cas.status, 200, "{}", cas.text());
    let v2 = cas.json()["version"].as_u64().unwrap();
    assert!(v2 > v1);
    // If-None-Match: * writes only a key that does not exist.
    let exists =
        demo.curl(&["-X", "PUT", "-H", "If-None-Match: *", "--data-binary", "x", &format!("{n1}/v1/kv/greeting")]);
    assert_eq!((exists.status, exists.json()["version"].as_u64()), (412, Some(v2)));
    let fresh = demo.curl(&["-X", "PUT", "-H", "If-None-Match: *", "--data-binary", "x", &format!("{n1}/v1/kv/fresh")]);
    assert_eq!(fresh.status, 200, "{}", fresh.text());

    // Keys are percent-decoded path segments: `/` and any byte.
    let odd = demo.curl(&["-X", "PUT", "--data-binary", "v", &format!("{n1}/v1/kv/a%2Fb%20c")]);
    assert_eq!(odd.status, 200, "{}", odd.text());
    let cli = demo.pactdb(&["get", "a/b c"]);
    assert_eq!(cli.status.code(), Some(0), "{}", String::from_utf8_lossy(&cli.stderr));
    // Binary values come back byte for byte.
    let bin = demo.path().join("bin");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(&bin, &bytes).unwrap();
    let put = demo.curl(&["-X", "PUT", "--data-binary", &format!("@{}", bin.display()), &format!("{n1}/v1/kv/bin")]);
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(demo.curl(&[&format!("{n2}/v1/kv/bin")]).body, bytes);

    // Limits, in the CLI's words.
    let long_key = "k".repeat(5000);
    let r = demo.curl(&[&format!("{n1}/v1/kv/{long_key}")]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("key of 5000 bytes exceeds the limit of 4096 bytes"))
    );
    let big = demo.path().join("big");
    std::fs::write(&big, vec![b'v'; 1024 * 1024 + 1]).unwrap();
    let r = demo.curl(&["-X", "PUT", "--data-binary", &format!("@{}", big.display()), &format!("{n1}/v1/kv/big")]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "value of 1048577 bytes exceeds the limit of 1048576 bytes");
    let huge = demo.path().join("huge");
    std::fs::write(&huge, vec![b'v'; 3 * 1024 * 1024]).unwrap();
    let r = demo.curl(&["-X", "PUT", "--data-binary", &format!("@{}", huge.display()), &format!("{n1}/v1/kv/big")]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(demo.curl(&[&format!("{n1}/v1/kv/big")]).status, 404, "nothing was written");

    // DELETE, then 404 with the CLI's words.
    let del = demo.curl(&["-X", "DELETE", &format!("{n1}/v1/kv/fresh")]);
    assert_eq!((del.status, del.json()["deleted"].as_bool()), (200, Some(true)));
    let del = demo.curl(&["-X", "DELETE", &format!("{n1}/v1/kv/fresh")]);
    assert_eq!((del.status, del.json()["error"].as_str()), (404, Some("key `fresh` not found")));
    let get = demo.curl(&[&format!("{n1}/v1/kv/fresh")]);
    assert_eq!((get.status, get.json()["version"].as_u64()), (404, Some(0)));
    assert_eq!((get.header("x-pactdb-version"), get.header("etag")), (Some("0"), None));

    // A transaction: reads, a compare, writes across groups, atomically.
    let txn = |body: &str| {
        demo.curl(&["-X", "POST", "-H", "content-type: application/json", "-d", body, &format!("{n1}/v1/txn")])
    };
    let ok =
        txn(r#"{"if": {"t1": 0}, "ops": [{"op": "get", "key": "greeting"}, {"op": "put", "key": "t1", "value": "a"},
            {"op": "put", "key": "t2", "value_base64": "/wA="}, {"op": "delete", "key": "bin"}]}"#);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let j = ok.json();
    assert_eq!(j["outcome"], "committed");
    assert_eq!(j["reads"]["greeting"]["value"], "bonjour");
    assert_eq!(j["reads"]["greeting"]["version"], v2);
    for k in ["t1", "t2", "bin"] {
        assert!(j["versions"][k].as_u64().is_some_and(|v| v > 0), "{j}");
    }
    let t2 = demo.pactdb(&["get", "--json", "t2"]);
    let t2: serde_json::Value = serde_json::from_slice(&t2.stdout).unwrap();
    assert_eq!(t2["value_base64"], "/wA=");
    assert_eq!(demo.curl(&[&format!("{n2}/v1/kv/bin")]).status, 404);
    // The compare fails now: aborted, nothing written.
    let aborted = txn(r#"{"if": {"t1": 0}, "ops": [{"op": "put", "key": "t3", "value": "b"}]}"#);
    assert_eq!(aborted.status, 409, "{}", aborted.text());
    assert_eq!(aborted.json()["outcome"], "aborted");
    assert!(aborted.json()["reason"].as_str().unwrap().contains("t1"), "{}", aborted.text());
    assert_eq!(demo.curl(&[&format!("{n1}/v1/kv/t3")]).status, 404);
    let bad = txn(r#"{"ops": [{"op": "frob", "key": "a"}]}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("not valid JSON of the expected shape"));

    // Status: the same JSON as `pactdb status --json`.
    let st = demo.curl(&[&format!("{n2}/v1/status")]);
    assert_eq!(st.status, 200);
    let st = st.json();
    let cli: serde_json::Value = serde_json::from_slice(&demo.pactdb(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["cluster"], cli["cluster"]);
    assert_eq!(st["groups"].as_array().map(Vec::len), Some(3));
    for (a, b) in st["groups"].as_array().unwrap().iter().zip(cli["groups"].as_array().unwrap()) {
        for f in ["group", "mode", "epoch", "leader", "members"] {
            assert_eq!(a[f], b[f], "{f}");
        }
    }
    assert_eq!(st["nodes"].as_array().map(Vec::len), Some(3));
    assert!(st["nodes"][0]["replicas"][0]["sessions"].is_u64());

    // The OpenAPI description served is the one committed.
    let served = demo.curl(&[&format!("{n1}/v1/openapi.json")]);
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(served.json(), committed);
    // An unknown route: JSON error.
    let none = demo.curl(&[&format!("{n1}/v2/nothing")]);
    assert_eq!(none.status, 404);
    assert!(none.json()["error"].as_str().unwrap().contains("no route GET /v2/nothing"));
    // The web view is served at /.
    let page = demo.curl(&[&format!("{n1}/")]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("pactdb cluster"));
}

#[test]
fn https_requires_a_client_certificate_of_the_cluster_ca() {
    let demo = Demo::start(OFFSET + 10, false);
    let url = format!("{}/v1/status", demo.url(1));
    let ca = demo.client_certs().join("ca.crt");
    // No client certificate: the handshake is refused.
    let mut cmd = http_common::curl_command();
    let r = http_common::Curl::run(cmd.args(["--cacert", &ca.to_string_lossy(), &url]));
    assert_eq!(r.status, 0, "served without a client certificate: {}", r.text());
    assert!(r.stderr.contains("certificate required") || r.stderr.contains("alert"), "{}", r.stderr);
    // Plain HTTP to the HTTPS port: nothing served.
    let mut cmd = http_common::curl_command();
    let r = http_common::Curl::run(cmd.arg(url.replace("https://", "http://")));
    assert_ne!(r.status, 200, "served plaintext: {}", r.text());
    // A certificate of another CA: refused.
    let other = demo.path().join("other-ca");
    let o = other.to_string_lossy().to_string();
    for args in [
        vec!["certs", "init", "--dir", &o],
        vec!["certs", "issue", "client", "--dir", &o, "--out", &format!("{o}/client")],
    ] {
        assert!(demo.pactdb(&args).status.success());
    }
    let mut cmd = http_common::curl_command();
    let r = http_common::Curl::run(cmd.args([
        "--cacert",
        &ca.to_string_lossy(),
        "--cert",
        &format!("{o}/client/client.crt"),
        "--key",
        &format!("{o}/client/client.key"),
        &url,
    ]));
    assert_eq!(r.status, 0, "served a client of another CA: {}", r.text());
    // With the demo's client certificate: served.
    assert_eq!(demo.curl(&[&url]).status, 200);
}

/// Kills the node it holds however the test ends.
struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn before_the_cluster_is_bootstrapped_the_api_answers_503_and_metrics_still_serve() {
    let dir = tempfile::tempdir().unwrap();
    let port = |base: u16| (base + OFFSET + 20 + 1).to_string();
    let (peer, client, http) = (port(7000), port(7100), port(8100));
    let _node = Node(
        std::process::Command::new(env!("CARGO_BIN_EXE_pactdb"))
            .args(["node", "--insecure", "--id", "1", "--data-dir", &dir.path().to_string_lossy()])
            .args(["--listen", &format!("127.0.0.1:{peer}"), "--client-listen", &format!("127.0.0.1:{client}")])
            .args(["--peers", &format!("1=127.0.0.1:{peer}"), "--http-listen", &format!("127.0.0.1:{http}")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("node.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(format!("127.0.0.1:{http}")).is_err() {
        assert!(std::time::Instant::now() < deadline, "the node's HTTP port did not open");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut cmd = http_common::curl_command();
    let r = http_common::Curl::run(cmd.arg(format!("http://127.0.0.1:{http}/v1/kv/a")));
    assert_eq!(r.status, 503, "{}", r.text());
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(e.starts_with("the cluster is not ready") && e.contains("not bootstrapped"), "{e}");
    let mut cmd = http_common::curl_command();
    let r = http_common::Curl::run(cmd.arg(format!("http://127.0.0.1:{http}/v1/status")));
    assert_eq!(r.status, 503, "{}", r.text());
    let mut cmd = http_common::curl_command();
    let r = http_common::Curl::run(cmd.arg(format!("http://127.0.0.1:{http}/metrics")));
    assert_eq!(r.status, 200);
    assert!(r.text().contains("pactdb_node_up 1"), "{}", r.text());
}
