//! The fresh-connection probe (DESIGN §2.8).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::attempt::{bulk, is_bulk};
use crate::classify::ResultKind;
use crate::op::{Kind, Op, Outcome};
use crate::schedule::Run;
use crate::target::TargetState;
use crate::topology::cluster::{Cluster, ProbeRoute};

impl TargetState {
    /// One fresh-connection probe (DESIGN §2.8): connect, identify, one verified `GET` of
    /// the newest key acknowledged at least `stale_grace` ago, close. No retries: it shows
    /// what a client that connects right now meets, e.g. a dead backend still in rotation.
    pub async fn probe_once(&self, scheduled: Instant) {
        if let Some(c) = &self.cluster
            && let Some(route) = c.probe_route()
        {
            return self.probe_shard(c, route, scheduled).await;
        }
        let mut tries = self.new_tries(Run::Operation);
        let sent_us = self.clock.now_us();
        let outcome = match self.connect(Kind::Probe).await {
            // Not the target's failure: this probe is abandoned, uncounted.
            Err(e) if e.internal_cause().is_some() => return,
            Err(e) => {
                let observed_us = self.clock.now_us();
                self.try_failed(Op::Probe, sent_us, observed_us, e.result(), &e, None);
                self.connect_failed(&mut tries, sent_us, observed_us, e.result());
                Outcome::Failed
            }
            Ok(mut conn) => {
                let key = self.lock_ledger().newest_settled_key(self.clock.now_us());
                let outcome = match key {
                    None => {
                        self.try_succeeded(Op::Probe, sent_us, self.clock.now_us(), None);
                        Outcome::Ok
                    }
                    Some(index) => {
                        let k = self.key(index);
                        let a = self
                            .attempt(
                                &mut conn,
                                Op::Probe,
                                &[b"GET", &k],
                                is_bulk,
                                &mut tries,
                                None,
                            )
                            .await;
                        match a.reply.as_ref().map(bulk) {
                            Ok(Some(value)) => {
                                let verdict = self.lock_ledger().verdict(index, a.sent_us, value);
                                self.record_verdict(Op::Probe, index, verdict, Some(&conn.backend));
                                Outcome::Ok
                            }
                            Err(e) if e.is_peer_close() => {
                                self.metrics.kind(Kind::Probe).drops.inc();
                                Outcome::Failed
                            }
                            _ => Outcome::Failed,
                        }
                    }
                };
                conn.close(Duration::from_millis(100)).await;
                outcome
            }
        };
        self.probe_failing
            .store(outcome == Outcome::Failed, Ordering::Relaxed);
        self.finish(Op::Probe, scheduled, outcome, tries, "PROBE", None);
    }

    /// The probe of a cluster target: a fresh connection to the master of each shard in turn,
    /// and one verified `GET` of an acknowledged key of that shard.
    async fn probe_shard(&self, c: &Cluster, route: ProbeRoute, scheduled: Instant) {
        let (addr, shard, ranges) = route;
        let mut tries = self.new_tries(Run::Operation);
        let sent_us = self.clock.now_us();
        let outcome = match self.connect_node(Kind::Probe, c, &addr).await {
            Err(e) if e.internal_cause().is_some() => return,
            Err(e) => {
                c.unreachable(&addr);
                let observed_us = self.clock.now_us();
                self.try_failed(
                    Op::Probe,
                    sent_us,
                    observed_us,
                    e.result(),
                    &e,
                    Some(&shard),
                );
                self.connect_failed(&mut tries, sent_us, observed_us, e.result());
                Outcome::Failed
            }
            Ok(mut conn) => {
                c.reached(&addr);
                // A key of this shard with an acknowledged write: drawn until one falls in
                // the shard's ranges (a shard with a third of the slots: three draws).
                let in_shard = |i: u32| {
                    self.slot(i)
                        .is_some_and(|s| ranges.iter().any(|&(a, b)| (a..=b).contains(&s)))
                };
                let key = {
                    let ledger = self.lock_ledger();
                    (0..SHARD_KEY_DRAWS)
                        .filter_map(|_| ledger.pick_read_key(|n| rand::random_range(0..n)))
                        .find(|&i| in_shard(i))
                };
                let outcome = match key {
                    None => {
                        self.try_succeeded(Op::Probe, sent_us, self.clock.now_us(), Some(&shard));
                        Outcome::Ok
                    }
                    Some(index) => {
                        let k = self.key(index);
                        let a = self
                            .attempt(
                                &mut conn,
                                Op::Probe,
                                &[b"GET", &k],
                                is_bulk,
                                &mut tries,
                                Some(&shard),
                            )
                            .await;
                        match a.reply.as_ref().map(bulk) {
                            Ok(Some(value)) => {
                                let verdict = self.lock_ledger().verdict(index, a.sent_us, value);
                                self.record_verdict(Op::Probe, index, verdict, Some(&conn.backend));
                                Outcome::Ok
                            }
                            // The key is migrating: the node answered as it should.
                            Err(e) if matches!(e.result(), ResultKind::Moved | ResultKind::Ask) => {
                                Outcome::Ok
                            }
                            Err(e) if e.is_peer_close() => {
                                self.metrics.kind(Kind::Probe).drops.inc();
                                Outcome::Failed
                            }
                            _ => Outcome::Failed,
                        }
                    }
                };
                conn.close(Duration::from_millis(100)).await;
                outcome
            }
        };
        self.probe_failing
            .store(outcome == Outcome::Failed, Ordering::Relaxed);
        self.finish(Op::Probe, scheduled, outcome, tries, "PROBE", Some(&shard));
    }
}

/// Draws of an acknowledged key before a cluster probe settles for none.
const SHARD_KEY_DRAWS: usize = 16;
