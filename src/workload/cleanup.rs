//! `cleanup = true`: delete this run's keys at shutdown.

use std::time::Instant;

use redis::Value as Reply;

use std::collections::BTreeMap;

use crate::conn::Conn;
use crate::target::TargetState;
use crate::topology::cluster::Cluster;
use crate::topology::cluster::map::Addr;

impl TargetState {
    /// Deletes this run's keys (`cleanup = true`), bounded by `deadline`.
    pub async fn cleanup(&self, deadline: Instant) {
        let written = self.last_seq().min(u64::from(self.settings.keys)) as u32;
        if written == 0 {
            return;
        }
        if let Some(cluster) = &self.cluster {
            return self.cleanup_cluster(cluster, written, deadline).await;
        }
        let Ok(Ok(mut conn)) =
            tokio::time::timeout_at(deadline.into(), Conn::open(&self.endpoint)).await
        else {
            tracing::warn!(target_name = %self.name, "cleanup: cannot connect, keys expire by their TTL");
            return;
        };
        let mut deleted = 0u64;
        for chunk_start in (0..written).step_by(100) {
            let keys: Vec<Vec<u8>> = (chunk_start..(chunk_start + 100).min(written))
                .map(|i| self.key(i))
                .collect();
            let mut args: Vec<&[u8]> = vec![b"DEL"];
            args.extend(keys.iter().map(Vec::as_slice));
            let left = deadline.saturating_duration_since(Instant::now());
            match conn.call(&args, 0, left).await {
                Ok(Reply::Int(n)) => deleted += n as u64,
                _ => break,
            }
        }
        tracing::info!(target_name = %self.name, deleted, "cleanup done");
    }

    /// Cleanup of a cluster target: every key sits in its own slot, so each is deleted by
    /// itself, on its slot's master (one connection per master).
    async fn cleanup_cluster(&self, cluster: &Cluster, written: u32, deadline: Instant) {
        let mut by_master: BTreeMap<Addr, Vec<u32>> = BTreeMap::new();
        for i in 0..written {
            if let Some(slot) = self.slot(i) {
                by_master
                    .entry(cluster.route(slot).addr)
                    .or_default()
                    .push(i);
            }
        }
        let mut deleted = 0u64;
        'masters: for (addr, keys) in by_master {
            let Ok(Ok(mut conn)) =
                tokio::time::timeout_at(deadline.into(), cluster.open(&addr)).await
            else {
                tracing::warn!(target_name = %self.name, node = %addr, "cleanup: cannot connect, keys expire by their TTL");
                continue;
            };
            for i in keys {
                let key = self.key(i);
                let left = deadline.saturating_duration_since(Instant::now());
                match conn.call(&[b"DEL", &key], 0, left).await {
                    Ok(Reply::Int(n)) => deleted += n as u64,
                    Err(crate::conn::ConnError::Timeout) => break 'masters,
                    _ => {}
                }
            }
        }
        tracing::info!(target_name = %self.name, deleted, "cleanup done");
    }
}
