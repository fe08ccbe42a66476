//! One write (DESIGN §2.1): the next sequence number to its key, `SET key value PX ttl`, and its acknowledgement in the ledger.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::attempt::{Finished, Request, is_ok_status};
use crate::ledger::{Acked, WriteTicket};
use crate::op::{Op, Outcome};
use crate::payload::Payload;
use crate::pool::Pool;
use crate::schedule::Run;
use crate::shutdown::Shutdown;
use crate::target::TargetState;
use crate::workload::NODE_FOLLOW_INTERVAL;

impl TargetState {
    /// One write: the next sequence number to its key, `SET key value PX ttl`.
    pub async fn write_once(
        &self,
        pool: &Pool,
        scheduled: Instant,
        run: Run,
        shutdown: &mut Shutdown,
    ) {
        let ticket = self.lock_ledger().begin_write(self.clock.now_us());
        let key = self.key(ticket.key_index);
        let mut value = Vec::with_capacity(self.settings.value_size);
        Payload {
            owner: self.owner,
            epoch_us: self.clock.epoch_us(),
            seq: ticket.seq,
            key_index: ticket.key_index,
            written_us: self.clock.unix_us(self.clock.now_us()),
        }
        .encode_into(self.settings.value_size, &mut value);
        let args: [&[u8]; 5] = [b"SET", &key, &value, b"PX", &self.ttl_ms];
        let mut tries = self.new_tries(run);
        let Some(f) = self
            .execute(
                pool,
                Op::Write,
                Request {
                    args: &args,
                    accept: is_ok_status,
                    max_retries: self.retries(run),
                    slot: self.slot(ticket.key_index),
                },
                &mut tries,
                shutdown,
            )
            .await
        else {
            self.lock_ledger().write_unknown(ticket);
            return;
        };
        self.record_write(ticket, &f);
        if run == Run::Operation {
            self.finish(
                Op::Write,
                scheduled,
                f.outcome,
                tries,
                "SET",
                f.shard.as_ref(),
            );
        }
    }

    pub(crate) fn record_write(&self, ticket: WriteTicket, f: &Finished) {
        let mut ledger = self.lock_ledger();
        match f.outcome {
            Outcome::Ok | Outcome::Recovered => ledger.write_acked(ticket, f.observed_us),
            Outcome::Failed if f.may_have_applied => ledger.write_unknown(ticket),
            Outcome::Failed => ledger.write_rejected(ticket),
        }
        drop(ledger);
        let due = self.follow_due_us.load(Ordering::Relaxed);
        if f.outcome != Outcome::Failed
            && self.follows_nodes
            && f.observed_us >= due
            && self
                .follow_due_us
                .compare_exchange(
                    due,
                    f.observed_us + NODE_FOLLOW_INTERVAL.as_micros() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.follow.send_replace(Some(Acked {
                key_index: ticket.key_index,
                seq: ticket.seq,
                acked_us: f.observed_us,
            }));
        }
    }
}
