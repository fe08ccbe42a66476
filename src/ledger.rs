//! The in-memory ledger of writes and the read verdicts (DESIGN §2.2).
//!
//! For each key the ledger remembers the last few writes: their sequence number, when the
//! first attempt was sent, when the acknowledgement arrived, or that the outcome is unknown
//! (timed out or cut off: the server may apply it later). A value read back is judged
//! against that memory. Times are microseconds on the process's monotonic clock
//! ([`crate::clock`]), so the ledger is plain data and is tested without a network.

use crate::payload::Payload;

/// Writes remembered per key. A key is rewritten every `keys / rate` seconds (100 s at the
/// defaults), so one record is normally enough; three cover the overlap of a write in flight,
/// a write of unknown outcome and the newest acknowledged one under `rate = "max"`, and keep
/// the ledger at about 100 bytes per key.
const RECORDS_PER_KEY: usize = 3;

/// What a read saw, judged against the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Fresh,
    Lagging,
    Stale,
    Missing,
    Corrupt,
}

impl Verdict {
    /// Every verdict, in label order.
    pub const ALL: [Verdict; 5] = [
        Verdict::Fresh,
        Verdict::Lagging,
        Verdict::Stale,
        Verdict::Missing,
        Verdict::Corrupt,
    ];

    /// The label value, as in DESIGN §6.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Fresh => "fresh",
            Verdict::Lagging => "lagging",
            Verdict::Stale => "stale",
            Verdict::Missing => "missing",
            Verdict::Corrupt => "corrupt",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Empty,
    InFlight,
    Acked,
    Unknown,
}

#[derive(Clone, Copy, Debug, Default)]
struct Record {
    seq: u64,
    sent_us: u64,
    acked_us: u64,
    state: State,
}

/// A write handed out by [`Ledger::begin_write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteTicket {
    pub seq: u64,
    pub key_index: u32,
}

/// Who we are, what we remember, and the rules for judging reads.
#[derive(Debug)]
pub struct Ledger {
    owner: u64,
    epoch_us: u64,
    keys: u32,
    ttl_us: u64,
    grace_us: u64,
    next_seq: u64,
    slots: Vec<[Record; RECORDS_PER_KEY]>,
    /// Keys with at least one acknowledged write in this run: the ones worth reading.
    readable: Vec<u32>,
    /// The newest acknowledged write, followed on the direct nodes (DESIGN §2.6).
    latest_acked: Option<Acked>,
}

/// An acknowledged write, as followed on the direct nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked {
    pub key_index: u32,
    pub seq: u64,
    pub acked_us: u64,
}

impl Ledger {
    /// A ledger for one target. `owner` is [`crate::payload::owner_hash`], `epoch_us` the
    /// process start as written into values.
    pub fn new(owner: u64, epoch_us: u64, keys: u32, ttl_us: u64, grace_us: u64) -> Ledger {
        Ledger {
            owner,
            epoch_us,
            keys: keys.max(1),
            ttl_us,
            grace_us,
            next_seq: 1,
            slots: Vec::new(),
            readable: Vec::new(),
            latest_acked: None,
        }
    }

    /// Allocates the next write: keys are written round-robin so every key is refreshed at
    /// the same pace and the keyspace stays bounded.
    pub fn begin_write(&mut self, now_us: u64) -> WriteTicket {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key_index = ((seq - 1) % u64::from(self.keys)) as u32;
        let idx = key_index as usize;
        if idx >= self.slots.len() {
            self.slots.resize(idx + 1, Default::default());
        }
        let slot = &mut self.slots[idx];
        // Replace the oldest record (an empty one has seq 0, so it goes first).
        let oldest = slot
            .iter_mut()
            .min_by_key(|r| r.seq)
            .expect("RECORDS_PER_KEY > 0");
        *oldest = Record {
            seq,
            sent_us: now_us,
            acked_us: 0,
            state: State::InFlight,
        };
        WriteTicket { seq, key_index }
    }

