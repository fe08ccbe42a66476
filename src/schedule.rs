//! Timetables (DESIGN §2.7): the open loop of each op at its rate, the probe's own pace,
//! closed loops for `rate = "max"`, the pending set and skipped ticks, and the drain at
//! shutdown. Latency counts from the scheduled start (no coordinated omission).

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use std::time::Instant as StdInstant;

use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Rate;
use crate::op::Op;
use crate::pool::Pool;
use crate::shutdown::Shutdown;
use crate::target::TargetState;

/// Fastest probe pace while probes fail: bounds the connects a failing target receives.
const PROBE_FAST_INTERVAL: Duration = Duration::from_millis(100);

/// Why a write or read is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// A scheduled operation, with retries, counted in `operations_total`.
    Operation,
    /// One attempt in place of a skipped tick: no retries, not an operation (the tick is
    /// counted in `skipped_ticks_total`), but its attempt counts and it ends the op's
    /// failing state when it succeeds. Without it, a full pending set would leave the
    /// recovery unseen until the next backoff step, up to seconds late.
    Watch,
}

/// Runs the loop `op` of `target` until shutdown: an open-loop timetable at the configured
/// rate (the probe at `connect_probe_interval`), starting at `phase` into the first period,
/// or a closed loop for `rate = "max"`.
pub async fn run_loop(t: Arc<TargetState>, op: Op, phase: Duration, shutdown: Shutdown) {
    let s = &t.settings;
    let pool = Arc::new(Pool::new(s.connections));
    // Operations waiting for a retry sit in the pending set; a tick is skipped only when it
    // is full. The probe never retries: two probes in flight mean connects are stalling.
    let pending = match op {
        Op::Probe => 2,
        _ => s.connections * (s.retry.max_retries as usize + 1),
    };
    let plan = Timetable {
        phase,
        pending_cap: pending,
        // Attempts are bounded by the response timeout and backoffs end at shutdown.
        drain_bound: s.connect_timeout + s.response_timeout,
    };
    match (op, s.rate) {
        (Op::Probe, _) => probe_loop(&t, plan, shutdown).await,
        (_, Rate::PerSecond(rate)) => open_loop(&t, &pool, op, rate, plan, shutdown).await,
        (_, Rate::Max) => closed_loop(&t, &pool, op, shutdown).await,
    }
    pool.close_all(Duration::from_millis(200)).await;
}

pub(crate) async fn run_op(
    t: &TargetState,
    pool: &Pool,
    op: Op,
    scheduled: StdInstant,
    run: Run,
    shutdown: &mut Shutdown,
) {
    match op {
        Op::Write => t.write_once(pool, scheduled, run, shutdown).await,
        Op::Read => t.read_once(pool, scheduled, run, shutdown).await,
        Op::Probe if run == Run::Operation => t.probe_once(scheduled).await,
        Op::Probe => {}
    }
}

/// One operation of a loop, owning what it needs: it runs either inside the loop's own task
/// (no task, no allocation per tick: the common case, one operation in flight) or, while
/// another is still in flight, in a task of its own. The permit is its place in the pending
/// set.
async fn run_owned(
    t: Arc<TargetState>,
    pool: Arc<Pool>,
    op: Op,
    scheduled: StdInstant,
    mut shutdown: Shutdown,
    permit: OwnedSemaphorePermit,
) {
    run_op(&t, &pool, op, scheduled, Run::Operation, &mut shutdown).await;
    drop(permit);
}

/// How much earlier than a tick is due its timer is armed. Tokio's timer rounds a deadline
/// up to its next millisecond tick and the driver's sleep (epoll's millisecond timeout)
/// rounds up again, so a timer armed for the tick itself wakes up to about 2 ms late; that
/// lateness, counted from the scheduled start, made 95 % of loopback operations measure
/// 1-2 ms although the server answered in 0.15 ms. Armed 2 ms early, the timer wakes at most
/// about the tick; an operation then starts at once and its latency counts from
/// [`start_of`]. Measured on loopback (release, 10 s soak): operation p50 0.87 ms → 0.19 ms
/// with an attempt p50 of 0.15 ms (1 ms early: still 0.87 ms).
const TIMER_LEAD: Duration = Duration::from_millis(2);

/// The start of an operation due at `due`: when it was due if the loop woke late (a stall
/// of the canary still counts, as it would for a client: no coordinated omission), or now
/// if the early-armed timer woke before it was due.
fn start_of(due: Instant) -> Instant {
    due.min(Instant::now())
}

