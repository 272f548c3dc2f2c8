//! The hub's Prometheus series: local WebSocket clients, subscribers and their stream subscriptions, events sent,
//! slow subscribers disconnected, and the delay from upstream receive to local send.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Upper bounds of the receive-to-send histogram, in seconds.
const SEND_DELAY_BUCKETS: [f64; 16] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The hub's series. Cheap to clone.
#[derive(Clone)]
pub struct HubMetrics {
    /// Local WebSocket clients connected now.
    pub ws_clients: IntGauge,
    /// Hub subscribers now (WebSocket clients and in-process ones).
    pub subscribers: IntGauge,
    /// Stream subscriptions now, over all subscribers.
    pub subscriptions: IntGauge,
    /// Events written to local WebSocket clients.
    pub events_sent: IntCounter,
    /// Subscribers disconnected because their buffer overflowed.
    pub slow_disconnected: IntCounter,
    /// From the frame's receipt on the upstream connection to its hand-over to a local client's socket.
    pub send_delay: Histogram,
}

impl HubMetrics {
    /// The series, registered in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let metrics = Self::unregistered();
        let collectors: [Box<dyn prometheus::core::Collector>; 6] = [
            Box::new(metrics.ws_clients.clone()),
            Box::new(metrics.subscribers.clone()),
            Box::new(metrics.subscriptions.clone()),
            Box::new(metrics.events_sent.clone()),
            Box::new(metrics.slow_disconnected.clone()),
            Box::new(metrics.send_delay.clone()),
        ];
        for collector in collectors {
            registry.register(collector).expect("registered once");
        }
        metrics
    }

    /// The series, registered nowhere (tests, and a hub used without `/metrics`).
    pub fn unregistered() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let delay = HistogramOpts::new("hub_send_delay_seconds", "Upstream receive to local WebSocket send")
            .buckets(SEND_DELAY_BUCKETS.to_vec());
        Self {
            ws_clients: gauge("ws_clients", "Local WebSocket clients connected"),
            subscribers: gauge("hub_subscribers", "Hub subscribers (WebSocket clients and in-process)"),
            subscriptions: gauge("hub_subscriptions", "Stream subscriptions of hub subscribers"),
            events_sent: counter("ws_events_sent_total", "Kline events written to local WebSocket clients"),
            slow_disconnected: counter(
                "hub_slow_disconnected_total",
                "Subscribers disconnected because their buffer overflowed",
            ),
            send_delay: Histogram::with_opts(delay).expect("valid metric"),
        }
    }
}
