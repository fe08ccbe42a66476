//! The attempt engine: one operation as a series of attempts on pooled connections —
//! connect when a slot has none, send under the response deadline, classify, back off and
//! retry — returning how it ended ([`Finished`]). Recording goes through [`crate::record`].

use std::sync::Arc;
use std::time::Instant;

use redis::Value as Reply;

use crate::backend::Identity;
use crate::classify::ResultKind;
use crate::conn::{Conn, ConnError, Endpoint};
use crate::op::{Kind, Op, Outcome};
use crate::pool::Pool;
use crate::retry;
use crate::schedule::Run;
use crate::shutdown::Shutdown;
use crate::target::TargetState;
use crate::telemetry::TryRecord;
use crate::topology::cluster::map::Addr;
use crate::topology::cluster::{self, Cluster};

/// The tries of one operation, kept only while tracing is on (`None` costs nothing).
pub(crate) type Tries = Option<Vec<TryRecord>>;

/// A command to send, what reply counts as success, and how often to retry it.
#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) args: &'a [&'a [u8]],
    pub(crate) accept: fn(&Reply) -> bool,
    pub(crate) max_retries: u32,
    /// The slot of the key (cluster targets): where the request goes.
    pub(crate) slot: Option<u16>,
}

/// What one attempt sends: the command, what reply counts as success, and whether an `ASK`
/// redirect asked for `ASKING` first.
#[derive(Clone, Copy)]
pub(crate) struct Command<'a> {
    pub(crate) args: &'a [&'a [u8]],
    pub(crate) accept: fn(&Reply) -> bool,
    pub(crate) asking: bool,
}

/// Most `MOVED`/`ASK` redirects one operation follows, as cluster clients bound them: a
/// slot map that sends a key in circles ends the operation as failed.
pub(crate) const MAX_REDIRECTS: u32 = 5;

/// How an operation ended.
pub struct Finished {
    pub outcome: Outcome,
    pub reply: Option<Reply>,
    /// Send time of the attempt that produced `reply`.
    pub sent_us: u64,
    pub observed_us: u64,
    pub backend: Option<Arc<Identity>>,
    pub may_have_applied: bool,
    /// The shard of the key (cluster targets).
    pub shard: Option<Arc<str>>,
}

/// One attempt's reply and times.
pub(crate) struct Attempt {
    pub(crate) reply: Result<Reply, ConnError>,
    pub(crate) sent_us: u64,
    pub(crate) observed_us: u64,
}

impl TargetState {
    /// Opens a connection of `kind`, counting and timing it, and records who answered.
    pub(crate) async fn connect(&self, kind: Kind) -> Result<Conn, ConnError> {
        self.connect_to(kind, &self.endpoint).await
    }

    /// Opens a connection of `kind` to `ep` (the endpoint or a direct node). A failure of
    /// the canary itself (no descriptors, memory or local port) is counted apart and never
    /// as a connect result of the target.
    pub(crate) async fn connect_to(&self, kind: Kind, ep: &Endpoint) -> Result<Conn, ConnError> {
        let started = Instant::now();
        let result = Conn::open(ep).await;
        self.record_connect(kind, started.elapsed(), &result);
        result
    }

