//! One read (DESIGN §2.2): `GET` a key with an acknowledged write and judge the value.

use std::time::Instant;

use crate::attempt::{Request, bulk, is_bulk};
use crate::op::Op;
use crate::pool::Pool;
use crate::schedule::Run;
use crate::shutdown::Shutdown;
use crate::target::TargetState;

impl TargetState {
    /// One read: `GET` a key with an acknowledged write and judge the value.
    pub async fn read_once(
        &self,
        pool: &Pool,
        scheduled: Instant,
        run: Run,
        shutdown: &mut Shutdown,
    ) {
        // With nothing acknowledged yet (a read-only target, or a target down since start)
        // key 0 is read anyway: read availability is measured even when writes fail.
        let index = self
            .lock_ledger()
            .pick_read_key(|n| rand::random_range(0..n))
            .unwrap_or(0);
        let key = self.key(index);
        let args: [&[u8]; 2] = [b"GET", &key];
        let mut tries = self.new_tries(run);
        let Some(f) = self
            .execute(
                pool,
                Op::Read,
                Request {
                    args: &args,
                    accept: is_bulk,
                    max_retries: self.retries(run),
                    slot: self.slot(index),
                },
                &mut tries,
                shutdown,
            )
            .await
        else {
            return;
        };
        if run == Run::Watch {
            return;
        }
        if let Some(value) = f.reply.as_ref().and_then(bulk) {
            let verdict = self.lock_ledger().verdict(index, f.sent_us, value);
            self.record_verdict(Op::Read, index, verdict, f.backend.as_deref());
        }
        self.finish(
            Op::Read,
            scheduled,
            f.outcome,
            tries,
            "GET",
            f.shard.as_ref(),
        );
    }
}
