//! The routes: `/v1/kv/{key}` (GET, PUT, DELETE), `POST /v1/txn`,
//! `GET /v1/status`, `GET /v1/openapi.json`, `GET /metrics` and the web
//! view at `/`. Handlers are named after the request they answer.
//!
//! It owns the mapping between HTTP and the Front End: status codes,
//! headers, JSON shapes, and the checks made before anything is sent (sizes,
//! versions, consistency). Errors carry the CLI's words. It must never
//! buffer an unbounded body: every body is read with a limit.

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pactdb_client::{Client, ClientOptions, ClientSecurity, Consistency, Error, TxnError};
use pactdb_core::fe::FeError;
use pactdb_core::limits::{MAX_KEY_BYTES, MAX_TXN_BYTES, MAX_VALUE_BYTES};
use pactdb_core::wire::{ClientError, ClientMsg, ClientReply};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::json::JsonValue;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A PUT body beyond the value limit by more than this is not read at all.
pub const BODY_OVERHEAD_BYTES: usize = 64 * 1024;
/// The largest `POST /v1/txn` body: a transaction's own bound, doubled for
/// JSON's escaping and base64, plus overhead.
pub const MAX_TXN_BODY_BYTES: usize = 2 * MAX_TXN_BYTES + BODY_OVERHEAD_BYTES;
/// Ops in one `POST /v1/txn` (gets run one after another; puts and deletes
/// are bounded again by the transaction's own limits).
pub const MAX_TXN_OPS: usize = 16 * 1024;
/// How long the embedded Front End may take to connect (and learn the
/// cluster map) before a request gets 503.
pub const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long a node has to answer a status request.
pub const STATUS_WAIT: Duration = Duration::from_secs(2);

/// Every route and its methods: the router is built from the same paths,
/// and a test checks the OpenAPI description has each of them.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/", &["get"]),
    ("/v1/kv/{key}", &["get", "put", "delete"]),
    ("/v1/txn", &["post"]),
    ("/v1/status", &["get"]),
    ("/v1/openapi.json", &["get"]),
    ("/metrics", &["get"]),
];

const INDEX_HTML: &str = include_str!("index.html");

pub struct App {
    node_client: String,
    security: ClientSecurity,
    client: tokio::sync::Mutex<Option<Client>>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl App {
    pub fn new(
        node_client: String,
        security: ClientSecurity,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> App {
        App { node_client, security, client: tokio::sync::Mutex::new(None), metrics }
    }

    /// The embedded Front End, connected on first use: until the cluster is
    /// bootstrapped there is no map to route by, and the answer is 503.
    async fn client(&self) -> Result<Client, ApiError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let opts = ClientOptions { security: self.security.clone(), ..Default::default() };
        match tokio::time::timeout(CONNECT_WAIT, Client::connect_opts(std::slice::from_ref(&self.node_client), opts))
            .await
        {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the cluster is not ready: {e}"))),
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the cluster is not ready: node {} did not answer within {CONNECT_WAIT:?}", self.node_client),
            )),
        }
    }

    async fn call(&self, addr: &str, msg: &ClientMsg) -> Result<ClientReply, Error> {
        pactdb_client::call_with(addr, msg, STATUS_WAIT, &self.security).await
    }
}

pub fn router(state: Arc<App>) -> Router {
    let r = Router::new()
        .route("/", get(get_index))
        .route("/v1/kv/{key}", get(get_kv).put(put_kv).delete(delete_kv))
        .route("/v1/txn", axum::routing::post(post_txn))
        .route("/v1/status", get(get_status))
        .route("/v1/openapi.json", get(get_openapi))
        .route("/metrics", get(get_metrics))
        .fallback(no_route)
        .layer(axum::middleware::from_fn(count_and_time))
        .with_state(state);
    debug_assert_eq!(ROUTES.len(), 6);
    r
}

/// An error answer: `{"error": "..."}` with the CLI's words, and for a
/// failed conditional write the key's current version.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    msg: String,
    version: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError { status, msg: msg.into(), version: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.msg});
        let mut headers = HeaderMap::new();
        if let Some(v) = self.version {
            body["version"] = json!(v);
            version_headers(&mut headers, v);
        }
        (self.status, headers, axum::Json(body)).into_response()
    }
}

