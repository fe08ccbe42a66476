//! The fresh-connection probe (DESIGN §2.8).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::attempt::{bulk, is_bulk};
use crate::op::{Kind, Op, Outcome};
use crate::schedule::Run;
use crate::target::TargetState;

impl TargetState {
    /// One fresh-connection probe (DESIGN §2.8): connect, identify, one verified `GET` of
    /// the newest key acknowledged at least `stale_grace` ago, close. No retries: it shows
    /// what a client that connects right now meets, e.g. a dead backend still in rotation.
    pub async fn probe_once(&self, scheduled: Instant) {
        let mut tries = self.new_tries(Run::Operation);
        let sent_us = self.clock.now_us();
        let outcome = match self.connect(Kind::Probe).await {
            // Not the target's failure: this probe is abandoned, uncounted.
            Err(e) if e.internal_cause().is_some() => return,
            Err(e) => {
                let observed_us = self.clock.now_us();
                self.try_failed(Op::Probe, sent_us, observed_us, e.result(), &e);
                self.connect_failed(&mut tries, sent_us, observed_us, e.result());
                Outcome::Failed
            }
            Ok(mut conn) => {
                let key = self.lock_ledger().newest_settled_key(self.clock.now_us());
                let outcome = match key {
                    None => {
                        self.try_succeeded(Op::Probe, sent_us, self.clock.now_us());
                        Outcome::Ok
                    }
                    Some(index) => {
                        let k = self.key(index);
                        let a = self
                            .attempt(&mut conn, Op::Probe, &[b"GET", &k], is_bulk, &mut tries)
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
        self.finish(Op::Probe, scheduled, outcome, tries, "PROBE");
    }
}