/// Puts `timer` in Tokio's timer wheel now (a timer is registered when first polled).
async fn register(timer: Pin<&mut tokio::time::Sleep>) {
    let mut timer = Some(timer);
    std::future::poll_fn(|cx| {
        if let Some(t) = timer.take() {
            let _ = t.poll(cx);
        }
        Poll::Ready(())
    })
    .await;
}

/// Resolves when the operation in `slot` ends, and empties the slot; pending while empty.
async fn drive_inline<F: Future<Output = ()>>(mut slot: Pin<&mut Option<F>>) {
    std::future::poll_fn(|cx| match slot.as_mut().as_pin_mut() {
        Some(f) => f.poll(cx),
        None => Poll::Pending,
    })
    .await;
    slot.set(None);
}

/// The shape of a timetable: where its first tick falls, how many operations may be in
/// flight or waiting for a retry (the pending set), and how long the drain at shutdown may
/// wait for them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timetable {
    pub phase: Duration,
    pub pending_cap: usize,
    pub drain_bound: Duration,
}

/// Runs ticks `period` apart until shutdown. At each tick `start(scheduled, permit)` makes
/// the operation, which holds `permit` (its place in the pending set) until it ends; when
/// the pending set is full the tick is skipped and `skipped(scheduled)` is told. The first
/// operation in flight runs inside this task (no task, no allocation per tick), others in
/// tasks of their own. At shutdown the operations in flight get `drain_bound` to end.
pub(crate) async fn open_timetable<F, S, K>(
    plan: Timetable,
    period: Duration,
    shutdown: Shutdown,
    mut start: S,
    mut skipped: K,
) where
    S: FnMut(Instant, OwnedSemaphorePermit) -> F,
    F: Future<Output = ()> + Send + 'static,
    K: FnMut(Instant),
{
    let pending = Arc::new(Semaphore::new(plan.pending_cap));
    // Two timers, for the next tick and the one after, both always in Tokio's timer wheel.
    // The runtime's driver is woken (a write to its eventfd) whenever a timer is registered
    // earlier than the one it last planned to wake for; with the tick after next always
    // registered, neither the re-arming of ticks nor the response deadlines of the
    // operations a tick starts ever are. A late tick still fires (at once), and is measured
    // from when it was due.
    let mut due = Instant::now() + plan.phase;
    let mut timers = [
        Box::pin(tokio::time::sleep_until(due - TIMER_LEAD)),
        Box::pin(tokio::time::sleep_until(due + period - TIMER_LEAD)),
    ];
    register(timers[1].as_mut()).await;
    let mut next = 0;
    let mut stop_rx = shutdown.clone();
    let mut stop = pin!(stop_rx.wait());
    let mut inline = pin!(None);
    loop {
        tokio::select! {
            () = timers[next].as_mut() => {}
            () = drive_inline(inline.as_mut()), if inline.is_some() => continue,
            () = &mut stop => break,
        }
        let scheduled = start_of(due);
        timers[next].as_mut().reset(due + 2 * period - TIMER_LEAD);
        register(timers[next].as_mut()).await;
        next ^= 1;
        due += period;
        tick(
            &pending,
            inline.as_mut(),
            scheduled,
            &mut start,
            &mut skipped,
        );
    }
    drain(inline, &pending, plan.pending_cap, plan.drain_bound).await;
}

/// Like [`open_timetable`], but each gap is chosen after the tick by `next_gap` (the probe
/// speeds up while it fails). The timetable is still fixed before each tick: latency
/// counts from the scheduled start.
pub(crate) async fn paced_timetable<F, S, K, G>(
    plan: Timetable,
    shutdown: Shutdown,
    mut start: S,
    mut skipped: K,
    mut next_gap: G,
) where
    S: FnMut(Instant, OwnedSemaphorePermit) -> F,
    F: Future<Output = ()> + Send + 'static,
    K: FnMut(Instant),
    G: FnMut() -> Duration,
{
    let pending = Arc::new(Semaphore::new(plan.pending_cap));
    let mut due = Instant::now() + plan.phase;
    let mut timer = pin!(tokio::time::sleep_until(due - TIMER_LEAD));
    let mut stop_rx = shutdown.clone();
    let mut stop = pin!(stop_rx.wait());
    let mut inline = pin!(None);
    loop {
        tokio::select! {
            () = timer.as_mut() => {}
            () = drive_inline(inline.as_mut()), if inline.is_some() => continue,
            () = &mut stop => break,
        }
        let scheduled = start_of(due);
        tick(
            &pending,
            inline.as_mut(),
            scheduled,
            &mut start,
            &mut skipped,
        );
        due += next_gap();
        timer.as_mut().reset(due - TIMER_LEAD);
    }
    drain(inline, &pending, plan.pending_cap, plan.drain_bound).await;
}