/// The status an error of the Front End deserves, with its text as the CLI
/// prints it.
impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::Fe(FeError::Refused(c)) => match c {
                ClientError::KeyTooLarge { .. }
                | ClientError::Malformed { .. }
                | ClientError::InvalidTransaction { .. } => StatusCode::BAD_REQUEST,
                ClientError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            Error::Fe(FeError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            Error::Fe(FeError::TooManyOutstanding) => StatusCode::TOO_MANY_REQUESTS,
            Error::Fe(FeError::NoClusterMap) | Error::NoEndpoint(_) | Error::Closed => StatusCode::SERVICE_UNAVAILABLE,
            Error::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// `X-Pactdb-Version: N` and, for a value that exists, `ETag: "N"` (what
/// `If-Match` takes back).
fn version_headers(headers: &mut HeaderMap, version: u64) {
    headers.insert("x-pactdb-version", HeaderValue::from(version));
    if version > 0 {
        if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
            headers.insert(header::ETAG, v);
        }
    }
}

/// The key: the one path segment after `/v1/kv/`, percent-decoded to bytes
/// (so a key may hold `/` as `%2F`, and any byte), at most `MAX_KEY_BYTES`.
fn key_of(uri: &Uri) -> Result<Vec<u8>, ApiError> {
    let raw = uri.path().strip_prefix("/v1/kv/").unwrap_or_default();
    let key: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if key.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "the key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        let e = ClientError::KeyTooLarge { len: key.len(), max: MAX_KEY_BYTES };
        return Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string()));
    }
    Ok(key)
}

/// A key for messages: UTF-8 as it is, other bytes as `\xNN` (as the CLI shows it).
fn show(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Reads a body of at most `limit` bytes; a larger one is 413 with the
/// value limit in the CLI's words when it is a value.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize, what_max: usize) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let too_large = |len: Option<usize>| match len {
        Some(len) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ClientError::ValueTooLarge { len, max: what_max }.to_string())
        }
        None => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body exceeds the limit of {limit} bytes (values are at most {what_max} bytes)"),
        ),
    };
    if declared.is_some_and(|len: usize| len > limit) {
        return Err(too_large(declared));
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large(declared))
}

#[derive(Deserialize)]
struct ReadParams {
    consistency: Option<String>,
}

async fn get_index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], INDEX_HTML)
}

async fn get_openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI_JSON)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route {method} {} (see /v1/openapi.json)", uri.path()))
}

/// `GET /v1/kv/{key}`: the value's bytes; its version in `X-Pactdb-Version`
/// and `ETag`.
async fn get_kv(State(app): State<Arc<App>>, uri: Uri, Query(params): Query<ReadParams>) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let consistency: Consistency = match params.consistency.as_deref() {
        None => Consistency::Linearizable,
        Some(s) => s.parse().map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))?,
    };
    let client = app.client().await?;
    let read = client.get_with(key.clone(), consistency).await?;
    let mut headers = HeaderMap::new();
    if let Some(s) = read.served {
        headers.insert("x-pactdb-served-by", HeaderValue::from(s.by));
        if let Some(ms) = s.stale_ms {
            headers.insert("x-pactdb-stale-ms", HeaderValue::from(ms));
        }
    }
    match read.value {
        Some(v) => {
            version_headers(&mut headers, v.version);
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            Ok((StatusCode::OK, headers, v.value).into_response())
        }
        None => {
            let mut e = ApiError::new(StatusCode::NOT_FOUND, format!("key `{}` not found", show(&key)));
            e.version = Some(0);
            Ok((headers, e).into_response())
        }
    }
}

/// A version in `If-Match`: `"N"` (or `N`, or `W/"N"`).
fn parse_etag(v: &HeaderValue) -> Result<u64, ApiError> {
    let s = v.to_str().unwrap_or_default().trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.trim_matches('"').parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("If-Match `{s}` is not a version (expected \"N\", a version from X-Pactdb-Version or ETag)"),
        )
    })
}

/// `PUT /v1/kv/{key}`: writes the body. `If-Match: "N"` writes only if the
/// key is at version N, `If-None-Match: *` only if it does not exist (412
/// otherwise, with the current version).
async fn put_kv(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let expected = match (headers.get(header::IF_MATCH), headers.get(header::IF_NONE_MATCH)) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "give If-Match or If-None-Match, not both"));
        }
        (Some(v), None) => Some(parse_etag(v)?),
        (None, Some(v)) if v.as_bytes() == b"*" => Some(0),
        (None, Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "If-None-Match takes only `*` (the key must not exist)",
            ));
        }
        (None, None) => None,
    };
    let value = read_body(body, &headers, MAX_VALUE_BYTES + BODY_OVERHEAD_BYTES, MAX_VALUE_BYTES).await?;
    if value.len() > MAX_VALUE_BYTES {
        let e = ClientError::ValueTooLarge { len: value.len(), max: MAX_VALUE_BYTES };
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()));
    }
    let client = app.client().await?;
    let version = match expected {
        None => client.put(key, value.to_vec()).await?,
        Some(expected) => match client.cas(key, expected, value.to_vec()).await? {
            Ok(v) => v,
            Err(current) => {
                let mut e = ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    format!("version mismatch: expected {expected}, current {current}"),
                );
                e.version = Some(current);
                return Err(e);
            }
        },
    };
    let mut out = HeaderMap::new();
    version_headers(&mut out, version);
    Ok((StatusCode::OK, out, axum::Json(json!({"version": version}))).into_response())
}

