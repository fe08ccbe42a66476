//! The connections of one loop: `connections` slots, at most that many attempts in flight,
//! and the pace of reconnects while the endpoint keeps failing. A cluster target's loop
//! keeps slots per node (each slot remembers the node it connects to); there are still at
//! most `connections` attempts in flight. A slot is lent out as a
//! [`SlotGuard`] that puts it back when dropped, however the borrower ends (a reply, an
//! error, or its future dropped by a drain that timed out at shutdown).
//!
//! A pool opens one connection to a destination at a time: while a borrower connects and
//! no idle connection is there, the next borrower waits for a slot to come back instead of
//! connecting beside it. Without that, a start of thousands of targets (connects slower
//! than a tick) opened every slot of every loop at once: 5,000 targets with `connections =
//! 2` ran out of file descriptors. A second connection still opens whenever the first is
//! busy with a command (that is what `connections` is for).

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::conn::Conn;
use crate::shutdown::Shutdown;
use crate::topology::cluster::map::Addr;

/// One connection slot: the connection, and which backend it last reached (to count
/// switches when it reconnects elsewhere).
#[derive(Default)]
pub struct Slot {
    pub conn: Option<Conn>,
    pub last_run_id: Option<String>,
    /// The cluster node this slot connects to; `None` for the target's endpoint.
    pub dest: Option<Addr>,
}

/// Most slots a pool keeps (idle ones beyond are closed): a cluster's nodes times
/// `connections`, bounded whatever a hostile slot map names.
const MAX_SLOTS: usize = 1024;

/// The shortest pause between two connects of a pool after a failed one; doubles with each
/// failure up to [`MAX_CONNECT_PACE`].
const MIN_CONNECT_PACE: Duration = Duration::from_millis(25);
/// The longest pause between two connects of a pool while its endpoint keeps failing: a
/// target that fails fast (refused, wrong password) used to be reconnected about 65 times a
/// second; paced, a pool connects at most 5 times a second, and a recovery is still seen
/// within 200 ms.
const MAX_CONNECT_PACE: Duration = Duration::from_millis(200);

/// The connections of one loop.
pub struct Pool {
    permits: Semaphore,
    slots: Mutex<Slots>,
    /// Rung whenever a slot comes back.
    returned: Notify,
    /// While connects fail: the pause between them, and when the next may start.
    pace: Mutex<(Duration, Option<Instant>)>,
}

/// The idle slots, and the destinations a borrower is opening a connection to (one entry
/// per such borrower; at most `connections` of them).
#[derive(Default)]
struct Slots {
    idle: Vec<Slot>,
    opening: Vec<Option<Addr>>,
}

/// A slot on loan, with its place among the attempts in flight; both go back on drop.
pub struct SlotGuard<'a> {
    pool: &'a Pool,
    slot: Option<Slot>,
    /// Lent without a connection while none was being opened to its destination: this
    /// borrower is the one opening it.
    opening: bool,
    _permit: SemaphorePermit<'a>,
}

impl Deref for SlotGuard<'_> {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        self.slot
            .as_ref()
            .expect("a guard holds its slot until it is dropped")
    }
}

impl DerefMut for SlotGuard<'_> {
    fn deref_mut(&mut self) -> &mut Slot {
        self.slot
            .as_mut()
            .expect("a guard holds its slot until it is dropped")
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut slots = self.pool.slots.lock().unwrap_or_else(|p| p.into_inner());
            if self.opening
                && let Some(i) = slots.opening.iter().position(|d| *d == slot.dest)
            {
                slots.opening.swap_remove(i);
            }
            slots.idle.push(slot);
        }
        self.pool.returned.notify_waiters();
        // The permit is released after this, with the slot already back.
    }
}

impl Pool {
    /// A pool of `size` (initially unconnected) slots.
    pub fn new(size: usize) -> Pool {
        Pool {
            permits: Semaphore::new(size),
            slots: Mutex::new(Slots {
                idle: (0..size).map(|_| Slot::default()).collect(),
                opening: Vec::new(),
            }),
            returned: Notify::new(),
            pace: Mutex::new((Duration::ZERO, None)),
        }
    }

