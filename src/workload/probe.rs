//! The fresh-connection probe (DESIGN §2.8).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::attempt::{Command, Tries, bulk, is_bulk};
use crate::classify::ResultKind;
use crate::conn::Conn;
use crate::op::{Kind, Op, Outcome};
use crate::schedule::Run;
use crate::target::TargetState;

impl TargetState {
    /// One fresh-connection probe (DESIGN §2.8): connect, identify, one verified `GET` of
    /// the newest key acknowledged at least `stale_grace` ago, close. No retries: it shows
    /// what a client that connects right now meets, e.g. a dead backend still in rotation.
    /// A cluster target's probe goes to each shard's master in turn and reads back a key of
    /// that shard.
    pub async fn probe_once(&self, scheduled: Instant) {
        let route = self
            .cluster
            .as_ref()
            .and_then(|c| Some((c.as_ref(), c.probe_route()?)));
        let shard = route.as_ref().map(|(_, (_, shard, _))| shard);
        let mut tries = self.new_tries(Run::Operation);
        let sent_us = self.clock.now_us();
        let connected = match &route {
            Some((c, (addr, _, _))) => self.connect_node(Kind::Probe, c, addr).await,
            None => self.connect(Kind::Probe).await,
        };
        let outcome = match connected {
            // Not the target's failure: this probe is abandoned, uncounted.
            Err(e) if e.internal_cause().is_some() => return,
            Err(e) => {
                if let Some((c, (addr, _, _))) = &route {
                    c.unreachable(addr);
                }
                let observed_us = self.clock.now_us();
                self.try_failed(Op::Probe, sent_us, observed_us, e.result(), &e, shard);
                self.connect_failed(&mut tries, sent_us, observed_us, e.result());
                Outcome::Failed
            }
            Ok(mut conn) => {
                let key = match &route {
                    Some((c, (addr, _, ranges))) => {
                        c.reached(addr);
                        self.acked_key_in(ranges)
                    }
                    None => self.lock_ledger().newest_settled_key(self.clock.now_us()),
                };
                let outcome = match key {
                    None => {
                        self.try_succeeded(Op::Probe, sent_us, self.clock.now_us(), shard);
                        Outcome::Ok
                    }
                    Some(index) => self.read_back(&mut conn, index, &mut tries, shard).await,
                };
                conn.close(Duration::from_millis(100)).await;
                outcome
            }
        };
        self.probe_failing
            .store(outcome == Outcome::Failed, Ordering::Relaxed);
        self.finish(Op::Probe, scheduled, outcome, tries, "PROBE", shard);
    }

    /// The probe's verified `GET` of key `index` on its fresh connection.
    async fn read_back(
        &self,
        conn: &mut Conn,
        index: u32,
        tries: &mut Tries,
        shard: Option<&Arc<str>>,
    ) -> Outcome {
        let k = self.key(index);
        let a = self
            .attempt(
                conn,
                Op::Probe,
                Command {
                    args: &[b"GET", &k],
                    accept: is_bulk,
                    asking: false,
                },
                tries,
                shard,
            )
            .await;
        match a.reply.as_ref().map(bulk) {
            Ok(Some(value)) => {
                let verdict = self.lock_ledger().verdict(index, a.sent_us, value);
                self.record_verdict(Op::Probe, index, verdict, Some(&conn.backend));
                Outcome::Ok
            }
            // A cluster key that is migrating: the node answered as it should.
            Err(e)
                if shard.is_some() && matches!(e.result(), ResultKind::Moved | ResultKind::Ask) =>
            {
                Outcome::Ok
            }
            Err(e) if e.is_peer_close() => {
                self.metrics.kind(Kind::Probe).drops.inc();
                Outcome::Failed
            }
            _ => Outcome::Failed,
        }
    }

    /// A key with an acknowledged write whose slot is in `ranges` (a cluster shard's),
    /// drawn until one falls there (a shard with a third of the slots: three draws).
    fn acked_key_in(&self, ranges: &[(u16, u16)]) -> Option<u32> {
        let in_shard = |i: u32| {
            self.slot(i)
                .is_some_and(|s| ranges.iter().any(|&(a, b)| (a..=b).contains(&s)))
        };
        let ledger = self.lock_ledger();
        (0..SHARD_KEY_DRAWS)
            .filter_map(|_| ledger.pick_read_key(|n| rand::random_range(0..n)))
            .find(|&i| in_shard(i))
    }
}

/// Draws of an acknowledged key before a cluster probe settles for none.
const SHARD_KEY_DRAWS: usize = 16;