/// `DELETE /v1/kv/{key}`: 200 if it existed, 404 if not.
async fn delete_kv(State(app): State<Arc<App>>, uri: Uri) -> Result<Response, ApiError> {
    let key = key_of(&uri)?;
    let client = app.client().await?;
    if client.delete(key.clone()).await? {
        Ok(axum::Json(json!({"deleted": true})).into_response())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, format!("key `{}` not found", show(&key))))
    }
}

/// The body of `POST /v1/txn`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnBody {
    /// Commit only if each key is at its version then (0: must not exist),
    /// as `pactdb txn --if KEY=VERSION`.
    #[serde(default, rename = "if")]
    compares: BTreeMap<String, u64>,
    #[serde(default)]
    ops: Vec<TxnOpBody>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum TxnOpBody {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: Option<String>,
        value_base64: Option<String>,
    },
    #[serde(alias = "del")]
    Delete {
        key: String,
    },
}

/// One read of a transaction, as in `pactdb txn --json`'s `reads`; version
/// null for a key the transaction itself wrote before reading it.
#[derive(Serialize)]
struct JsonRead {
    #[serde(flatten)]
    value: JsonValue,
    version: Option<u64>,
}

/// What `pactdb txn --json` prints.
#[derive(Serialize)]
struct JsonTxn {
    txn: Option<String>,
    outcome: &'static str,
    reason: Option<String>,
    reads: BTreeMap<String, JsonRead>,
    versions: BTreeMap<String, u64>,
}

/// `POST /v1/txn`: gets run in order, puts and deletes commit atomically,
/// with the semantics of `pactdb txn --json`. 200 committed, 409 aborted
/// (nothing written), 504 outcome unknown (ask `pactdb txn-status`).
async fn post_txn(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, &headers, MAX_TXN_BODY_BYTES, MAX_VALUE_BYTES).await?;
    let body: TxnBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the transaction is not valid JSON of the expected shape ({e}); expected \
                 {{\"if\": {{KEY: VERSION}}, \"ops\": [{{\"op\": \"get\"|\"put\"|\"delete\", \"key\": .., \"value\": ..}}]}}"
            ),
        )
    })?;
    if body.ops.len() > MAX_TXN_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} ops exceed the limit of {MAX_TXN_OPS} per transaction", body.ops.len()),
        ));
    }
    // Everything that can be checked before anything runs is checked first.
    let mut ops = Vec::with_capacity(body.ops.len());
    for op in body.ops {
        let checked_key = |k: &str| -> Result<Vec<u8>, ApiError> {
            if k.len() > MAX_KEY_BYTES {
                let e = ClientError::KeyTooLarge { len: k.len(), max: MAX_KEY_BYTES };
                return Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string()));
            }
            Ok(k.as_bytes().to_vec())
        };
        ops.push(match op {
            TxnOpBody::Get { key } => (0, checked_key(&key)?, Vec::new()),
            TxnOpBody::Delete { key } => (2, checked_key(&key)?, Vec::new()),
            TxnOpBody::Put { key, value, value_base64 } => {
                let value = match (value, value_base64) {
                    (Some(v), None) => v.into_bytes(),
                    (None, Some(b)) => crate::json::decode_base64(&b).ok_or_else(|| {
                        ApiError::new(StatusCode::BAD_REQUEST, format!("put `{key}`: value_base64 is not base64"))
                    })?,
                    _ => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            format!("put `{key}` needs one of value or value_base64"),
                        ))
                    }
                };
                if value.len() > MAX_VALUE_BYTES {
                    let e = ClientError::ValueTooLarge { len: value.len(), max: MAX_VALUE_BYTES };
                    return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()));
                }
                (1, checked_key(&key)?, value)
            }
        });
    }
    let client = app.client().await?;
    let mut txn = client.begin();
    for (key, version) in &body.compares {
        txn.when(key.as_bytes().to_vec(), *version);
    }
    let not_run = |e: Error| {
        let mut e = ApiError::from(e);
        e.msg = format!("the transaction did not run, nothing was written: {}", e.msg);
        e
    };
    for (kind, key, value) in ops {
        match kind {
            0 => {
                txn.get(key).await.map_err(not_run)?;
            }
            1 => txn.put(key, value),
            _ => txn.delete(key),
        }
    }
    let reads: BTreeMap<String, JsonRead> = txn
        .reads()
        .iter()
        .map(|(k, v)| {
            let read = JsonRead {
                value: JsonValue::new(v.as_ref().map(|v| v.value.as_slice())),
                version: Some(v.as_ref().map_or(0, |v| v.version)),
            };
            (show(k), read)
        })
        .collect();
    let out = |txn: Option<String>, outcome, reason, versions| JsonTxn { txn, outcome, reason, reads, versions };
    let (status, body) = match txn.commit().await {
        Ok(c) => {
            let versions = c.versions.iter().map(|(k, v)| (show(k), *v)).collect();
            (StatusCode::OK, out(c.txn.map(|t| t.to_string()), "committed", None, versions))
        }
        Err(TxnError::Aborted { txn, reason }) => {
            (StatusCode::CONFLICT, out(Some(txn.to_string()), "aborted", Some(reason.to_string()), BTreeMap::new()))
        }
        Err(TxnError::OutcomeUnknown { txn, last_error }) => {
            (StatusCode::GATEWAY_TIMEOUT, out(Some(txn.to_string()), "unknown", Some(last_error), BTreeMap::new()))
        }
        Err(TxnError::Other(e)) => return Err(not_run(e)),
    };
    Ok((status, axum::Json(body)).into_response())
}

