//! Placement changes (`pactdb admin move-replica`): the group's view names
//! the nodes that should hold it (`View::placement`), and its primary makes
//! the members follow.
//!
//! A move replaces one placed node by another in a single view
//! compare-and-set (same leader and members, epoch plus one). The node
//! moved to learns the view (it is announced to every node), creates its
//! replica and joins; the primary streams it the log, or a snapshot when
//! the log no longer reaches back far enough, as a learner, and admits it
//! by another view change once it holds every committed entry (the rule
//! `on_append_ack` applies to every learner). Once every placed node is a
//! member, the primary drops the members that are no longer placed, by a
//! third view change; if it is one of them it first hands its leadership
//! to a placed member (`handover.rs`), whose own primary then drops it.
//! Writes go on throughout: only the hand-over holds them, briefly.
//!
//! Because the target is part of the view, a primary that takes over in the
//! middle of a move finishes it, and a restarted node finds out where its
//! group should live from the config store, as it finds out the view.
//!
//! It must never admit a node before it holds every committed entry, never
//! drop a member before every placed node is a member, never drop itself
//! while it leads, and never start a second move while one is under way
//! (`MAX_MOVES_PER_GROUP`).

use super::{Ctx, Replica};
use crate::limits::{MAX_CATCHUP_SCAN_ENTRIES, MAX_MOVES_PER_GROUP};
use crate::types::{NodeId, View};
use crate::wire::{CatchUp, PlacementChange, TransferRefused};

impl Replica {
    /// Starts moving this group's replica from node `from` to node `to`:
    /// proposes the view with the new placement. Answers that view (or the
    /// one held, when the move was already made: a retried request), or why
    /// the move cannot start.
    pub fn on_move_replica(&mut self, ctx: &mut Ctx, from: NodeId, to: NodeId) -> Result<View, TransferRefused> {
        let refuse = |reason: String, view: Option<View>| Err(TransferRefused { reason, view });
        if !self.is_primary() {
            let reason = format!("node {} does not lead group {}", self.me, self.group);
            return refuse(reason, self.view.clone());
        }
        let view = self.view.clone().expect("a primary has a view");
        let group = self.group;
        if from == to {
            return refuse(format!("cannot move group {group}'s replica from node {from} to itself"), Some(view));
        }
        if view.is_placed(to) && !view.is_placed(from) {
            // Already asked for: the placement says so.
            return Ok(view);
        }
        if !view.is_placed(from) {
            let reason = format!("node {from} does not hold group {group} (placed on {:?})", view.placement);
            return refuse(reason, Some(view));
        }
        if view.is_placed(to) {
            let reason = format!("node {to} already holds group {group} (placed on {:?})", view.placement);
            return refuse(reason, Some(view));
        }
        if ctx.cluster.is_some_and(|c| !c.nodes.contains_key(&to)) {
            return refuse(format!("node {to} is not in the cluster map"), Some(view));
        }
        let leaving = view.leaving();
        if leaving.len() >= MAX_MOVES_PER_GROUP {
            let reason = format!(
                "a move of group {group} is under way (members {leaving:?} are still to be dropped); \
                 wait for it to finish"
            );
            return refuse(reason, Some(view));
        }
        if self.view_change_in_flight || self.handover.is_some() {
            let reason = format!("group {group} is changing its view; try again");
            return refuse(reason, Some(view));
        }
        let placement = view.placement.iter().map(|&n| if n == from { to } else { n }).collect();
        let next = view.next_placement(placement);
        self.propose_view(ctx, next.clone());
        Ok(next)
    }

