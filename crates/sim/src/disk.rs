//! One node's simulated disk: the WAL records that are durable, the ones
//! written but not yet fsynced, and what a crash does to them.
//!
//! It owns the durability boundary. It must never report a record durable
//! (the `Persisted` input the simulator derives from `fsync_done`) before the
//! simulated fsync that covers it completed, and a crash must never keep a
//! record that no surviving prefix explains: the WAL is append-only, so what
//! survives a crash is always a prefix of what was written.
//!
//! It also compacts, as the runtime's snapshots do: a durable prefix is
//! replaced by the records of a node's checkpoint (`Node::checkpoint`), once
//! the WAL is durable up to the checkpoint's lsn, and the node's later
//! restarts replay the checkpoint and what followed it.

use pactdb_core::wire::WalRecord;
use pactdb_core::Lsn;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Default)]
pub struct Disk {
    /// Records on disk, in order; the record at position `i` has lsn
    /// `i + 1 + shift` for the current incarnation.
    durable: Vec<WalRecord>,
    /// How far this incarnation's lsns run ahead of positions: compaction
    /// replaced a prefix of records by a checkpoint of another length.
    shift: i64,
    /// Written after `durable`, not yet covered by an fsync.
    unsynced: Vec<WalRecord>,
    /// The lsn the running fsync will make durable, if one is running.
    syncing_upto: Option<Lsn>,
}

/// What a crash did to the unsynced records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashDamage {
    pub lost: usize,
    pub torn: bool,
}

impl Disk {
    pub fn durable_len(&self) -> usize {
        self.durable.len()
    }

    /// The highest lsn durable in this incarnation.
    pub fn durable_lsn(&self) -> Lsn {
        (self.durable.len() as i64 + self.shift) as Lsn
    }

    fn next_lsn(&self) -> Lsn {
        ((self.durable.len() + self.unsynced.len()) as i64 + self.shift) as Lsn + 1
    }

    /// Replaces the durable records up to `upto_lsn` by `records`, which
    /// rebuild the same state (a checkpoint). Only a durable prefix is ever
    /// replaced: the caller waits until `durable_lsn() >= upto_lsn`.
    pub fn compact(&mut self, upto_lsn: Lsn, records: Vec<WalRecord>) {
        assert!(upto_lsn <= self.durable_lsn(), "only a durable prefix is compacted");
        let covered = (upto_lsn as i64 - self.shift) as usize;
        let k = records.len();
        self.durable.splice(..covered, records);
        self.shift = upto_lsn as i64 - k as i64;
    }

    /// Appends a record the node asked to persist.
    pub fn append(&mut self, lsn: Lsn, record: WalRecord) {
        assert_eq!(lsn, self.next_lsn(), "the node persists records in lsn order");
        self.unsynced.push(record);
    }

    /// Starts an fsync covering everything written so far, unless one is
    /// already running (the next starts when it completes: group commit).
    /// Returns the lsn it will make durable. Like the real WAL writer, it
    /// does not sync for lazy records alone (`WalRecord::needs_sync`): they
    /// wait, unsynced and losable in a crash, for the next record that needs
    /// one.
    pub fn start_fsync(&mut self) -> Option<Lsn> {
        if self.syncing_upto.is_some() || !self.unsynced.iter().any(WalRecord::needs_sync) {
            return None;
        }
        let upto = self.next_lsn() - 1;
        self.syncing_upto = Some(upto);
        Some(upto)
    }

    /// The fsync that was started for `upto` completed.
    pub fn fsync_done(&mut self, upto: Lsn) {
        assert_eq!(self.syncing_upto, Some(upto), "only the running fsync completes");
        self.syncing_upto = None;
        let n = (upto - self.durable_lsn()) as usize;
        self.durable.extend(self.unsynced.drain(..n));
    }

    /// The process died: a random prefix of the unsynced records may have
    /// reached the disk anyway, and the last of those may be torn, in which
    /// case recovery finds it damaged and cuts it. Nothing durable is lost.
    pub fn crash(&mut self, rng: &mut ChaCha8Rng, survive_p: f64, torn_p: f64) -> CrashDamage {
        self.syncing_upto = None;
        let written = self.unsynced.len();
        let mut keep = if written > 0 && rng.gen_bool(survive_p) { rng.gen_range(0..=written) } else { 0 };
        let torn = keep > 0 && rng.gen_bool(torn_p);
        if torn {
            keep -= 1;
        }
        self.durable.extend(self.unsynced.drain(..keep));
        self.unsynced.clear();
        CrashDamage { lost: written - keep, torn }
    }

