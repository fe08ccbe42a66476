//! Builds the state of each target the replica owns from its configuration, with its
//! topology side (Sentinel, Cluster, listed or discovered nodes) and its series at 0.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Config, Mode, Target};
use crate::conn::Endpoint;
use crate::fleet;
use crate::metrics::Metrics;
use crate::target::{Shared, TargetState};
use crate::telemetry::Tracing;
use crate::tls;
use crate::topology::cluster::Cluster;
use crate::topology::cluster::book::ShardBook;
use crate::topology::cluster::map::Addr;
use crate::topology::dns::{Discovery, DnsNodes};
use crate::topology::sentinel::{AutoNodes, NodeEndpoint, Sentinel};
use crate::workload::ListedNodes;

use super::{LOG_TARGET, StartError};

/// Builds the per-target states of the targets this replica owns; fails only on settings
/// that cannot work (TLS files).
pub fn prepare(
    config: &Config,
    clock: Clock,
    metrics: &Metrics,
    with_stats: bool,
    tracing: Option<Arc<Tracing>>,
) -> Result<Vec<Arc<TargetState>>, StartError> {
    let shared = Shared {
        instance: &config.instance,
        clock,
        metrics,
        with_stats,
        tracing,
    };
    fleet::owned_with_index(config)
        .into_iter()
        .map(|(i, t)| prepare_target(i, t, &shared).map(|(t, _, _)| t))
        .collect()
}

/// A target's state and, for a sentinel target, its sentinel side to follow and, with
/// `nodes = "auto"` or `"dns://..."`, the nodes listed to follow.
pub(super) type Prepared = (Arc<TargetState>, Option<Arc<Sentinel>>, Option<ListedNodes>);

/// Builds the state of target `t` (`targets[i]` of the configuration, for messages) and its
/// topology side, creating its series at 0. Fails only on settings that cannot work.
pub(super) fn prepare_target(
    i: usize,
    t: &Target,
    shared: &Shared<'_>,
) -> Result<Prepared, StartError> {
    let metrics = shared.metrics;
    let s = &t.settings;
    let tls_for = |url: &crate::config::RedisUrl| {
        url.tls
            .then(|| tls::build(s.tls.as_ref(), &url.host))
            .transpose()
            .map_err(|e| StartError {
                key: format!("targets[{i}].tls"),
                message: e.to_string(),
            })
    };
    if s.tls.as_ref().is_some_and(|x| x.insecure) && t.url.tls {
        tracing::warn!(target: LOG_TARGET, target_name = %t.name, "tls.insecure = true: the server certificate is not verified");
    }
    let client_name = format!("redis-canary/{}/{}", shared.instance, t.name);
    let endpoint_for = |url: &crate::config::RedisUrl| -> Result<Endpoint, StartError> {
        let mut ep = Endpoint::new(
            url,
            t.username.as_deref(),
            &t.password,
            tls_for(url)?,
            client_name.clone(),
            s.connect_timeout,
        );
        ep.resp3 = s.protocol == crate::config::Protocol::Resp3;
        Ok(ep)
    };
    let mut endpoint = endpoint_for(&t.url)?;
    let mut auto = None;
    let mut cluster = None;
    let sentinel = match &t.mode {
        Mode::Standalone => None,
        Mode::Cluster(c) => {
            let seeds = c
                .seeds
                .iter()
                .map(|u| Addr {
                    host: u.host.clone(),
                    port: u.port,
                })
                .collect();
            let book = Arc::new(ShardBook::new(&t.name, &metrics.cluster, shared.clock));
            let c = Cluster::new(
                &t.name,
                endpoint.clone(),
                seeds,
                c.refresh,
                s.response_timeout,
                metrics.cluster.target(&t.name),
                book,
                c.nodes_auto,
            );
            if let Some(replicas) = c.replicas() {
                let endpoint = node_endpoint(t, &client_name);
                auto = Some(ListedNodes::Sentinel(AutoNodes { replicas, endpoint }));
            }
            cluster = Some(c);
            None
        }
        Mode::Sentinel(st) => {
            // The sentinels' own credentials; RESP2 (their pub/sub is RESP2 too).
            let sentinels = st
                .sentinels
                .iter()
                .map(|url| {
                    Ok(Endpoint::new(
                        url,
                        st.username.as_deref(),
                        &st.password,
                        tls_for(url)?,
                        client_name.clone(),
                        s.connect_timeout,
                    ))
                })
                .collect::<Result<Vec<_>, StartError>>()?;
            let sentinel = Sentinel::new(
                &t.name,
                &st.master_name,
                sentinels,
                metrics,
                s.response_timeout,
                st.refresh,
                st.nodes_auto,
            );
            // The listed replicas: the data nodes' credentials, database and TLS,
            // like static nodes.
            if let Some(replicas) = sentinel.replicas() {
                let endpoint = node_endpoint(t, &client_name);
                auto = Some(ListedNodes::Sentinel(AutoNodes { replicas, endpoint }));
            }
            endpoint.locator = Some(sentinel.clone());
            endpoint.tls_name_from_host = s.tls.as_ref().is_none_or(|x| x.server_name.is_none());
            Some(sentinel)
        }
    };
    if let Some(source) = &t.discovery {
        let discovery = Discovery::new(source.clone(), s.discovery_resolver, s.discovery_interval);
        let endpoint = node_endpoint(t, &client_name);
        let errors = metrics.discovery(&t.name);
        auto = Some(ListedNodes::Dns(Box::new(DnsNodes {
            discovery,
            endpoint,
            errors,
        })));
    }
    let nodes = t
        .nodes
        .iter()
        .map(endpoint_for)
        .collect::<Result<Vec<_>, _>>()?;
    let mut state = TargetState::new(t, shared, endpoint, nodes);
    state.cluster = cluster;
    Ok((Arc::new(state), sentinel, auto))
}

/// The endpoint of a data node the topology lists (`nodes = "auto"`): the target's
/// credentials, database and TLS, like static nodes.
fn node_endpoint(target: &Target, client_name: &str) -> NodeEndpoint {
    let (target, client_name) = (target.clone(), client_name.to_string());
    Box::new(move |host: &str, port: u16| {
        let url = crate::config::RedisUrl {
            host: host.to_string(),
            port,
            ..target.url.clone()
        };
        let s = &target.settings;
        let tls = url
            .tls
            .then(|| tls::build(s.tls.as_ref(), &url.host))
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut ep = Endpoint::new(
            &url,
            target.username.as_deref(),
            &target.password,
            tls,
            client_name.clone(),
            s.connect_timeout,
        );
        ep.resp3 = s.protocol == crate::config::Protocol::Resp3;
        Ok(ep)
    })
}