/// `GET /v1/status`: `pactdb status --json`, with the views as this node
/// knows them now (so a failover shows as soon as the node learned it).
async fn get_status(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let (cluster, mut views) = pactdb_client::fetch_views_with(std::slice::from_ref(&app.node_client), &app.security)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the cluster is not ready: {e}")))?;
    views.sort_by_key(|v| v.group);
    // Every node at once: a node that is down costs one timeout, not one each.
    let mut asks = tokio::task::JoinSet::new();
    for (&id, addrs) in &cluster.nodes {
        let (app, addr) = (app.clone(), addrs.client.clone());
        asks.spawn(async move {
            let r = match app.call(&addr, &ClientMsg::GetStatus).await {
                Ok(ClientReply::Status(s)) => Ok(s),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(e.to_string()),
            };
            (id, r)
        });
    }
    let mut statuses = asks.join_all().await;
    statuses.sort_by_key(|(id, _)| *id);
    Ok(axum::Json(crate::status::status_json(&cluster, views.iter(), &statuses)).into_response())
}

/// `GET /metrics`: Prometheus text; the gauges come from this node's status.
async fn get_metrics(State(app): State<Arc<App>>) -> Response {
    match app.call(&app.node_client, &ClientMsg::GetStatus).await {
        Ok(ClientReply::Status(s)) => crate::metrics::set_status_gauges(&s),
        _ => crate::metrics::set_node_down(),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render()).into_response()
}

/// Counts and times every request by route (the route's pattern, so keys
/// never become labels), and bounds its time.
async fn count_and_time(req: Request, next: Next) -> Response {
    let began = Instant::now();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) => match ROUTES.iter().find(|(r, _)| *r == p.as_str()) {
            Some((r, _)) => *r,
            None => "other",
        },
        None => "none",
    };
    let method = match *req.method() {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    };
    let resp = match tokio::time::timeout(crate::REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the request took longer than {:?}", crate::REQUEST_TIMEOUT),
        )
        .into_response(),
    };
    let status = resp.status().as_u16().to_string();
    metrics::counter!("pactdb_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("pactdb_http_request_duration_seconds", "route" => route).record(began.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_decoded_path_segments_within_the_limit() {
        let uri: Uri = "/v1/kv/a%2Fb%20c%FF".parse().unwrap();
        assert_eq!(key_of(&uri).unwrap(), b"a/b c\xff");
        let long: Uri = format!("/v1/kv/{}", "k".repeat(MAX_KEY_BYTES + 1)).parse().unwrap();
        let e = key_of(&long).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.msg, format!("key of {} bytes exceeds the limit of {MAX_KEY_BYTES} bytes", MAX_KEY_BYTES + 1));
    }

    #[test]
    fn if_match_takes_quoted_and_weak_versions() {
        for v in ["\"7\"", "7", "W/\"7\""] {
            assert_eq!(parse_etag(&HeaderValue::from_static(v)).unwrap(), 7);
        }
        assert!(parse_etag(&HeaderValue::from_static("\"x\"")).is_err());
    }

    #[test]
    fn the_openapi_description_has_every_route_and_method() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI_JSON).expect("docs/openapi.json parses");
        assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
        let paths = doc["paths"].as_object().expect("paths");
        for (route, methods) in ROUTES {
            let p = paths.get(*route).unwrap_or_else(|| panic!("docs/openapi.json lacks {route}"));
            for m in *methods {
                assert!(p.get(*m).is_some(), "docs/openapi.json lacks {m} {route}");
            }
        }
        assert_eq!(paths.len(), ROUTES.len(), "docs/openapi.json describes a route the server does not have");
    }
}