/// One tick: starts the operation when the pending set has room (inside the loop's task if
/// none is in flight there, else in a task of its own), or reports the tick skipped.
fn tick<F, S, K>(
    pending: &Arc<Semaphore>,
    mut inline: Pin<&mut Option<F>>,
    scheduled: Instant,
    start: &mut S,
    skipped: &mut K,
) where
    S: FnMut(Instant, OwnedSemaphorePermit) -> F,
    F: Future<Output = ()> + Send + 'static,
    K: FnMut(Instant),
{
    match pending.clone().try_acquire_owned() {
        Ok(permit) => {
            let run = start(scheduled, permit);
            if inline.is_none() {
                inline.set(Some(run));
            } else {
                tokio::spawn(run);
            }
        }
        Err(_) => skipped(scheduled),
    }
}

/// Lets a loop's operations in flight end, within `bound`: the one in the loop's own task
/// (driven here) and those in tasks of their own (their permits come back).
async fn drain<F: Future<Output = ()>>(
    inline: Pin<&mut Option<F>>,
    pending: &Semaphore,
    pending_cap: usize,
    bound: Duration,
) {
    let _ = tokio::time::timeout(bound, async {
        if inline.is_some() {
            drive_inline(inline).await;
        }
        let _ = pending.acquire_many(pending_cap as u32).await;
    })
    .await;
}

async fn open_loop(
    t: &Arc<TargetState>,
    pool: &Arc<Pool>,
    op: Op,
    rate: f64,
    plan: Timetable,
    shutdown: Shutdown,
) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let watch_busy = Arc::new(AtomicBool::new(false));
    let start = |scheduled: Instant, permit| {
        run_owned(
            t.clone(),
            pool.clone(),
            op,
            scheduled.into_std(),
            shutdown.clone(),
            permit,
        )
    };
    let skipped = |scheduled: Instant| {
        t.metrics.op(op).skipped_ticks.inc();
        t.with_stats(|st| st.skipped(op));
        t.with_history(|h| h.skipped(t.clock.now_us()));
        // One watch attempt at a time keeps looking for the recovery.
        if !watch_busy.swap(true, Ordering::AcqRel) {
            let (t, pool, busy, mut shutdown) = (
                t.clone(),
                pool.clone(),
                watch_busy.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                run_op(
                    &t,
                    &pool,
                    op,
                    scheduled.into_std(),
                    Run::Watch,
                    &mut shutdown,
                )
                .await;
                busy.store(false, Ordering::Release);
            });
        }
    };
    open_timetable(plan, period, shutdown.clone(), start, skipped).await;
}

/// One probe, owning what it needs (see [`run_owned`]).
async fn probe_owned(t: Arc<TargetState>, scheduled: StdInstant, permit: OwnedSemaphorePermit) {
    t.probe_once(scheduled).await;
    drop(permit);
}

/// The probe's timetable: every `connect_probe_interval`, but while the last probe failed
/// at the pace of the target's operations (at most every 100 ms), so that the end of an
/// outage is seen within a tick, not up to a whole probe interval late.
async fn probe_loop(t: &Arc<TargetState>, plan: Timetable, shutdown: Shutdown) {
    let slow = t.settings.connect_probe_interval;
    let fast = match t.settings.rate {
        Rate::PerSecond(r) => Duration::from_secs_f64(1.0 / r),
        Rate::Max => Duration::ZERO,
    }
    .max(PROBE_FAST_INTERVAL)
    .min(slow);
    let start = |scheduled: Instant, permit| probe_owned(t.clone(), scheduled.into_std(), permit);
    let skipped = |_| {
        t.metrics.op(Op::Probe).skipped_ticks.inc();
        t.with_stats(|st| st.skipped(Op::Probe));
        t.with_history(|h| h.skipped(t.clock.now_us()));
    };
    let next_gap = || {
        if t.probe_failing.load(Ordering::Relaxed) {
            fast
        } else {
            slow
        }
    };
    paced_timetable(plan, shutdown, start, skipped, next_gap).await;
}

