//! This instance's place in a cluster (`[cluster]`), as the operators see it: the `cluster` object of `/health` and
//! `/api/v1/streams`, the `/metrics` series `candled_cluster_info{shard, shards}` and
//! `candled_cluster_streams_owned`, and the log line that names the shard. Which streams a shard owns is decided in
//! `candled_actors::domain::shard`; the set the engine runs comes from [`Settings::owned_streams`].

use candled_actors::domain::Cluster;
use candled_actors::metrics::Metrics;
use prometheus::{IntGauge, IntGaugeVec, Opts};
use serde::Serialize;

use crate::config::Settings;

/// The `cluster` object of `/health` (with the counts) and `/api/v1/streams` (without).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    pub shard: u32,
    pub shards: u32,
    /// The streams this instance runs: the configured ones its shard owns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams_owned: Option<usize>,
    /// The streams `config.toml` names, owned by this shard or another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams_configured: Option<usize>,
}

impl ClusterView {
    /// The shard and the shard count alone.
    pub fn of(cluster: Cluster) -> Self {
        Self { shard: cluster.shard(), shards: cluster.shards(), streams_owned: None, streams_configured: None }
    }

    /// With how many streams this instance owns, of how many configured.
    pub fn with_counts(cluster: Cluster, owned: usize, configured: usize) -> Self {
        Self { streams_owned: Some(owned), streams_configured: Some(configured), ..Self::of(cluster) }
    }
}

/// The cluster's series on `/metrics`. Cheap to clone.
#[derive(Clone)]
pub struct ClusterMetrics {
    /// 1 for the shard in force, labelled `shard` and `shards`; the series of a shard no longer in force is removed.
    info: IntGaugeVec,
    owned: IntGauge,
}

impl ClusterMetrics {
    /// Registers the series in `metrics`, showing `cluster` and `owned` streams.
    pub fn register(metrics: &Metrics, cluster: Cluster, owned: usize) -> prometheus::Result<Self> {
        let info = IntGaugeVec::new(
            Opts::new("cluster_info", "This instance's shard (1 for the shard in force), by shard and shard count"),
            &["shard", "shards"],
        )?;
        let owned_gauge =
            IntGauge::new("cluster_streams_owned", "The configured streams this instance's shard owns and runs")?;
        metrics.registry.register(Box::new(info.clone()))?;
        metrics.registry.register(Box::new(owned_gauge.clone()))?;
        let gauges = Self { info, owned: owned_gauge };
        gauges.show(cluster, owned);
        Ok(gauges)
    }

    /// Shows `cluster` as the shard in force, owning `owned` streams.
    pub fn show(&self, cluster: Cluster, owned: usize) {
        self.info.reset();
        self.info.with_label_values(&[&cluster.shard().to_string(), &cluster.shards().to_string()]).set(1);
        self.owned.set(owned as i64);
    }
}

/// The log line naming this instance's shard and what it owns.
pub fn describe(settings: &Settings, owned: usize) -> String {
    let configured = settings.streams.len();
    let cluster = settings.cluster;
    if cluster.shards() == 1 {
        return format!("Cluster: a single shard, owning all {configured} configured stream(s)");
    }
    format!(
        "Cluster: shard {} of {} (numbered from 0), owning {owned} of the {configured} configured stream(s)",
        cluster.shard(),
        cluster.shards()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_show_the_shard_in_force_only() {
        let metrics = Metrics::new();
        let gauges = ClusterMetrics::register(&metrics, Cluster::default(), 3).unwrap();
        let text = || {
            let mut body = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &metrics.registry.gather(), &mut body)
                .unwrap();
            String::from_utf8(body).unwrap()
        };
        // TC0: at start: one shard, every stream.
        let shown = text();
        assert!(shown.contains("candled_cluster_info{shard=\"0\",shards=\"1\"} 1"), "{shown}");
        assert!(shown.contains("candled_cluster_streams_owned 3"), "{shown}");
        // TC1: a reload to shard 1 of 2: the old series is gone.
        gauges.show(Cluster::new(1, 2).unwrap(), 1);
        let shown = text();
        assert!(shown.contains("candled_cluster_info{shard=\"1\",shards=\"2\"} 1"), "{shown}");
        assert!(!shown.contains("shards=\"1\""), "{shown}");
        assert!(shown.contains("candled_cluster_streams_owned 1"), "{shown}");
    }

    #[test]
    fn the_view_has_counts_only_where_asked() {
        let cluster = Cluster::new(2, 3).unwrap();
        // TC0: /api/v1/streams: the place alone.
        assert_eq!(
            serde_json::to_value(ClusterView::of(cluster)).unwrap(),
            serde_json::json!({"shard": 2, "shards": 3})
        );
        // TC1: /health: with the counts.
        assert_eq!(
            serde_json::to_value(ClusterView::with_counts(cluster, 5, 16)).unwrap(),
            serde_json::json!({"shard": 2, "shards": 3, "streams_owned": 5, "streams_configured": 16})
        );
    }
}