    /// Drops the members the placement no longer names, once every placed
    /// node is a member; a primary that is one of them hands its leadership
    /// to the placed member furthest along first.
    pub(super) fn tick_placement(&mut self, ctx: &mut Ctx, view: &View) {
        if self.view_change_in_flight || self.handover.is_some() || !self.is_primary() {
            return;
        }
        if let Some(next) = replace_removed(view, ctx.cluster) {
            self.propose_view(ctx, next);
            return;
        }
        let leaving = view.leaving();
        if leaving.is_empty() || !view.joining().is_empty() {
            return;
        }
        if leaving.contains(&self.me) {
            // A member takes over only once it holds an entry of this
            // epoch committed (a restarted member whose WAL was cut stays
            // amnesiac until then, see `end_amnesia`): an idle group gets
            // its no-op first (found by the simulator, mixed seed 243: a
            // group with no writes never handed over).
            self.append_noop_if_idle(ctx);
            let mut candidates: Vec<NodeId> =
                view.members.iter().copied().filter(|&m| m != self.me && view.is_placed(m)).collect();
            // The member furthest along first (ties: the lowest id); each
            // attempt after one that gave up asks the next one, so a
            // member that cannot take over does not stall the move.
            candidates.sort_by_key(|m| (std::cmp::Reverse(self.progress.get(m).map_or(0, |p| p.match_index)), *m));
            if !candidates.is_empty() {
                let to = candidates[self.move_handovers as usize % candidates.len()];
                self.move_handovers += 1;
                // Refused only while a view change or hand-over is under
                // way, which the checks above rule out.
                let _ = self.on_transfer_leader(ctx, to);
            }
            return;
        }
        let members = view.members.iter().copied().filter(|&m| view.is_placed(m)).collect();
        let next = view.next(self.me, members);
        self.propose_view(ctx, next);
    }

    /// The placement change this primary has under way, for `status`.
    pub(super) fn placement_status(&self) -> Option<PlacementChange> {
        let view = self.view.as_ref().filter(|_| self.is_primary())?;
        let (joining, leaving) = (view.joining(), view.leaving());
        if joining.is_empty() && leaving.is_empty() {
            return None;
        }
        let last = self.log.last_index();
        let joining = joining
            .into_iter()
            .map(|node| {
                let Some(p) = self.progress.get(&node) else {
                    return CatchUp { node, heard: false, entries_left: last, bytes_left: 0, bytes_exact: false };
                };
                let stream = p.stream.as_ref();
                let streamed = stream.map_or(0, |s| s.frozen.meta.total_bytes.saturating_sub(s.acked));
                // Entries after what it holds (or after the snapshot it is
                // being streamed), as far as this log still has them.
                let from = stream.map_or(p.match_index, |s| s.frozen.meta.id.index).max(self.log.base_index()) + 1;
                let to = last.min(from.saturating_add(MAX_CATCHUP_SCAN_ENTRIES) - 1);
                let logged: u64 =
                    if from <= to { self.log.range(from, to).map(|e| e.payload_bytes() as u64).sum() } else { 0 };
                let exact = to == last && (stream.is_some() || p.match_index >= self.log.base_index());
                CatchUp {
                    node,
                    heard: true,
                    entries_left: last.saturating_sub(p.match_index),
                    bytes_left: streamed + logged,
                    bytes_exact: exact,
                }
            })
            .collect();
        Some(PlacementChange { joining, leaving })
    }
}

/// The view that places the group elsewhere than on a node the cluster map
/// no longer names, if the placement has one: a move onto a node can race
/// that node's removal (`admin remove-node` checks the views it knows, and
/// a primary that had not yet learned the removal may place the group
/// there), and a group must not wait for a node that is gone (found by the
/// simulator, passive seed 1138 and others: a joining node removed, the
/// move never finished). The node is replaced by a member the move was
/// taking the group off (caught up already), else by the lowest-numbered
/// node of the map that does not hold the group; with none, it is only
/// dropped from the placement when the group keeps `min_members`.
fn replace_removed(view: &View, cluster: Option<&crate::types::ClusterMap>) -> Option<View> {
    let cluster = cluster?;
    let gone = view.placement.iter().copied().find(|n| !cluster.nodes.contains_key(n))?;
    let placed = |n: &NodeId| view.is_placed(*n);
    let spare = view
        .leaving()
        .into_iter()
        .find(|n| cluster.nodes.contains_key(n))
        .or_else(|| cluster.nodes.keys().copied().find(|n| !placed(n)));
    let mut placement: Vec<NodeId> = view.placement.iter().copied().filter(|&n| n != gone).collect();
    match spare {
        Some(n) => placement.push(n),
        None if placement.len() >= view.min_members.max(1) => {}
        None => return None,
    }
    Some(view.next_placement(placement))
}