async fn closed_loop(t: &Arc<TargetState>, pool: &Arc<Pool>, op: Op, shutdown: Shutdown) {
    let workers: Vec<_> = (0..t.settings.connections)
        .map(|_| {
            let (t, pool, mut shutdown) = (t.clone(), pool.clone(), shutdown.clone());
            tokio::spawn(async move {
                while !shutdown.is_triggered() {
                    run_op(
                        &t,
                        &pool,
                        op,
                        StdInstant::now(),
                        Run::Operation,
                        &mut shutdown,
                    )
                    .await;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::shutdown;

    fn plan(pending_cap: usize) -> Timetable {
        Timetable {
            phase: Duration::from_millis(5),
            pending_cap,
            drain_bound: Duration::from_millis(500),
        }
    }

    /// Runs `f` until `secs` of paused time have passed, then shuts it down and returns how
    /// long the drain took.
    async fn run_for<Fut: Future<Output = ()>>(
        secs: u64,
        f: impl FnOnce(Shutdown) -> Fut,
    ) -> Duration {
        let (trigger, sd) = shutdown::channel();
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            trigger.trigger();
            Instant::now()
        };
        let (_, stopped) = tokio::join!(f(sd), stopper);
        Instant::now() - stopped
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_timetable_ticks_at_its_rate_on_a_fixed_grid() {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let origin = Instant::now();
        let seen = ticks.clone();
        run_for(10, |sd| {
            open_timetable(
                plan(4),
                Duration::from_millis(100),
                sd,
                move |at, permit| {
                    seen.lock().unwrap().push(at - origin);
                    async move { drop(permit) }
                },
                |_| panic!("nothing is pending, nothing may be skipped"),
            )
        })
        .await;
        let ticks = ticks.lock().unwrap();
        assert_eq!(ticks.len(), 100, "10 s at 10/s");
        for (i, at) in ticks.iter().enumerate() {
            let due = Duration::from_millis(5 + 100 * i as u64);
            // Armed early, a tick starts at most TIMER_LEAD before it is due, never after.
            assert!(
                *at <= due && due - *at <= TIMER_LEAD,
                "tick {i} at {at:?}, due {due:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_are_skipped_only_while_the_pending_set_is_full_and_the_drain_is_bounded() {
        let started = Arc::new(AtomicUsize::new(0));
        let skipped = Arc::new(AtomicUsize::new(0));
        let (s1, s2) = (started.clone(), skipped.clone());
        let drain = run_for(2, |sd| {
            open_timetable(
                plan(3),
                Duration::from_millis(100),
                sd,
                move |_, permit| {
                    s1.fetch_add(1, Ordering::Relaxed);
                    // An operation that never ends (a server that never answers, retries
                    // that never run out): it keeps its place in the pending set.
                    async move {
                        std::future::pending::<()>().await;
                        drop(permit);
                    }
                },
                move |_| {
                    s2.fetch_add(1, Ordering::Relaxed);
                },
            )
        })
        .await;
        assert_eq!(
            started.load(Ordering::Relaxed),
            3,
            "the pending set holds 3"
        );
        assert_eq!(
            skipped.load(Ordering::Relaxed),
            17,
            "20 ticks in 2 s, 3 started"
        );
        assert!(drain <= Duration::from_millis(500), "drain took {drain:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_timetable_takes_each_gap_as_it_is_chosen() {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let origin = Instant::now();
        let seen = ticks.clone();
        let mut n = 0;
        run_for(3, |sd| {
            paced_timetable(
                plan(2),
                sd,
                move |at, permit| {
                    seen.lock().unwrap().push(at - origin);
                    async move { drop(permit) }
                },
                |_| {},
                // Slow (1 s) for two ticks, then fast (100 ms), as a probe that starts failing.
                move || {
                    n += 1;
                    if n <= 2 {
                        Duration::from_secs(1)
                    } else {
                        Duration::from_millis(100)
                    }
                },
            )
        })
        .await;
        let ms: Vec<u128> = ticks
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(&ms[..4], &[3, 1003, 2003, 2103], "{ms:?}");
        assert_eq!(ms.len(), 12, "{ms:?}");
    }
}
