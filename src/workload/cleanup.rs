//! `cleanup = true`: delete this run's keys at shutdown.

use std::time::Instant;

use redis::Value as Reply;

use crate::conn::Conn;
use crate::target::TargetState;

impl TargetState {
    /// Deletes this run's keys (`cleanup = true`), bounded by `deadline`.
    pub async fn cleanup(&self, deadline: Instant) {
        let written = self.last_seq().min(u64::from(self.settings.keys)) as u32;
        if written == 0 {
            return;
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
}
