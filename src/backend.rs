//! Who answered (DESIGN §2.5): parsing `INFO` and `CLIENT INFO` into a validated identity,
//! and the per-target set of backends seen within `backend_ttl` behind `backend_info`.
//! Label values come only from here, after validation: a server can't inject label text.

use std::collections::HashMap;

/// Most backends remembered per target: bounds the `backend_info` series a flapping
/// topology can create.
pub const MAX_BACKENDS: usize = 32;

const UNKNOWN: &str = "unknown";

/// A backend's identity, each field validated or `unknown`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub run_id: String,
    pub role: String,
    pub version: String,
    pub addr: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            run_id: UNKNOWN.into(),
            role: UNKNOWN.into(),
            version: UNKNOWN.into(),
            addr: UNKNOWN.into(),
        }
    }
}

impl Identity {
    /// Whether the run_id is known: the only field that tells two processes apart.
    pub fn is_known(&self) -> bool {
        self.run_id != UNKNOWN
    }

    /// Takes `run_id`, `redis_version` and `role` from `INFO` text.
    pub fn absorb_info(&mut self, info: &str) {
        for line in info.lines() {
            let Some((key, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            match key {
                "run_id" => self.run_id = valid_run_id(value),
                "redis_version" => self.version = valid_version(value),
                "role" => self.role = valid_role(value),
                _ => {}
            }
        }
    }

    /// Takes `laddr` (the server's own address, even behind a proxy) from `CLIENT INFO`.
    pub fn absorb_client_info(&mut self, info: &str) {
        if let Some(laddr) = info
            .split_ascii_whitespace()
            .find_map(|kv| kv.strip_prefix("laddr="))
        {
            self.addr = valid_addr(laddr);
        }
    }
}

fn valid_run_id(v: &str) -> String {
    if v.len() == 40 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        v.to_ascii_lowercase()
    } else {
        UNKNOWN.into()
    }
}

fn valid_version(v: &str) -> String {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && v.bytes().next().is_some_and(|b| b.is_ascii_digit());
    if ok { v.into() } else { UNKNOWN.into() }
}

fn valid_role(v: &str) -> String {
    match v {
        "master" => "master",
        "slave" | "replica" => "replica",
        "active-replica" => "active-replica",
        _ => UNKNOWN,
    }
    .into()
}

fn valid_addr(v: &str) -> String {
    match v.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.to_string(),
        Err(_) => UNKNOWN.into(),
    }
}

#[derive(Debug)]
struct Seen {
    identity: Identity,
    last_seen_us: u64,
}

/// One backend as reported in the soak report.
#[derive(Clone, Debug)]
pub struct BackendRecord {
    pub identity: Identity,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
}

/// The backends of one target seen within `backend_ttl`.
#[derive(Debug, Default)]
pub struct Backends {
    seen: HashMap<String, Seen>,
    /// Every backend ever seen (bounded like `seen`), for the soak report.
    history: Vec<BackendRecord>,
    /// Connections that reached a backend no longer kept in `history` (it was full).
    history_dropped: u64,
}

/// What the recorder must do to `backend_info` (and `backend_restarts_total`) after an
/// observation: this module only decides, it touches no metric family.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// A new run_id at an address already known: a restart behind the endpoint.
    pub restart: bool,
    /// Series to remove (a role change re-exports; the least recently seen is evicted).
    pub unexport: Option<Identity>,
    /// Series to create (at 1).
    pub export: Option<Identity>,
}

