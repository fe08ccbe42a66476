//! The in-memory ledger of writes and the read verdicts (DESIGN §2.2).
//!
//! For each key the ledger remembers the last few writes: their sequence number, when the
//! first attempt was sent, when the acknowledgement arrived, or that the outcome is unknown
//! (timed out or cut off: the server may apply it later). A value read back is judged
//! against that memory. Times are microseconds on the process's monotonic clock
//! ([`crate::clock`]), so the ledger is plain data and is tested without a network.
//!
//! Every question asked per operation is answered without walking the keyspace: the keys
//! worth reading are a list kept as they get their first acknowledgement, and the newest
//! settled write comes from an index of acknowledged writes ([`Settling`]).

use std::collections::BTreeSet;

use crate::payload::Payload;

/// Writes remembered per key. A key is rewritten every `keys / rate` seconds (100 s at the
/// defaults), so one record is normally enough; three cover the overlap of a write in flight,
/// a write of unknown outcome and the newest acknowledged one under `rate = "max"`, and keep
/// the ledger at 72 bytes of records per key (plus the index of acknowledged writes in
/// [`Settling`]).
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

/// One remembered write, in 24 bytes: the state rides in the top two bits of the send
/// time (µs since process start; 2^62 µs is 146,000 years), which at `keys = 1000` and
/// three records per key saves 24 KB per target over a separate field and its padding.
#[derive(Clone, Copy, Debug, Default)]
struct Record {
    seq: u64,
    /// `state << STATE_SHIFT | sent_us`.
    sent_and_state: u64,
    acked_us: u64,
}

const STATE_SHIFT: u32 = 62;
const TIME_MASK: u64 = (1 << STATE_SHIFT) - 1;

impl Record {
    fn new(seq: u64, sent_us: u64, state: State) -> Record {
        let mut r = Record {
            seq,
            sent_and_state: sent_us.min(TIME_MASK),
            acked_us: 0,
        };
        r.set_state(state);
        r
    }

    /// When the write's first attempt was sent.
    fn sent_us(&self) -> u64 {
        self.sent_and_state & TIME_MASK
    }

    fn state(&self) -> State {
        match self.sent_and_state >> STATE_SHIFT {
            0 => State::Empty,
            1 => State::InFlight,
            2 => State::Acked,
            _ => State::Unknown,
        }
    }