    /// The write was acknowledged (`+OK`) at `acked_us`.
    pub fn write_acked(&mut self, ticket: WriteTicket, acked_us: u64) {
        let first_ack = !self
            .slot(ticket.key_index)
            .iter()
            .any(|r| r.state == State::Acked);
        if let Some(r) = self.record_mut(ticket) {
            r.state = State::Acked;
            r.acked_us = acked_us;
            if first_ack && !self.readable.contains(&ticket.key_index) {
                self.readable.push(ticket.key_index);
            }
            if self.latest_acked.is_none_or(|l| l.seq < ticket.seq) {
                self.latest_acked = Some(Acked {
                    key_index: ticket.key_index,
                    seq: ticket.seq,
                    acked_us,
                });
            }
        }
    }

    /// The newest acknowledged write.
    pub fn latest_acked(&self) -> Option<Acked> {
        self.latest_acked
    }

    /// Whether `value` read from a node shows write `seq` (or a newer one) of this run.
    pub fn shows(&self, seq: u64, value: Option<&[u8]>) -> bool {
        match value.map(Payload::decode) {
            Some(Ok(p)) => p.owner == self.owner && p.epoch_us == self.epoch_us && p.seq >= seq,
            _ => false,
        }
    }

    /// Retries ran out after a timeout or a broken connection: the write may still land.
    pub fn write_unknown(&mut self, ticket: WriteTicket) {
        if let Some(r) = self.record_mut(ticket) {
            r.state = State::Unknown;
        }
    }

    /// The server refused the write for good (OOM, error): it will never be read back.
    pub fn write_rejected(&mut self, ticket: WriteTicket) {
        if let Some(r) = self.record_mut(ticket) {
            *r = Record::default();
        }
    }

    /// A key with an acknowledged write, chosen by `pick` (an index below the count given).
    pub fn pick_read_key(&self, pick: impl FnOnce(usize) -> usize) -> Option<u32> {
        if self.readable.is_empty() {
            return None;
        }
        let i = pick(self.readable.len()).min(self.readable.len() - 1);
        Some(self.readable[i])
    }

    /// The key whose newest acknowledgement is the newest one at least `stale_grace` old:
    /// what the fresh-connection probe reads (DESIGN §2.8).
    pub fn newest_settled_key(&self, now_us: u64) -> Option<u32> {
        let limit = now_us.checked_sub(self.grace_us)?;
        self.slots
            .iter()
            .enumerate()
            .flat_map(|(k, recs)| recs.iter().map(move |r| (k, r)))
            .filter(|(_, r)| r.state == State::Acked && r.acked_us <= limit)
            .max_by_key(|(_, r)| r.seq)
            .map(|(k, _)| k as u32)
    }

    /// Judges what a `GET` of `key_index` returned; `read_sent_us` is when the attempt that
    /// produced `value` was sent.
    pub fn verdict(&self, key_index: u32, read_sent_us: u64, value: Option<&[u8]>) -> Verdict {
        let recs = self.slot(key_index);
        let acked_before = |limit: u64| {
            recs.iter()
                .filter(|r| r.state == State::Acked && r.acked_us < limit)
                .max_by_key(|r| r.seq)
        };
        let newest = acked_before(read_sent_us);
        let old_limit = read_sent_us.saturating_sub(self.grace_us);
        let newest_old = if read_sent_us >= self.grace_us {
            acked_before(old_limit)
        } else {
            None
        };

        let Some(bytes) = value else {
            return match (newest_old, newest) {
                (Some(old), _) if read_sent_us < old.sent_us.saturating_add(self.ttl_us) => {
                    Verdict::Missing
                }
                (Some(_), _) => Verdict::Fresh, // expired by its TTL, as it should
                (None, Some(_)) => Verdict::Lagging,
                (None, None) => Verdict::Fresh,
            };
        };
        let Ok(p) = Payload::decode(bytes) else {
            return Verdict::Corrupt;
        };
        let foreign = p.owner != self.owner || p.key_index != key_index;
        let from_the_future = p.epoch_us > self.epoch_us;
        // In this run, sequence numbers map to keys round-robin and were all handed out by us.
        let impossible_seq = p.epoch_us == self.epoch_us
            && (p.seq == 0
                || p.seq >= self.next_seq
                || (p.seq - 1) % u64::from(self.keys) != u64::from(key_index));
        if foreign || from_the_future || impossible_seq {
            return Verdict::Corrupt;
        }
        // A value from an earlier run of this instance (an old snapshot) is older than any
        // write of this run: it compares as sequence 0.
        let seq = if p.epoch_us < self.epoch_us { 0 } else { p.seq };
        let pending = seq != 0
            && recs
                .iter()
                .any(|r| r.seq == seq && matches!(r.state, State::InFlight | State::Unknown));
        match newest {
            _ if pending => Verdict::Fresh,
            // Nothing acknowledged before this read: nothing it could have missed.
            None => Verdict::Fresh,
            Some(n) if seq >= n.seq => Verdict::Fresh,
            Some(_) => match newest_old {
                Some(o) if seq < o.seq => Verdict::Stale,
                _ => Verdict::Lagging,
            },
        }
    }