    /// A durable record turned out corrupt at restart: recovery cuts the log
    /// there, losing it and everything after it. Returns how many records
    /// were cut, or `None` if the log is empty.
    pub fn corrupt(&mut self, rng: &mut ChaCha8Rng) -> Option<usize> {
        if self.durable.is_empty() {
            return None;
        }
        let at = rng.gen_range(0..self.durable.len());
        let cut = self.durable.len() - at;
        self.durable.truncate(at);
        Some(cut)
    }

    /// The records written but not yet durable, oldest first.
    pub fn unsynced(&self) -> &[WalRecord] {
        &self.unsynced
    }

    /// The records that are durable, oldest first.
    pub fn durable(&self) -> &[WalRecord] {
        &self.durable
    }

    /// Every record written, durable or not, oldest first.
    pub fn records(&self) -> impl DoubleEndedIterator<Item = &WalRecord> {
        self.durable.iter().chain(self.unsynced.iter())
    }

    /// The records a restarting node replays; its lsns start after them.
    pub fn recover(&mut self) -> Vec<WalRecord> {
        assert!(self.unsynced.is_empty(), "recovery happens after a crash");
        self.shift = 0;
        self.durable.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rec(i: u64) -> WalRecord {
        WalRecord::Truncate { group: 0, index: i }
    }

    #[test]
    fn lazy_records_alone_start_no_fsync_and_can_be_lost() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut d = Disk::default();
        d.append(1, rec(1));
        assert_eq!(d.start_fsync(), Some(1));
        d.fsync_done(1);
        d.append(2, WalRecord::Commit { group: 0, index: 1 });
        assert_eq!(d.start_fsync(), None, "a commit record waits for the next record that needs a sync");
        d.append(3, rec(3));
        assert_eq!(d.start_fsync(), Some(3), "and that sync covers it");
        d.fsync_done(3);
        d.append(4, WalRecord::Commit { group: 0, index: 3 });
        assert_eq!(d.crash(&mut rng, 0.0, 0.0), CrashDamage { lost: 1, torn: false });
        assert_eq!(d.recover().len(), 3);
    }

    #[test]
    fn only_fsynced_records_survive_a_plain_crash() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut d = Disk::default();
        d.append(1, rec(1));
        d.append(2, rec(2));
        assert_eq!(d.start_fsync(), Some(2));
        d.append(3, rec(3));
        assert_eq!(d.start_fsync(), None, "one fsync at a time");
        d.fsync_done(2);
        assert_eq!(d.start_fsync(), Some(3));
        let damage = d.crash(&mut rng, 0.0, 0.0);
        assert_eq!(damage, CrashDamage { lost: 1, torn: false });
        assert_eq!(d.recover(), vec![rec(1), rec(2)]);
        // The restarted node numbers its next record after the survivors.
        d.append(3, rec(30));
    }

    #[test]
    fn compaction_replaces_a_durable_prefix_and_lsns_go_on() {
        let mut d = Disk::default();
        for i in 1..=5 {
            d.append(i, rec(i));
        }
        assert_eq!(d.start_fsync(), Some(5));
        d.fsync_done(5);
        d.append(6, rec(6));
        d.compact(4, vec![rec(40), rec(41)]);
        assert_eq!(d.durable(), &[rec(40), rec(41), rec(5)]);
        assert_eq!(d.durable_lsn(), 5);
        d.append(7, rec(7));
        assert_eq!(d.start_fsync(), Some(7));
        d.fsync_done(7);
        assert_eq!(d.durable_lsn(), 7);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        d.crash(&mut rng, 0.0, 0.0);
        assert_eq!(d.recover(), vec![rec(40), rec(41), rec(5), rec(6), rec(7)]);
        // The next incarnation numbers its records after what it replayed.
        d.append(6, rec(8));
        assert_eq!(d.durable_lsn(), 5);
    }

    #[test]
    fn a_torn_tail_loses_only_unsynced_records() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..50 {
            let mut d = Disk::default();
            d.append(1, rec(1));
            d.start_fsync();
            d.fsync_done(1);
            for i in 2..=5 {
                d.append(i, rec(i));
            }
            d.crash(&mut rng, 1.0, 0.5);
            let got = d.recover();
            assert!(!got.is_empty() && got[0] == rec(1));
            assert!(got.iter().enumerate().all(|(i, r)| *r == rec(i as u64 + 1)), "a prefix survives");
        }
    }
}
