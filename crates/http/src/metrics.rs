//! `GET /metrics`: the process's Prometheus recorder, and the gauges read
//! from the node's own status at scrape time.
//!
//! It owns the recorder (installed once, before the node starts, so that
//! `pactdb_node::metrics` registers real handles) and the exposition. It
//! must never keep per-request state: counters live in the recorder, gauges
//! come fresh from the node at each scrape.

use metrics::gauge;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use pactdb_core::wire::NodeStatus;
use std::time::Duration;

/// Histogram buckets, in seconds: 100 µs to 10 s, roughly three per decade
/// (an fsync and a write's latency both fall in the lower half).
pub const BUCKETS_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// A gauge not set for this long is left out of the exposition: each scrape
/// sets every gauge of the node's current status just before rendering, so
/// only series of a role or group the node no longer has go stale.
pub const GAUGE_IDLE: Duration = Duration::from_secs(2);
/// How often histograms' pending samples are folded into their buckets
/// (each sample is held until then, so this bounds the memory they take).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process's recorder. Call before the node starts: handles
/// taken before it are no-ops.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS_SECONDS)?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    pactdb_node::metrics::enable();
    Ok(handle)
}

/// Sets the gauges of one node's status: per group and role, the view's
/// epoch, the log's indexes, keys, prepared (in-doubt) transactions, locks,
/// sessions, unfinished decisions and snapshot streams under way.
pub fn set_status_gauges(status: &NodeStatus) {
    gauge!("pactdb_node_up").set(1.0);
    for r in &status.replicas {
        let labels = [("group", r.group.to_string()), ("role", r.role.clone())];
        let set = |name: &'static str, v: f64| gauge!(name, &labels).set(v);
        set("pactdb_replica_epoch", r.view.as_ref().map_or(0.0, |v| v.epoch as f64));
        set("pactdb_replica_last_index", r.last_index as f64);
        set("pactdb_replica_commit_index", r.commit_index as f64);
        set("pactdb_replica_applied_index", r.applied_index as f64);
        set("pactdb_replica_keys", r.keys as f64);
        set("pactdb_prepared_transactions", r.prepared as f64);
        set("pactdb_locks_held", r.locks as f64);
        set("pactdb_sessions", r.sessions as f64);
        set("pactdb_unfinished_decisions", r.unfinished_decisions as f64);
        let sending = r.transfers.iter().filter(|t| t.sending).count();
        let taking = r.transfers.len() - sending;
        for (direction, n) in [("sending", sending), ("receiving", taking)] {
            let mut l = labels.to_vec();
            l.push(("direction", direction.to_string()));
            gauge!("pactdb_snapshot_transfers_in_progress", &l).set(n as f64);
        }
    }
}

/// The node answered no status (it is starting, or stopping).
pub fn set_node_down() {
    gauge!("pactdb_node_up").set(0.0);
}

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("pactdb_node_up", "1 if the node answered the scrape's status request");
    describe_gauge!("pactdb_replica_epoch", "Epoch of the group's view as this replica knows it");
    describe_gauge!("pactdb_replica_last_index", "Last index in this replica's log");
    describe_gauge!("pactdb_replica_commit_index", "This replica's commit index");
    describe_gauge!("pactdb_replica_applied_index", "Index up to which this replica applied its log");
    describe_gauge!("pactdb_replica_keys", "Keys in this replica's state");
    describe_gauge!("pactdb_prepared_transactions", "Transactions prepared and not yet resolved (in doubt)");
    describe_gauge!("pactdb_locks_held", "Keys locked by prepared transactions");
    describe_gauge!("pactdb_sessions", "Client sessions in the exactly-once table");
    describe_gauge!("pactdb_unfinished_decisions", "Decisions coordinated here not yet acknowledged by all");
    describe_gauge!("pactdb_snapshot_transfers_in_progress", "Snapshot streams under way");
    describe_counter!("pactdb_http_requests_total", "HTTP requests served, by route, method and status");
    describe_histogram!("pactdb_http_request_duration_seconds", Unit::Seconds, "HTTP request latency, by route");
}