    /// Runs one operation: tries `args` until a reply that `accept` takes, retries out, or a
    /// final error. `None` when shutdown interrupted it (then nothing is recorded).
    ///
    /// On a cluster target the request names its slot: each try goes to the slot's master
    /// (a pool slot per node). `MOVED` moves the slot and `ASK` sends `ASKING` first; both
    /// are followed at once, without backoff and without using up a retry (at most
    /// [`MAX_REDIRECTS`] per operation), and neither counts as a failure: a cluster client
    /// follows them as a matter of course. `CLUSTERDOWN` is retried with backoff.
    pub(crate) async fn execute(
        &self,
        pool: &Pool,
        op: Op,
        req: Request<'_>,
        tries: &mut Tries,
        shutdown: &mut Shutdown,
    ) -> Option<Finished> {
        let Request {
            args,
            accept,
            max_retries,
            slot: key_slot,
        } = req;
        let m = self.metrics.op(op);
        let cluster = self.cluster.as_deref();
        let mut route = match (cluster, key_slot) {
            (Some(c), Some(s)) => Some(c.route(s)),
            _ => None,
        };
        let shard = route.as_ref().and_then(|r| r.shard.clone());
        let mut may_have_applied = false;
        let (mut n, mut redirects, mut asking) = (0u32, 0u32, false);
        let mut first = true;
        // Times this operation went elsewhere because the map moved on while it waited for a
        // slot or for the connect pace (not a try: nothing was sent).
        let mut reroutes = 0u32;
        let mut rerouted = false;
        loop {
            if !first {
                if !std::mem::take(&mut rerouted) {
                    m.retries.inc();
                }
                // Each retry goes where the map says now (a failover may have moved the
                // slot meanwhile); only an ASK sends one try elsewhere.
                if !asking && let (Some(c), Some(s)) = (cluster, key_slot) {
                    route = Some(c.route(s));
                }
            }
            first = false;
            let dest = route.as_ref().map(|r| r.addr.clone());
            let mut slot = pool.take_for(dest.as_ref()).await;
            // The master moved (a sentinel target): a connection from before goes unused.
            if slot.conn.as_ref().is_some_and(Conn::is_outdated) {
                slot.conn = None;
            }
            if let Some(conn) = slot.conn.as_mut()
                && !conn.in_step().await
            {
                // Bytes arrived that no request asked for: a reply may have been taken for
                // another's. The connection goes before it answers with the wrong one.
                tracing::debug!(target_name = %self.name, "connection out of step, reconnecting");
                slot.conn = None;
            }
            if slot.conn.is_none() {
                if !pool.pace(shutdown).await {
                    drop(slot);
                    return None;
                }
                // The map may have moved on while this waited for a slot or for the pace (a
                // failover learned meanwhile): no connect to a master that is no more.
                if !asking
                    && reroutes < MAX_REDIRECTS
                    && let (Some(c), Some(s), Some(d)) = (cluster, key_slot, &dest)
                    && c.route(s).addr != *d
                {
                    drop(slot);
                    reroutes += 1;
                    rerouted = true;
                    continue;
                }
                let sent_us = self.clock.now_us();
                let connected = match (cluster, &dest) {
                    (Some(c), Some(addr)) => self.connect_node(Kind::Pool, c, addr).await,
                    _ => self.connect(Kind::Pool).await,
                };
                pool.connected(connected.is_ok());
                match connected {
                    Ok(conn) => {
                        if let (Some(prev), true, None) =
                            (&slot.last_run_id, conn.backend.is_known(), &dest)
                            && *prev != conn.backend.run_id
                        {
                            self.metrics.backend_switches.inc();
                        }
                        if conn.backend.is_known() {
                            slot.last_run_id = Some(conn.backend.run_id.clone());
                        }
                        slot.conn = Some(conn);
                    }
                    Err(e) if e.internal_cause().is_some() => {
                        // Not the target's failure: the operation is abandoned, uncounted.
                        drop(slot);
                        return None;
                    }
                    Err(e) => {
                        let result = e.result();
                        drop(slot);
                        if let (Some(c), Some(addr)) = (cluster, &dest) {
                            c.unreachable(addr);
                        }
                        let observed_us = self.clock.now_us();
                        self.try_failed(op, sent_us, observed_us, result, &e, shard.as_ref());
                        self.connect_failed(tries, sent_us, observed_us, result);
                        if !result.is_retryable() || n >= max_retries {
                            break;
                        }
                        if !self.backoff(n, shutdown).await {
                            return None;
                        }
                        n += 1;
                        continue;
                    }
                }
            }
            let Some(conn) = slot.conn.as_mut() else {
                continue; // connected just above
            };
            let cmd = Command {
                args,
                accept,
                asking: std::mem::take(&mut asking),
            };
            let a = self.attempt(conn, op, cmd, tries, shard.as_ref()).await;
            match a.reply {
                Ok(reply) => {
                    let backend = conn.backend.clone();
                    drop(slot);
                    if let (Some(c), Some(addr)) = (cluster, &dest) {
                        c.reached(addr);
                        if let Some(shard) = &shard
                            && backend.is_known()
                            && c.book.served_by(shard, &backend.run_id)
                        {
                            self.metrics.backend_switches.inc();
                        }
                    }
                    return Some(Finished {
                        outcome: if n == 0 && redirects == 0 {
                            Outcome::Ok
                        } else {
                            Outcome::Recovered
                        },
                        reply: Some(reply),
                        sent_us: a.sent_us,
                        observed_us: a.observed_us,
                        backend: Some(backend),
                        may_have_applied,
                        shard,
                    });
                }
                Err(e) => {
                    let result = e.result();
                    may_have_applied |= e.may_have_applied();
                    if e.drops_connection() {
                        if e.is_peer_close() {
                            self.metrics.kind(Kind::Pool).drops.inc();
                            if let (Some(c), Some(addr)) = (cluster, &dest) {
                                c.unreachable(addr);
                            }
                        }
                        // Rediscovery on READONLY and on a dead connection (DESIGN §12.1).
                        if e.is_peer_close() || result == ResultKind::Readonly {
                            conn.lost();
                        }
                        slot.conn = None;
                    }
                    drop(slot);
                    if let (Some(c), Some(route)) = (cluster, route.as_mut()) {
                        match result {
                            ResultKind::Moved | ResultKind::Ask if redirects < MAX_REDIRECTS => {
                                if let Some((s, addr)) = cluster::redirect(&e) {
                                    redirects += 1;
                                    if result == ResultKind::Moved {
                                        c.moved(s, addr.clone());
                                        route.addr = addr;
                                    } else {
                                        // This once only: the slot is still the old node's.
                                        asking = true;
                                        route.addr = addr;
                                    }
                                    continue;
                                }
                            }
                            ResultKind::Clusterdown => c.clusterdown(),
                            _ => {}
                        }
                    }
                    if !result.is_retryable() {
                        break;
                    }
                }
            }
            if n >= max_retries {
                break;
            }
            if !self.backoff(n, shutdown).await {
                return None;
            }
            n += 1;
        }
        Some(Finished {
            outcome: Outcome::Failed,
            reply: None,
            sent_us: 0,
            observed_us: self.clock.now_us(),
            backend: None,
            may_have_applied,
            shard,
        })
    }

