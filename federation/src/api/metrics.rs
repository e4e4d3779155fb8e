//! Counters for `/metrics`, in the Prometheus text exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the request-latency histogram, seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The node's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Queries admitted through this node.
    pub queries_submitted: AtomicU64,
    /// Queries this node's API saw refused by the ledger (over budget, disabled, ...).
    pub queries_refused: AtomicU64,
    /// Submissions answered with an earlier submission under the same Idempotency-Key
    /// (nothing proposed, nothing charged).
    pub queries_replayed: AtomicU64,
    /// Device records accepted by uploads to this node.
    pub records_ingested: AtomicU64,
    /// Device records refused by uploads to this node.
    pub records_refused: AtomicU64,
    /// Failed logins.
    pub login_failures: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Escapes a label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let s = elapsed.as_secs_f64();
        let mut l = lock(&self.latency);
        let h = l.entry(route.to_owned()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += s;
    }

    /// The exposition text, with the gauges given.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP medtech_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE medtech_http_requests_total counter");
        for ((m, r, s), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "medtech_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{s}\"}} {n}",
                esc(m),
                esc(r)
            );
        }
        let _ = writeln!(
            out,
            "# HELP medtech_http_request_seconds HTTP request latency."
        );
        let _ = writeln!(out, "# TYPE medtech_http_request_seconds histogram");
        for (r, h) in lock(&self.latency).iter() {
            let r = esc(r);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "medtech_http_request_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "medtech_http_request_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "medtech_http_request_seconds_sum{{route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "medtech_http_request_seconds_count{{route=\"{r}\"}} {}",
                h.count
            );
        }
        for (name, help, v) in [
            (
                "medtech_queries_submitted_total",
                "Queries admitted through this node.",
                &self.queries_submitted,
            ),
            (
                "medtech_queries_refused_total",
                "Queries refused by the ledger at this node.",
                &self.queries_refused,
            ),
            (
                "medtech_queries_replayed_total",
                "Submissions answered with an earlier one under the same Idempotency-Key.",
                &self.queries_replayed,
            ),
            (
                "medtech_records_ingested_total",
                "Device records accepted by this node.",
                &self.records_ingested,
            ),
            (
                "medtech_records_refused_total",
                "Device records refused by this node.",
                &self.records_refused,
            ),
            (
                "medtech_login_failures_total",
                "Failed logins at this node.",
                &self.login_failures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_requests_and_escapes_labels() {
        let m = Metrics::default();
        m.observe("GET", "/a\"b", 200, Duration::from_millis(3));
        m.observe("GET", "/a\"b", 200, Duration::from_millis(300));
        let text = m.render(&[("medtech_devices", "Devices.", 7.0)]);
        assert!(
            text.contains(
                r#"medtech_http_requests_total{method="GET",route="/a\"b",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"medtech_http_request_seconds_bucket{route="/a\"b",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"medtech_http_request_seconds_bucket{route="/a\"b",le="0.5"} 2"#),
            "{text}"
        );
        assert!(text.contains("medtech_devices 7"), "{text}");
    }
}
