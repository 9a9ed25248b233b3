//! The counters behind `/metrics`, in Prometheus' text format, each name prefixed
//! `deltaward_mirror_`.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels of `requests_total`: the kind of path and the status code.
type RequestLabels = Vec<(&'static str, String)>;

/// The mirror's counters and gauges.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route kind and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Objects served from the cache.
    pub cache_hits: Counter,
    /// Objects not in the cache when asked for (each starts or joins a fill).
    pub cache_misses: Counter,
    /// Clients that joined a fill another request had started.
    pub coalesced_waiters: Counter,
    /// Body bytes sent to clients.
    pub bytes_served: Counter,
    /// Body bytes received from the upstream.
    pub upstream_bytes: Counter,
    /// Upstream requests made (every try).
    pub upstream_requests: Counter,
    /// Upstream requests that failed (unreachable, timeout, 5xx, broken body).
    pub upstream_errors: Counter,
    /// Objects and documents from the upstream that failed verification.
    pub verification_failures: Counter,
    /// Objects evicted from the cache.
    pub evictions: Counter,
    /// Bytes of objects in the cache.
    pub cache_bytes: Gauge,
    /// Objects in the cache.
    pub cache_objects: Gauge,
    /// Open client connections.
    pub open_connections: Gauge,
    /// Connections refused at the connection cap.
    pub refused_connections: Counter,
    /// Requests refused by the per-client rate limit.
    pub rate_limited: Counter,
    /// Delivery reports stored.
    pub reports: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("deltaward_mirror");
        let m = Self {
            requests: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            coalesced_waiters: Counter::default(),
            bytes_served: Counter::default(),
            upstream_bytes: Counter::default(),
            upstream_requests: Counter::default(),
            upstream_errors: Counter::default(),
            verification_failures: Counter::default(),
            evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_objects: Gauge::default(),
            open_connections: Gauge::default(),
            refused_connections: Counter::default(),
            rate_limited: Counter::default(),
            reports: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Requests answered, by route and status",
            m.requests.clone(),
        );
        r.register(
            "cache_hits",
            "Objects served from the cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Objects asked for that were not cached",
            m.cache_misses.clone(),
        );
        r.register(
            "coalesced_waiters",
            "Clients that joined another request's upstream fetch",
            m.coalesced_waiters.clone(),
        );
        r.register(
            "bytes_served",
            "Body bytes sent to clients",
            m.bytes_served.clone(),
        );
        r.register(
            "upstream_bytes",
            "Body bytes received from the upstream",
            m.upstream_bytes.clone(),
        );
        r.register(
            "upstream_requests",
            "Upstream requests made, every try counted",
            m.upstream_requests.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream requests that failed",
            m.upstream_errors.clone(),
        );
        r.register(
            "verification_failures",
            "Upstream objects and documents that failed verification",
            m.verification_failures.clone(),
        );
        r.register(
            "evictions",
            "Objects evicted from the cache",
            m.evictions.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes of objects in the cache",
            m.cache_bytes.clone(),
        );
        r.register(
            "cache_objects",
            "Objects in the cache",
            m.cache_objects.clone(),
        );
        r.register(
            "open_connections",
            "Open client connections",
            m.open_connections.clone(),
        );
        r.register(
            "refused_connections",
            "Connections closed at the connection cap",
            m.refused_connections.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by the per-client rate limit",
            m.rate_limited.clone(),
        );
        r.register("reports", "Delivery reports stored", m.reports.clone());
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Counts a response.
    pub fn request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("code", status.to_string()),
            ])
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_prefixed_and_counts_show() {
        let m = Metrics::default();
        m.cache_hits.inc();
        m.request("object", 200);
        let t = m.render();
        assert!(t.contains("deltaward_mirror_cache_hits_total 1"), "{t}");
        assert!(
            t.contains("deltaward_mirror_requests_total{route=\"object\",code=\"200\"} 1"),
            "{t}"
        );
        for line in t.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            assert!(line.starts_with("deltaward_mirror_"), "{line}");
        }
    }
}
