//! The faults `pactdb chaos` injects, and the backend that injects them.
//!
//! It owns the fault kinds, the seeded schedule (which kind comes when and
//! which node it hits), and every external command: `docker kill`, `start`,
//! `stop`, `pause`, `unpause`, and `iptables` run inside a container's
//! network namespace through `nsenter`. Partitions live in one chain of
//! our own per container, `PACTDB-CHAOS`, jumped to from INPUT and OUTPUT,
//! so healing is flushing that chain and nothing else of the container's
//! (or the host's) firewall is touched.
//!
//! It must never wait without a bound: every command runs under a timeout
//! and is killed when it expires, and a command that fails is reported as
//! a failed injection, never retried forever. It never reads or records
//! the workload's history; it only says what it did and when.

use anyhow::{bail, Context};
use pactdb_core::types::{ClusterMap, Mode, NodeId, View};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// The longest any one external command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The chain that holds every partition rule of a container.
pub const CHAIN: &str = "PACTDB-CHAOS";

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the primary (or sequencer) of a group, start it again later.
    Kill,
    /// Freeze a group's leader (`docker pause`), then thaw it.
    Pause,
    /// Cut one node (a group's leader) from every other node; clients
    /// still reach it.
    Isolate,
    /// Two nodes against three.
    Split,
    /// Cut the link between a leader and one member of its group, both ways.
    Link,
    /// Drop the packets a node receives from one peer, not those it sends.
    Asymmetric,
    /// SIGKILL every node at once, start them all again.
    RestartAll,
    /// Stop (SIGTERM, graceful) and start every node in turn, waiting for
    /// the cluster to serve again before the next.
    Rolling,
}

impl FaultKind {
    #[cfg(test)]
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::Split,
        FaultKind::Link,
        FaultKind::Asymmetric,
        FaultKind::RestartAll,
        FaultKind::Rolling,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "isolate",
            FaultKind::Split => "split",
            FaultKind::Link => "link",
            FaultKind::Asymmetric => "asymmetric",
            FaultKind::RestartAll => "restart-all",
            FaultKind::Rolling => "rolling",
        }
    }

    /// Whether it needs iptables (and so root).
    pub fn is_partition(self) -> bool {
        matches!(self, FaultKind::Isolate | FaultKind::Split | FaultKind::Link | FaultKind::Asymmetric)
    }
}

/// Which packets a rule drops, on the node it is installed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Both ways: what the node receives from the peer and what it sends it.
    Both,
    /// Only what it receives from the peer.
    Inbound,
}

/// What injects faults into the nodes. The docker backend is the only one;
/// the trait keeps the schedule and the runner free of `docker` itself.
pub trait Backend: Send + Sync {
    /// The name of a node as the operator knows it (a container name).
    fn name(&self, node: NodeId) -> String;
    /// Checks that every node can be reached and faults can be injected.
    fn preflight(&self, nodes: &[NodeId], partitions: bool) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// SIGKILL.
    fn kill(&self, node: NodeId) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&self, node: NodeId, grace: Duration) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn start(&self, node: NodeId) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn pause(&self, node: NodeId) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn unpause(&self, node: NodeId) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Drops packets between `node` and `peer_ip`, on `node`'s side.
    fn cut(&self, node: NodeId, peer_ip: &str, dir: Direction) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Removes every rule `cut` installed on `node`.
    fn heal(&self, node: NodeId) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Puts `node` back to running, unpaused and unpartitioned, whatever
    /// state a fault (or an interrupted run) left it in.
    fn restore(&self, node: NodeId) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Runs `program args`, bounded by `COMMAND_TIMEOUT`; its stdout, or an