impl Backends {
    /// Records a connection that reached `id` at `now_us`; says what to export, and whether
    /// it is a restart (the address is known under another run_id).
    pub fn observe(&mut self, id: &Identity, now_us: u64) -> Changes {
        let mut changes = Changes::default();
        if !id.is_known() {
            return changes;
        }
        if let Some(s) = self.seen.get_mut(&id.run_id) {
            s.last_seen_us = now_us;
            if s.identity != *id {
                // Same process, new role (a promotion): re-export under the new labels.
                changes.unexport = Some(std::mem::replace(&mut s.identity, id.clone()));
                changes.export = Some(id.clone());
            }
            self.touch_history(id, now_us);
            return changes;
        }
        changes.restart = id.addr != UNKNOWN
            && self
                .history
                .iter()
                .any(|b| b.identity.addr == id.addr && b.identity.run_id != id.run_id);
        if self.seen.len() >= MAX_BACKENDS {
            // Forget the one seen least recently.
            if let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.last_seen_us)
                .map(|(k, _)| k.clone())
            {
                changes.unexport = self.seen.remove(&oldest).map(|s| s.identity);
            }
        }
        changes.export = Some(id.clone());
        self.seen.insert(
            id.run_id.clone(),
            Seen {
                identity: id.clone(),
                last_seen_us: now_us,
            },
        );
        self.touch_history(id, now_us);
        changes
    }

    /// Forgets the backends not seen for `ttl_us`; returns them, for their series to go.
    pub fn expire(&mut self, now_us: u64, ttl_us: u64) -> Vec<Identity> {
        let mut gone = Vec::new();
        self.seen.retain(|_, s| {
            let keep = now_us.saturating_sub(s.last_seen_us) <= ttl_us;
            if !keep {
                gone.push(s.identity.clone());
            }
            keep
        });
        gone
    }

    /// Every backend seen in this run.
    pub fn history(&self) -> &[BackendRecord] {
        &self.history
    }

    fn touch_history(&mut self, id: &Identity, now_us: u64) {
        if let Some(b) = self
            .history
            .iter_mut()
            .find(|b| b.identity.run_id == id.run_id)
        {
            b.last_seen_us = now_us;
            b.identity = id.clone();
        } else if self.history.len() < 4 * MAX_BACKENDS {
            self.history.push(BackendRecord {
                identity: id.clone(),
                first_seen_us: now_us,
                last_seen_us: now_us,
            });
        } else {
            self.history_dropped += 1;
        }
    }

    /// Connections that reached a backend the history had no room for.
    pub fn history_dropped(&self) -> u64 {
        self.history_dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN_A: &str = "0123456789abcdef0123456789abcdef01234567";
    const RUN_B: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn identity(run_id: &str, addr: &str) -> Identity {
        let mut id = Identity::default();
        id.absorb_info(&format!(
            "# Server\r\nredis_version:7.0.15\r\nrun_id:{run_id}\r\n# Replication\r\nrole:slave\r\n"
        ));
        id.absorb_client_info(&format!(
            "id=3 addr=127.0.0.1:5000 laddr={addr} fd=8 name=x"
        ));
        id
    }

    #[test]
    fn info_and_client_info_give_a_validated_identity() {
        let id = identity(RUN_A, "127.0.0.1:6379");
        assert_eq!(
            id,
            Identity {
                run_id: RUN_A.into(),
                role: "replica".into(),
                version: "7.0.15".into(),
                addr: "127.0.0.1:6379".into()
            }
        );
    }

    #[test]
    fn hostile_values_become_unknown() {
        let mut id = Identity::default();
        id.absorb_info("run_id:zz\"}\nredis_version:7.0\"evil\nrole:boss\n");
        id.absorb_client_info("laddr=not-an-addr");
        assert_eq!(id, Identity::default());
        assert!(!id.is_known());
    }

    #[test]
    fn a_new_run_id_at_a_known_address_is_a_restart_and_old_backends_expire() {
        let mut b = Backends::default();
        let a = identity(RUN_A, "127.0.0.1:6379");
        let first = b.observe(&a, 0);
        assert_eq!(first.export.as_ref(), Some(&a));
        assert_eq!(b.observe(&a, 10), Changes::default());
        let restarted = b.observe(&identity(RUN_B, "127.0.0.1:6379"), 20);
        assert!(restarted.restart);
        assert_eq!(restarted.unexport, None);
        assert_eq!(b.expire(1_000, 500).len(), 2);
        assert_eq!(b.history().len(), 2);
    }

    #[test]
    fn a_promotion_re_exports_under_the_new_role() {
        let mut b = Backends::default();
        let replica = identity(RUN_A, "127.0.0.1:6379");
        b.observe(&replica, 0);
        let mut master = replica.clone();
        master.role = "master".into();
        let changes = b.observe(&master, 10);
        assert_eq!(changes.unexport, Some(replica));
        assert_eq!(changes.export, Some(master));
        assert!(!changes.restart);
    }

    #[test]
    fn backends_kept_are_bounded_per_target() {
        let mut b = Backends::default();
        let mut exported = 0i64;
        for i in 0..(MAX_BACKENDS as u64 + 10) {
            let run_id = format!("{i:040x}");
            let c = b.observe(&identity(&run_id, "127.0.0.1:1"), i);
            exported += i64::from(c.export.is_some()) - i64::from(c.unexport.is_some());
        }
        assert_eq!(exported, MAX_BACKENDS as i64);
    }
}