    fn set_state(&mut self, state: State) {
        let bits: u64 = match state {
            State::Empty => 0,
            State::InFlight => 1,
            State::Acked => 2,
            State::Unknown => 3,
        };
        self.sent_and_state = self.sent_us() | bits << STATE_SHIFT;
    }
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
    /// Per key, whether it is in `readable` (so adding one is O(1)).
    is_readable: Vec<bool>,
    /// The acknowledged writes still remembered, for [`Ledger::newest_settled_key`].
    settling: Settling,
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
            is_readable: Vec::new(),
            settling: Settling::default(),
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
            self.is_readable.resize(idx + 1, false);
        }
        self.settling.advance(now_us.saturating_sub(self.grace_us));
        let slot = &mut self.slots[idx];
        // Replace the oldest record (an empty one has seq 0, so it goes first).
        let oldest = slot
            .iter_mut()
            .min_by_key(|r| r.seq)
            .expect("RECORDS_PER_KEY > 0");
        if oldest.state() == State::Acked {
            self.settling.remove(oldest.seq, oldest.acked_us);
        }
        *oldest = Record::new(seq, now_us, State::InFlight);
        WriteTicket { seq, key_index }
    }

    /// The write was acknowledged (`+OK`) at `acked_us`.
    pub fn write_acked(&mut self, ticket: WriteTicket, acked_us: u64) {
        self.settling
            .advance(acked_us.saturating_sub(self.grace_us));
        if let Some(r) = self.record_mut(ticket) {
            let previous = (r.state() == State::Acked).then_some(r.acked_us);
            r.set_state(State::Acked);
            r.acked_us = acked_us;
            if let Some(previous) = previous {
                self.settling.remove(ticket.seq, previous);
            }
            self.settling.insert(ticket.seq, acked_us);
            let idx = ticket.key_index as usize;
            if !self.is_readable[idx] {
                self.is_readable[idx] = true;
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
        self.forget_ack(ticket);
        if let Some(r) = self.record_mut(ticket) {
            r.set_state(State::Unknown);
        }
    }

    /// The server refused the write for good (OOM, error): it will never be read back.
    pub fn write_rejected(&mut self, ticket: WriteTicket) {
        self.forget_ack(ticket);
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
        let seq = self.settling.newest(limit, |seq| self.acked_us_of(seq))?;
        Some(self.key_of(seq))
    }

    /// Judges what a `GET` of `key_index` returned; `read_sent_us` is when the attempt that
    /// produced `value` was sent.
    pub fn verdict(&self, key_index: u32, read_sent_us: u64, value: Option<&[u8]>) -> Verdict {
        let recs = self.slot(key_index);
        let acked_before = |limit: u64| {
            recs.iter()
                .filter(|r| r.state() == State::Acked && r.acked_us < limit)
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
                (Some(old), _) if read_sent_us < old.sent_us().saturating_add(self.ttl_us) => {
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
                .any(|r| r.seq == seq && matches!(r.state(), State::InFlight | State::Unknown));
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

    /// The key a sequence number of this run was written to (keys go round-robin).
    fn key_of(&self, seq: u64) -> u32 {
        ((seq - 1) % u64::from(self.keys)) as u32
    }

    /// When write `seq` was acknowledged, if the ledger remembers it as acknowledged.
    fn acked_us_of(&self, seq: u64) -> Option<u64> {
        self.slot(self.key_of(seq))
            .iter()
            .find(|r| r.seq == seq && r.state() == State::Acked)
            .map(|r| r.acked_us)
    }

    /// Takes an acknowledged write out of the index, if `ticket` was one (it is not expected
    /// to be: only writes in flight fail).
    fn forget_ack(&mut self, ticket: WriteTicket) {
        if let Some(r) = self.record_mut(ticket)
            && r.state() == State::Acked
        {
            let acked_us = r.acked_us;
            self.settling.remove(ticket.seq, acked_us);
        }
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

/// The acknowledged writes that the ledger still remembers, indexed so that "the newest one
/// acknowledged at or before `limit`" costs O(log n), n being at most `RECORDS_PER_KEY ×
/// keys`.
///
/// Acknowledgements at or before the watermark sit in `settled`, by sequence number alone
/// (their acknowledgement times are in the ledger's records, read back only on the rare
/// walk below; a set of numbers takes half the memory of a map to times): once
/// `limit` has passed the watermark, the newest of them is simply the last. The younger ones
/// (normally those of the last `stale_grace`) sit in `recent`, by acknowledgement time. The
/// watermark follows the clock on every write (`now - stale_grace`), so `recent` stays small
/// and a query looks at a few of its entries. Where it does not hold (a `limit` below the
/// watermark, from a clock read before a write that raced ahead) the answer is still exact,
/// only found by a longer walk.
#[derive(Debug, Default)]
struct Settling {
    /// Sequence numbers of acknowledgements ≤ `watermark`.
    settled: BTreeSet<u64>,
    /// (acknowledgement time, sequence number) for acknowledgements > `watermark`.
    recent: BTreeSet<(u64, u64)>,
    watermark: u64,
}

impl Settling {
    fn insert(&mut self, seq: u64, acked_us: u64) {
        if acked_us <= self.watermark {
            self.settled.insert(seq);
        } else {
            self.recent.insert((acked_us, seq));
        }
    }

    fn remove(&mut self, seq: u64, acked_us: u64) {
        if acked_us <= self.watermark {
            self.settled.remove(&seq);
        } else {
            self.recent.remove(&(acked_us, seq));
        }
    }

    /// Moves every acknowledgement at or before `to` into `settled`.
    fn advance(&mut self, to: u64) {
        if to <= self.watermark {
            return;
        }
        while let Some(&(acked_us, seq)) = self.recent.first()
            && acked_us <= to
        {
            self.recent.pop_first();
            self.settled.insert(seq);
        }
        self.watermark = to;
    }

    /// The highest sequence number acknowledged at or before `limit`; `acked_us_of` gives
    /// the acknowledgement time of a settled one.
    fn newest(&self, limit: u64, acked_us_of: impl Fn(u64) -> Option<u64>) -> Option<u64> {
        let recent = self
            .recent
            .range(..=(limit, u64::MAX))
            .map(|&(_, seq)| seq)
            .max();
        let settled = if limit >= self.watermark {
            self.settled.last().copied()
        } else {
            self.settled
                .iter()
                .rev()
                .find(|&&seq| acked_us_of(seq).is_some_and(|acked_us| acked_us <= limit))
                .copied()
        };
        recent.max(settled)
    }

    /// Acknowledged writes indexed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.settled.len() + self.recent.len()
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
    fn a_key_costs_72_bytes_of_records_and_a_record_keeps_its_fields() {
        assert_eq!(std::mem::size_of::<[Record; RECORDS_PER_KEY]>(), 72);
        for state in [State::Empty, State::InFlight, State::Acked, State::Unknown] {
            for sent in [0, 1, 123_456_789, TIME_MASK] {
                let mut r = Record::new(u64::MAX, sent, state);
                assert_eq!((r.seq, r.sent_us(), r.state()), (u64::MAX, sent, state));
                r.set_state(State::Acked);
                assert_eq!((r.sent_us(), r.state()), (sent, State::Acked));
            }
        }
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

    /// What `newest_settled_key` answered before the index: a walk over every record.
    fn newest_settled_by_scan(l: &Ledger, now_us: u64) -> Option<u32> {
        let limit = now_us.checked_sub(l.grace_us)?;
        l.slots
            .iter()
            .enumerate()
            .flat_map(|(k, recs)| recs.iter().map(move |r| (k, r)))
            .filter(|(_, r)| r.state() == State::Acked && r.acked_us <= limit)
            .max_by_key(|(_, r)| r.seq)
            .map(|(k, _)| k as u32)
    }

    fn acked_records(l: &Ledger) -> usize {
        l.slots
            .iter()
            .flatten()
            .filter(|r| r.state() == State::Acked)
            .count()
    }

    #[test]
    fn the_settled_index_answers_as_a_full_scan_would() {
        use rand::{Rng, SeedableRng};
        for (keys, grace) in [(1, GRACE), (3, GRACE), (50, GRACE), (7, 0)] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(keys) * 31 + grace);
            let mut l = Ledger::new(OWNER, EPOCH, keys, 30 * S, grace);
            let mut now = 0u64;
            let mut in_flight: Vec<WriteTicket> = Vec::new();
            for step in 0..20_000 {
                now += rng.random_range(0..S / 4);
                match rng.random_range(0..10) {
                    0..4 => in_flight.push(l.begin_write(now)),
                    4..8 if !in_flight.is_empty() => {
                        // Acks arrive out of order, and a little before `now` (the clock
                        // was read before the ledger's lock was taken).
                        let w = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
                        l.write_acked(w, now.saturating_sub(rng.random_range(0..S / 10)));
                    }
                    8 if !in_flight.is_empty() => {
                        let w = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
                        if rng.random_bool(0.5) {
                            l.write_unknown(w);
                        } else {
                            l.write_rejected(w);
                        }
                    }
                    _ => {}
                }
                // Mostly now, sometimes a clock read a while ago.
                let at = now.saturating_sub(rng.random_range(0..2) * rng.random_range(0..3 * S));
                assert_eq!(
                    l.newest_settled_key(at),
                    newest_settled_by_scan(&l, at),
                    "keys {keys}, grace {grace}, step {step}, at {at}"
                );
                assert_eq!(l.settling.len(), acked_records(&l), "step {step}");
            }
        }
    }

    #[test]
    fn a_settled_write_replaced_by_newer_ones_is_no_longer_read_by_the_probe() {
        let mut l = ledger(1);
        let a = l.begin_write(S);
        l.write_acked(a, S);
        assert_eq!(l.newest_settled_key(3 * S), Some(0));
        // Three newer writes still in flight push the acknowledged one out of the ledger.
        for t in [4, 5, 6] {
            l.begin_write(t * S);
        }
        assert_eq!(l.newest_settled_key(7 * S), None);
        assert_eq!(l.settling.len(), 0);
    }

    #[test]
    fn writes_of_unknown_outcome_are_not_settled_but_older_acks_of_their_key_are() {
        let mut l = ledger(2);
        let a = l.begin_write(S); // key 0
        let b = l.begin_write(S); // key 1
        l.write_acked(a, 2 * S);
        l.write_acked(b, 3 * S);
        let c = l.begin_write(4 * S); // key 0 again
        l.write_unknown(c);
        let d = l.begin_write(5 * S); // key 1 again
        l.write_rejected(d);
        // The newest settled acknowledgement is still b's: c and d never were.
        assert_eq!(l.newest_settled_key(10 * S), Some(1));
        assert_eq!(l.settling.len(), 2);
        // Both keys stay readable, and the unknown write read back is fresh.
        assert_eq!(l.pick_read_key(|_| 0), Some(0));
        assert_eq!(l.pick_read_key(|_| 1), Some(1));
        assert_eq!(l.verdict(0, 10 * S, Some(&value(c.seq, 0))), Verdict::Fresh);
    }

    #[test]
    fn keys_past_their_ttl_stay_readable_and_their_nil_is_no_loss() {
        let mut l = ledger(2);
        let a = l.begin_write(S);
        l.write_acked(a, S);
        let after_ttl = S + TTL + 1;
        // The probe still reads it: nil there is judged by the verdict, not hidden.
        assert_eq!(l.newest_settled_key(after_ttl), Some(0));
        assert_eq!(l.pick_read_key(|_| 0), Some(0));
        assert_eq!(l.verdict(0, after_ttl, None), Verdict::Fresh);
        assert_eq!(l.verdict(0, S + TTL - 1, None), Verdict::Missing);
    }

    #[test]
    fn a_key_is_listed_once_however_often_it_is_acknowledged() {
        let mut l = ledger(3);
        for t in 0..30 {
            let w = l.begin_write(t * S);
            if w.key_index != 2 {
                l.write_acked(w, t * S);
            }
        }
        assert_eq!(l.readable, [0, 1]);
        assert_eq!(l.pick_read_key(|n| n - 1), Some(1));
        assert_eq!(l.settling.len(), acked_records(&l));
    }
}