    /// Waits for a free slot (of the target's endpoint).
    pub async fn take(&self) -> SlotGuard<'_> {
        self.take_for(None).await
    }

    /// Waits for a free slot to `dest` (a cluster node), or of the target's endpoint: an
    /// idle one with a connection if there is one, else one to connect unless another
    /// borrower is connecting to `dest` (then it waits for a slot to come back, which that
    /// borrower's does within its connect and one command).
    pub async fn take_for(&self, dest: Option<&Addr>) -> SlotGuard<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool semaphore is never closed");
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            // Registered before the look, so that a slot coming back in between still wakes.
            returned.as_mut().enable();
            if let Some((slot, opening)) = self.pick(dest) {
                return SlotGuard {
                    pool: self,
                    slot: Some(slot),
                    opening,
                    _permit: permit,
                };
            }
            returned.await;
        }
    }

    /// The slot to lend for `dest` now, and whether its borrower opens the connection; `None`
    /// while another borrower is opening one to `dest` and no idle slot has one.
    fn pick(&self, dest: Option<&Addr>) -> Option<(Slot, bool)> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let to_dest = |s: &Slot| s.dest.as_ref() == dest;
        if let Some(i) = slots
            .idle
            .iter()
            .rposition(|s| to_dest(s) && s.conn.is_some())
        {
            return Some((slots.idle.swap_remove(i), false));
        }
        if slots.opening.iter().any(|d| d.as_ref() == dest) {
            return None;
        }
        // A permit means a slot is free; should that ever not hold, a fresh slot costs one
        // connect, never a panic.
        let slot = match slots.idle.iter().rposition(to_dest) {
            Some(i) => slots.idle.swap_remove(i),
            None => {
                // A node this loop has not used yet: a fresh slot. Past the bound, an idle
                // slot of another node gives up its connection (closed when dropped).
                if slots.idle.len() >= MAX_SLOTS {
                    slots.idle.swap_remove(0);
                }
                Slot {
                    dest: dest.cloned(),
                    ..Slot::default()
                }
            }
        };
        slots.opening.push(dest.cloned());
        Some((slot, true))
    }

    /// Waits until the pool may connect again; false if shutdown came first.
    pub async fn pace(&self, shutdown: &mut Shutdown) -> bool {
        let next = self.pace.lock().unwrap_or_else(|p| p.into_inner()).1;
        match next {
            Some(at) if at > Instant::now() => tokio::select! {
                _ = tokio::time::sleep_until(at) => true,
                _ = shutdown.wait() => false,
            },
            _ => true,
        }
    }

    /// Notes how a connect ended: a failure makes the next one wait, a success ends pacing.
    pub fn connected(&self, ok: bool) {
        let mut pace = self.pace.lock().unwrap_or_else(|p| p.into_inner());
        *pace = if ok {
            (Duration::ZERO, None)
        } else {
            let step = (pace.0 * 2).clamp(MIN_CONNECT_PACE, MAX_CONNECT_PACE);
            (step, Some(Instant::now() + step))
        };
    }

    /// Closes every idle connection.
    pub async fn close_all(&self, timeout: Duration) {
        let conns: Vec<Conn> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .idle
            .iter_mut()
            .filter_map(|s| s.conn.take())
            .collect();
        for c in conns {
            c.close(timeout).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_goes_back_when_its_borrower_is_dropped_mid_operation() {
        let pool = Pool::new(1);
        let mut slot = pool.take().await;
        slot.last_run_id = Some("a".repeat(40));
        // A drain that times out drops the operation's future with the slot on loan.
        drop(slot);
        let again = tokio::time::timeout(Duration::from_secs(1), pool.take())
            .await
            .expect("the slot and its permit came back");
        assert_eq!(again.last_run_id.as_deref(), Some("a".repeat(40).as_str()));
    }

    fn node(port: u16) -> Addr {
        Addr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[tokio::test]
    async fn no_more_slots_are_lent_than_the_pool_has() {
        let pool = Pool::new(2);
        let (x, y, z) = (node(1), node(2), node(3));
        let a = pool.take_for(Some(&x)).await;
        let _b = pool.take_for(Some(&y)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), pool.take_for(Some(&z)))
                .await
                .is_err()
        );
        drop(a);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), pool.take_for(Some(&z)))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn one_connection_is_opened_to_a_destination_at_a_time() {
        let pool = Pool::new(3);
        let opener = pool.take().await;
        assert!(opener.opening && opener.conn.is_none());
        // A second borrower of the same endpoint waits for the opener's slot (keeping its
        // place among the attempts in flight), although a slot is free...
        let second = pool.take();
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), second.as_mut())
                .await
                .is_err()
        );
        // ...while one to another node does not.
        let other = tokio::time::timeout(Duration::from_secs(1), pool.take_for(Some(&node(7))))
            .await
            .expect("another destination is not held up");
        assert!(other.opening);
        drop(other);
        // The opener gave up (its connect failed): the waiter opens the next one.
        drop(opener);
        let next = tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .expect("the waiter woke when the slot came back");
        assert!(next.opening);
        drop(next);
        assert!(pool.slots.lock().unwrap().opening.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_connects_are_paced_and_a_success_ends_the_pacing() {
        let pool = Pool::new(1);
        let (_trigger, mut sd) = crate::shutdown::channel();
        let mut pauses = Vec::new();
        for _ in 0..5 {
            pool.connected(false);
            let started = tokio::time::Instant::now();
            assert!(pool.pace(&mut sd).await);
            pauses.push(started.elapsed());
        }
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        assert!(
            ms[0] >= 24 && ms[1] >= 49 && ms[2] >= 99 && ms[3] >= 199,
            "{ms:?}"
        );
        assert!(ms[4] <= 201, "capped: {ms:?}");
        pool.connected(true);
        let started = tokio::time::Instant::now();
        assert!(pool.pace(&mut sd).await);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