    /// Opens a connection of `kind` to the cluster node at `addr`, counted and timed like
    /// every connect.
    pub(crate) async fn connect_node(
        &self,
        kind: Kind,
        cluster: &Cluster,
        addr: &Addr,
    ) -> Result<Conn, ConnError> {
        let started = Instant::now();
        let result = cluster.open(addr).await;
        self.record_connect(kind, started.elapsed(), &result);
        result
    }

    /// One attempt on an open connection: send, wait for the reply under the response
    /// timeout, classify, and record it in the metrics, the episodes and the soak stats.
    /// `asking`: an `ASK` redirect sent it here, so `ASKING` goes first (the command only
    /// once it said OK; a failed `ASKING` is the attempt's result).
    pub(crate) async fn attempt(
        &self,
        conn: &mut Conn,
        op: Op,
        cmd: Command<'_>,
        tries: &mut Tries,
        shard: Option<&Arc<str>>,
    ) -> Attempt {
        let Command {
            args,
            accept,
            asking,
        } = cmd;
        let m = self.metrics.op(op);
        let sent = Instant::now();
        let (limit, timeout) = (self.reply_limit, self.settings.response_timeout);
        let reply = async {
            if asking {
                match conn.call(cluster::ASKING, limit, timeout).await {
                    Ok(r) if cluster::is_ok(&r) => {}
                    Ok(_) => return Err(ConnError::Unexpected("ASKING")),
                    Err(e) => return Err(e),
                }
            }
            conn.call(args, limit, timeout).await
        }
        .await;
        let observed = Instant::now();
        let took = observed.duration_since(sent);
        let (sent_us, observed_us) = (self.clock.us_of(sent), self.clock.us_of(observed));
        let reply = match reply {
            Ok(r) if accept(&r) => Ok(r),
            Ok(_) => Err(ConnError::Unexpected("command")),
            Err(e) => Err(e),
        };
        let result = reply
            .as_ref()
            .map_or_else(ConnError::result, |_| ResultKind::Ok);
        m.attempt(result).inc();
        match tries {
            // Observed at the end of the operation, with its trace id if it is traced.
            Some(tries) => tries.push(TryRecord {
                start: self.clock.system_time(sent_us),
                end: self.clock.system_time(observed_us),
                result,
                connect: false,
            }),
            None => m.attempt_duration.observe(took.as_secs_f64(), None, None),
        }
        match &reply {
            Ok(_) => self.try_succeeded(op, sent_us, observed_us, shard),
            // A redirect is followed at once: counted as an attempt, not as a failure.
            Err(_) if matches!(result, ResultKind::Moved | ResultKind::Ask) => {}
            Err(e) => self.try_failed(op, sent_us, observed_us, result, e, shard),
        }
        self.with_stats(|s| s.attempt(op, result, took));
        Attempt {
            reply,
            sent_us,
            observed_us,
        }
    }

    /// Waits out the backoff before retry `n + 1`; false if shutdown came first.
    pub(crate) async fn backoff(&self, n: u32, shutdown: &mut Shutdown) -> bool {
        if n >= self.settings.retry.max_retries {
            return true;
        }
        let delay = retry::backoff(&self.settings.retry, n, retry::jitter());
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = shutdown.wait() => false,
        }
    }

    /// Fresh bookkeeping of tries for one operation: a list while tracing is on.
    pub(crate) fn new_tries(&self, run: Run) -> Tries {
        match run {
            Run::Operation => self.tracing.as_ref().map(|_| Vec::with_capacity(2)),
            Run::Watch => None,
        }
    }

    /// Retries allowed: the policy's for an operation, none for a watch.
    pub(crate) fn retries(&self, run: Run) -> u32 {
        match run {
            Run::Operation => self.settings.retry.max_retries,
            Run::Watch => 0,
        }
    }
}

pub(crate) fn is_ok_status(r: &Reply) -> bool {
    matches!(r, Reply::Okay)
}

/// A `GET` reply: a value or nil.
pub(crate) fn is_bulk(r: &Reply) -> bool {
    matches!(r, Reply::BulkString(_) | Reply::Nil)
}

/// The value of a `GET` reply (`None` for nil); `None` outside for any other reply.
pub(crate) fn bulk(r: &Reply) -> Option<Option<&[u8]>> {
    match r {
        Reply::BulkString(b) => Some(Some(b)),
        Reply::Nil => Some(None),
        _ => None,
    }
}