/// error naming the command and what it printed.
pub async fn command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let line = format!("{program} {}", args.join(" "));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, cmd.output()).await {
        Err(_) => bail!("`{line}` did not finish within {}s (killed)", COMMAND_TIMEOUT.as_secs()),
        Ok(r) => r.with_context(|| format!("cannot run `{line}`"))?,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("`{line}` failed ({}): {}", out.status, err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Faults through `docker` and `nsenter ... iptables`.
pub struct Docker {
    pub prefix: String,
}

impl Docker {
    async fn pid(&self, node: NodeId) -> anyhow::Result<String> {
        let c = self.name(node);
        let pid = command("docker", &["inspect", "-f", "{{.State.Pid}}", &c]).await?;
        if pid.is_empty() || pid == "0" {
            bail!("container {c} is not running (no process to enter)");
        }
        Ok(pid)
    }

    async fn iptables(&self, pid: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-t", pid, "-n", "iptables", "-w", "5"];
        all.extend_from_slice(args);
        command("nsenter", &all).await
    }

    /// Creates the chain and the jumps to it, once per network namespace.
    async fn ensure_chain(&self, pid: &str) -> anyhow::Result<()> {
        if self.iptables(pid, &["-n", "-L", CHAIN]).await.is_err() {
            self.iptables(pid, &["-N", CHAIN]).await?;
        }
        for hook in ["INPUT", "OUTPUT"] {
            if self.iptables(pid, &["-C", hook, "-j", CHAIN]).await.is_err() {
                self.iptables(pid, &["-I", hook, "-j", CHAIN]).await?;
            }
        }
        Ok(())
    }

    async fn status(&self, node: NodeId) -> anyhow::Result<String> {
        command("docker", &["inspect", "-f", "{{.State.Status}}", &self.name(node)]).await
    }
}

impl Backend for Docker {
    fn name(&self, node: NodeId) -> String {
        format!("{}{node}", self.prefix)
    }

    async fn preflight(&self, nodes: &[NodeId], partitions: bool) -> anyhow::Result<()> {
        command("docker", &["version", "--format", "{{.Server.Version}}"])
            .await
            .context("docker is needed to inject faults")?;
        for &n in nodes {
            let status = self.status(n).await.with_context(|| format!("no container for node {n}"))?;
            if status != "running" && status != "paused" {
                bail!("container {} is {status}, not running", self.name(n));
            }
        }
        if partitions {
            // SAFETY: geteuid only reads the process's effective user id.
            if unsafe { libc::geteuid() } != 0 {
                bail!(
                    "partitions need root (nsenter into a container's network namespace, iptables there): \
                     run as root, or leave them out with --faults kill,pause,restart-all,rolling"
                );
            }
            let n = nodes[0];
            let pid = self.pid(n).await?;
            self.ensure_chain(&pid)
                .await
                .with_context(|| format!("iptables in {}'s network namespace", self.name(n)))?;
        }
        Ok(())
    }

    async fn kill(&self, node: NodeId) -> anyhow::Result<()> {
        command("docker", &["kill", &self.name(node)]).await.map(drop)
    }

    async fn stop(&self, node: NodeId, grace: Duration) -> anyhow::Result<()> {
        command("docker", &["stop", "-t", &grace.as_secs().to_string(), &self.name(node)]).await.map(drop)
    }

    async fn start(&self, node: NodeId) -> anyhow::Result<()> {
        command("docker", &["start", &self.name(node)]).await.map(drop)
    }

    async fn pause(&self, node: NodeId) -> anyhow::Result<()> {
        command("docker", &["pause", &self.name(node)]).await.map(drop)
    }

    async fn unpause(&self, node: NodeId) -> anyhow::Result<()> {
        command("docker", &["unpause", &self.name(node)]).await.map(drop)
    }

    async fn cut(&self, node: NodeId, peer_ip: &str, dir: Direction) -> anyhow::Result<()> {
        let pid = self.pid(node).await?;
        self.ensure_chain(&pid).await?;
        // One chain serves both hooks: `-s PEER` only matches what comes in
        // from the peer, `-d PEER` only what goes out to it.
        self.iptables(&pid, &["-A", CHAIN, "-s", peer_ip, "-j", "DROP"]).await?;
        if dir == Direction::Both {
            self.iptables(&pid, &["-A", CHAIN, "-d", peer_ip, "-j", "DROP"]).await?;
        }
        Ok(())
    }

    async fn heal(&self, node: NodeId) -> anyhow::Result<()> {
        // A container that is not running has no rules left: its network
        // namespace went with its process.
        let Ok(pid) = self.pid(node).await else { return Ok(()) };
        if self.iptables(&pid, &["-n", "-L", CHAIN]).await.is_err() {
            return Ok(());
        }
        self.iptables(&pid, &["-F", CHAIN]).await.map(drop)
    }

    async fn restore(&self, node: NodeId) -> anyhow::Result<()> {
        match self.status(node).await?.as_str() {
            "paused" => self.unpause(node).await?,
            "running" => {}
            _ => self.start(node).await?,
        }
        self.heal(node).await
    }
}

/// One fault as scheduled: what, and whom it hits.
#[derive(Clone, Debug)]
pub struct Planned {
    pub kind: FaultKind,
    /// The nodes it hits directly (the killed, the cut-off side, ...).
    pub targets: Vec<NodeId>,
    /// For link and asymmetric faults: the peer on the other side.
    pub peer: Option<NodeId>,
    /// How long the fault is held before it is healed.
    pub hold: Duration,
    /// For people: `pause pactdb-node2 (primary of group 1)`.
    pub what: String,
}

/// The order of the kinds: every selected kind once per round, each round
/// shuffled by the seeded generator.
pub fn next_round(rng: &mut ChaCha8Rng, kinds: &[FaultKind]) -> Vec<FaultKind> {
    let mut round = kinds.to_vec();
    for i in (1..round.len()).rev() {
        round.swap(i, rng.gen_range(0..=i));
    }
    round
}

fn role(view: &View) -> &'static str {
    match view.mode {
        Mode::Passive => "primary",
        Mode::Active => "sequencer",
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.gen_range(0..items.len())]
}

/// Chooses the targets of a fault of `kind` from the current views (the
/// leader of a random group, mostly), drawing from `rng`.
pub fn plan(
    rng: &mut ChaCha8Rng,
    kind: FaultKind,
    nodes: &[NodeId],
    views: &BTreeMap<u32, View>,
    hold: (Duration, Duration),
    backend: &impl Backend,
) -> Planned {
    let hold = {
        let (lo, hi) = (hold.0.as_millis() as u64, hold.1.as_millis() as u64);
        Duration::from_millis(if hi > lo { rng.gen_range(lo..=hi) } else { lo })
    };
    let groups: Vec<&View> = views.values().collect();
    // The leader of a random group, and what it is.
    let leader = |rng: &mut ChaCha8Rng| -> (NodeId, String, Option<&View>) {
        if groups.is_empty() {
            let n = pick(rng, nodes);
            return (n, String::from("no view known"), None);
        }
        let v = groups[rng.gen_range(0..groups.len())];
        (v.leader, format!("{} of group {}", role(v), v.group), Some(v))
    };
    let name = |n: NodeId| backend.name(n);
    match kind {
        FaultKind::Kill | FaultKind::Pause | FaultKind::Isolate => {
            let (n, why, _) = leader(rng);
            let verb = match kind {
                FaultKind::Kill => "kill",
                FaultKind::Pause => "pause",
                _ => "isolate",
            };
            let what = format!("{verb} {} ({why}) for {:.1}s", name(n), hold.as_secs_f64());
            Planned { kind, targets: vec![n], peer: None, hold, what }
        }
        FaultKind::Split => {
            let (n, why, _) = leader(rng);
            let others: Vec<NodeId> = nodes.iter().copied().filter(|&m| m != n).collect();
            let second = pick(rng, &others);
            let minority = vec![n, second];
            let majority: Vec<String> = nodes.iter().filter(|m| !minority.contains(m)).map(|&m| name(m)).collect();
            let what = format!(
                "split {} + {} ({why} on the minority side) | {} for {:.1}s",
                name(n),
                name(second),
                majority.join(" + "),
                hold.as_secs_f64()
            );
            Planned { kind, targets: minority, peer: None, hold, what }
        }
        FaultKind::Link | FaultKind::Asymmetric => {
            let (n, why, view) = leader(rng);
            let members: Vec<NodeId> = view
                .map(|v| v.members.iter().copied().filter(|&m| m != n).collect())
                .filter(|m: &Vec<NodeId>| !m.is_empty())
                .unwrap_or_else(|| nodes.iter().copied().filter(|&m| m != n).collect());
            let peer = pick(rng, &members);
            // Asymmetric: either the leader stops hearing the member, or
            // the member stops hearing the leader.
            let (on, from) = if kind == FaultKind::Asymmetric && rng.gen_bool(0.5) { (peer, n) } else { (n, peer) };
            let what = match kind {
                FaultKind::Link => {
                    format!("cut link {} <-> {} ({why}) for {:.1}s", name(n), name(peer), hold.as_secs_f64())
                }
                _ => format!(
                    "drop packets {} -> {} only ({} is {why}) for {:.1}s",
                    name(from),
                    name(on),
                    name(n),
                    hold.as_secs_f64()
                ),
            };
            Planned { kind, targets: vec![on], peer: Some(from), hold, what }
        }
        FaultKind::RestartAll => {
            let what = format!("kill all {} nodes, start them again after {:.1}s", nodes.len(), hold.as_secs_f64());
            Planned { kind, targets: nodes.to_vec(), peer: None, hold, what }
        }
        FaultKind::Rolling => {
            let what = format!(
                "rolling restart of {} (docker stop -t 10, then start, one at a time)",
                nodes.iter().map(|&n| name(n)).collect::<Vec<_>>().join(", ")
            );
            Planned { kind, targets: nodes.to_vec(), peer: None, hold, what }
        }
    }
}

/// A node's address for iptables rules: the host part of its peer address.
pub fn node_ips(cluster: &ClusterMap) -> BTreeMap<NodeId, String> {
    cluster
        .nodes
        .iter()
        .map(|(&id, a)| {
            let host = a.peer.rsplit_once(':').map_or(a.peer.as_str(), |(h, _)| h);
            (id, host.trim_start_matches('[').trim_end_matches(']').to_string())
        })
        .collect()
}

/// Installs a partition fault's rules: every rule is on the `targets`
/// side, against every node on the other side.
pub async fn partition(
    backend: &impl Backend,
    p: &Planned,
    nodes: &[NodeId],
    ips: &BTreeMap<NodeId, String>,
) -> anyhow::Result<()> {
    let ip = |n: NodeId| ips.get(&n).cloned().with_context(|| format!("no address known for node {n}"));
    match p.kind {
        FaultKind::Isolate | FaultKind::Split => {
            for &t in &p.targets {
                for &o in nodes.iter().filter(|o| !p.targets.contains(o)) {
                    backend.cut(t, &ip(o)?, Direction::Both).await?;
                }
            }
        }
        FaultKind::Link | FaultKind::Asymmetric => {
            let peer = p.peer.context("a link fault names its peer")?;
            let dir = if p.kind == FaultKind::Link { Direction::Both } else { Direction::Inbound };
            backend.cut(p.targets[0], &ip(peer)?, dir).await?;
        }
        other => bail!("{} is not a partition", other.name()),
    }
    Ok(())
}

/// Heals every node (unpause, start, flush the chain), all of them even if
/// some fail; the errors, one per node that could not be restored.
pub async fn restore_all(backend: &impl Backend, nodes: &[NodeId]) -> Vec<String> {
    let mut errors = Vec::new();
    for &n in nodes {
        if let Err(e) = backend.restore(n).await {
            errors.push(format!("{}: {e:#}", backend.name(n)));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_round_holds_every_kind_once_and_the_seed_fixes_the_order() {
        let a = next_round(&mut ChaCha8Rng::seed_from_u64(7), &FaultKind::ALL);
        let b = next_round(&mut ChaCha8Rng::seed_from_u64(7), &FaultKind::ALL);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, FaultKind::ALL.to_vec());
    }
}