    /// The highest sequence number handed out so far.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    fn slot(&self, key_index: u32) -> &[Record] {
        self.slots
            .get(key_index as usize)
            .map(|s| &s[..])
            .unwrap_or(&[])
    }

    fn record_mut(&mut self, ticket: WriteTicket) -> Option<&mut Record> {
        self.slots
            .get_mut(ticket.key_index as usize)?
            .iter_mut()
            .find(|r| r.seq == ticket.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: u64 = 77;
    const EPOCH: u64 = 1_000_000_000;
    const S: u64 = 1_000_000; // one second in µs
    const GRACE: u64 = S;
    const TTL: u64 = 3600 * S;

    fn ledger(keys: u32) -> Ledger {
        Ledger::new(OWNER, EPOCH, keys, TTL, GRACE)
    }

    fn value(seq: u64, key: u32) -> Vec<u8> {
        value_with(OWNER, EPOCH, seq, key)
    }

    fn value_with(owner: u64, epoch: u64, seq: u64, key: u32) -> Vec<u8> {
        let mut out = Vec::new();
        Payload {
            owner,
            epoch_us: epoch,
            seq,
            key_index: key,
            written_us: 0,
        }
        .encode_into(64, &mut out);
        out
    }

    /// A ledger with one key written twice: seq 1 acked at 10 s, seq 2 acked at 20 s.
    fn two_writes() -> Ledger {
        let mut l = ledger(1);
        let a = l.begin_write(9 * S);
        l.write_acked(a, 10 * S);
        let b = l.begin_write(19 * S);
        l.write_acked(b, 20 * S);
        l
    }

    #[test]
    fn the_newest_acknowledged_value_is_fresh() {
        let l = two_writes();
        assert_eq!(l.verdict(0, 30 * S, Some(&value(2, 0))), Verdict::Fresh);
    }

    #[test]
    fn an_older_value_within_stale_grace_is_lagging() {
        let l = two_writes();
        // seq 2 was acked 0.5 s before the read: replication may not have caught up.
        assert_eq!(
            l.verdict(0, 20 * S + S / 2, Some(&value(1, 0))),
            Verdict::Lagging
        );
    }

    #[test]
    fn an_older_value_past_stale_grace_is_stale() {
        let l = two_writes();
        assert_eq!(l.verdict(0, 25 * S, Some(&value(1, 0))), Verdict::Stale);
    }

    #[test]
    fn a_value_from_an_older_epoch_of_this_instance_is_stale() {
        let l = two_writes();
        let old = value_with(OWNER, EPOCH - 5 * S, 2, 0);
        assert_eq!(l.verdict(0, 25 * S, Some(&old)), Verdict::Stale);
        // ...but only lagging while our newest write is younger than stale_grace,
        assert_eq!(l.verdict(0, 10 * S + S / 2, Some(&old)), Verdict::Lagging);
        // ...and expected on a key this run has not written yet.
        assert_eq!(ledger(1).verdict(0, 25 * S, Some(&old)), Verdict::Fresh);
    }

    #[test]
    fn nil_after_a_settled_acknowledgement_is_missing() {
        let l = two_writes();
        assert_eq!(l.verdict(0, 25 * S, None), Verdict::Missing);
    }

    #[test]
    fn nil_while_only_young_acknowledgements_exist_is_lagging() {
        let mut l = ledger(1);
        let a = l.begin_write(9 * S);
        l.write_acked(a, 10 * S);
        assert_eq!(l.verdict(0, 10 * S + S / 2, None), Verdict::Lagging);
    }

    #[test]
    fn nil_after_the_ttl_ran_out_is_fresh() {
        let l = two_writes();
        assert_eq!(l.verdict(0, 19 * S + TTL + 1, None), Verdict::Fresh);
    }

    #[test]
    fn a_write_of_unknown_outcome_read_back_is_fresh() {
        let mut l = two_writes();
        let c = l.begin_write(30 * S);
        l.write_unknown(c);
        assert_eq!(l.verdict(0, 40 * S, Some(&value(3, 0))), Verdict::Fresh);
        // ...and a write still in flight is fresh as well.
        let d = l.begin_write(41 * S);
        assert_eq!(l.verdict(0, 42 * S, Some(&value(d.seq, 0))), Verdict::Fresh);
    }

    #[test]
    fn an_older_value_is_stale_even_when_a_newer_write_is_unknown() {
        let mut l = two_writes();
        let c = l.begin_write(30 * S);
        l.write_unknown(c);
        assert_eq!(l.verdict(0, 40 * S, Some(&value(1, 0))), Verdict::Stale);
    }

    #[test]
    fn foreign_wrong_key_future_and_garbled_values_are_corrupt() {
        let l = two_writes();
        let cases = [
            value_with(OWNER + 1, EPOCH, 2, 0), // another instance or target
            value_with(OWNER, EPOCH + 1, 2, 0), // an epoch newer than ours
            value(2, 1),                        // another key's value
            value(99, 0),                       // a sequence never handed out
            b"not a canary value".to_vec(),
        ];
        for v in cases {
            assert_eq!(l.verdict(0, 25 * S, Some(&v)), Verdict::Corrupt);
        }
    }

    #[test]
    fn rejected_writes_are_forgotten_and_keys_rotate() {
        let mut l = ledger(2);
        let a = l.begin_write(S);
        let b = l.begin_write(S);
        assert_eq!((a.key_index, b.key_index), (0, 1));
        l.write_rejected(a);
        l.write_acked(b, 2 * S);
        assert_eq!(l.pick_read_key(|_| 0), Some(1));
        assert_eq!(l.pick_read_key(|n| n + 5), Some(1));
        assert_eq!(l.begin_write(3 * S).key_index, 0);
        // nothing acknowledged on key 0: nil there is not data loss
        assert_eq!(l.verdict(0, 10 * S, None), Verdict::Fresh);
    }

    #[test]
    fn the_latest_acknowledgement_is_followed_and_recognised_on_a_node() {
        let mut l = ledger(10);
        let a = l.begin_write(S);
        let b = l.begin_write(S);
        l.write_acked(b, 2 * S);
        l.write_acked(a, 3 * S); // out of order: b is still the newest write
        let latest = l.latest_acked().unwrap();
        assert_eq!((latest.seq, latest.key_index), (b.seq, b.key_index));
        assert!(l.shows(b.seq, Some(&value(b.seq, b.key_index))));
        assert!(!l.shows(b.seq, Some(&value(a.seq, a.key_index))));
        assert!(!l.shows(b.seq, None));
        assert!(!l.shows(b.seq, Some(&value_with(OWNER, EPOCH - 1, 9, 1))));
    }

    #[test]
    fn an_empty_ledger_has_nothing_to_read() {
        assert_eq!(ledger(10).pick_read_key(|_| 0), None);
    }

    #[test]
    fn the_probe_reads_the_newest_settled_key() {
        let mut l = ledger(3);
        for t in [1, 2, 3] {
            let w = l.begin_write(t * S);
            l.write_acked(w, t * S);
        }
        assert_eq!(l.newest_settled_key(3 * S + S / 2), Some(1));
        assert_eq!(l.newest_settled_key(10 * S), Some(2));
        assert_eq!(ledger(3).newest_settled_key(10 * S), None);
    }

    #[test]
    fn memory_per_key_stays_bounded() {
        let mut l = ledger(1);
        for t in 0..100 {
            let w = l.begin_write(t);
            l.write_acked(w, t);
        }
        assert_eq!(l.slots.len(), 1);
        assert_eq!(l.readable.len(), 1);
        assert_eq!(l.last_seq(), 100);
    }
}
