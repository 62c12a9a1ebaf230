//! An extension's own Prometheus endpoint as a health source: error rate from two
//! counters (requests, errors) and p95 latency from a histogram, each taken over the
//! interval between two scrapes, so they describe now rather than the process's life.

use std::collections::BTreeMap;

/// What the manifest's `[metrics]` names.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSpec {
    /// `http://127.0.0.1:${PORT}/metrics`
    pub url: String,
    /// Counter of requests served.
    pub requests: String,
    /// Counter of requests that failed.
    pub errors: Option<String>,
    /// Histogram of request latency, seconds (its `_bucket` series).
    pub latency: Option<String>,
}

/// The figures of one scrape: counter totals and cumulative buckets (le -> count),
/// each summed over every label set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub requests: f64,
    pub errors: f64,
    pub buckets: BTreeMap<OrdF64, f64>,
    /// Whether the endpoint had the requests and errors series at all: a series it
    /// does not have is not exported as zero.
    pub requests_seen: bool,
    pub errors_seen: bool,
    /// The histogram's `_sum` (seconds) and `_count`, when it has them.
    pub latency_sum: Option<f64>,
    pub latency_count: Option<f64>,
}

/// `le` bounds in order (`+Inf` last).
#[derive(Debug, Clone, Copy)]
pub struct OrdF64(pub f64);
impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Reads the text exposition format. Lines it does not need are skipped.
pub fn parse(text: &str, spec: &PromSpec) -> Scrape {
    let mut s = Scrape::default();
    let bucket = spec.latency.as_ref().map(|l| format!("{l}_bucket"));
    let sum = spec.latency.as_ref().map(|l| format!("{l}_sum"));
    let count = spec.latency.as_ref().map(|l| format!("{l}_count"));
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => match line.split_once(' ') {
                Some((n, r)) => (n, r),
                None => continue,
            },
        };
        let (labels, value) = match rest.rfind('}') {
            Some(i) if rest.starts_with('{') => (&rest[1..i], rest[i + 1..].trim()),
            _ => ("", rest.trim()),
        };
        // A timestamp may follow the value.
        let Some(v) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        if series == spec.requests {
            s.requests += v;
            s.requests_seen = true;
        } else if Some(series) == spec.errors.as_deref() {
            s.errors += v;
            s.errors_seen = true;
        } else if Some(series) == sum.as_deref() {
            *s.latency_sum.get_or_insert(0.0) += v;
        } else if Some(series) == count.as_deref() {
            *s.latency_count.get_or_insert(0.0) += v;
        } else if Some(series) == bucket.as_deref() {
            let le = labels.split(',').find_map(|kv| kv.trim().strip_prefix("le=")).map(|q| q.trim_matches('"'));
            let le = match le {
                Some("+Inf") => f64::INFINITY,
                Some(x) => match x.parse::<f64>() {
                    Ok(x) => x,
                    Err(_) => continue,
                },
                None => continue,
            };
            *s.buckets.entry(OrdF64(le)).or_default() += v;
        }
    }
    s
}

/// Error rate (percent) and p95 (ms) between two scrapes; `None` where nothing was
/// served in between (or a counter went back: the process restarted).
pub fn between(before: &Scrape, after: &Scrape) -> (Option<f64>, Option<f64>) {
    let served = after.requests - before.requests;
    let error_rate = (served > 0.0 && after.errors >= before.errors)
        .then(|| ((after.errors - before.errors) / served * 100.0).clamp(0.0, 100.0));
    let deltas: Vec<(f64, f64)> =
        after.buckets.iter().map(|(le, n)| (le.0, n - before.buckets.get(le).copied().unwrap_or(0.0))).collect();
    let total = deltas.last().map(|d| d.1).unwrap_or(0.0);
    let p95 = if total > 0.0 && deltas.iter().all(|d| d.1 >= 0.0) {
        // The upper bound of the bucket the 95th percentile falls in; +Inf reports the
        // largest finite bound.
        let want = total * 0.95;
        let finite_max = deltas.iter().rev().find(|d| d.0.is_finite()).map(|d| d.0);
        deltas
            .iter()
            .find(|d| d.1 >= want)
            .map(|d| if d.0.is_finite() { d.0 } else { finite_max.unwrap_or(0.0) } * 1000.0)
    } else {
        None
    };
    (error_rate, p95)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PromSpec {
        PromSpec {
            url: String::new(),
            requests: "hello_requests_total".into(),
            errors: Some("hello_errors_total".into()),
            latency: Some("hello_request_seconds".into()),
        }
    }

    #[test]
    fn rates_come_from_counters_and_p95_from_the_histogram_between_scrapes() {
        let a = parse(
            "# TYPE hello_requests_total counter\nhello_requests_total{path=\"/\"} 100\nhello_requests_total{path=\"/health\"} 50\nhello_errors_total 3\nhello_request_seconds_bucket{le=\"0.01\"} 140\nhello_request_seconds_bucket{le=\"0.1\"} 149\nhello_request_seconds_bucket{le=\"+Inf\"} 150\n",
            &spec(),
        );
        assert_eq!((a.requests, a.errors, a.requests_seen, a.errors_seen), (150.0, 3.0, true, true));
        assert_eq!((a.latency_sum, a.latency_count), (None, None));
        let b = parse(
            "hello_requests_total{path=\"/\"} 180\nhello_requests_total{path=\"/health\"} 70\nhello_errors_total 13 1700000000000\nhello_request_seconds_bucket{le=\"0.01\"} 180\nhello_request_seconds_bucket{le=\"0.1\"} 240\nhello_request_seconds_bucket{le=\"+Inf\"} 250\n",
            &spec(),
        );
        // 100 served, 10 failed; 40 of 100 within 10 ms, 91 within 100 ms: p95 is over 100 ms.
        assert_eq!(between(&a, &b), (Some(10.0), Some(100.0)));
        assert_eq!(between(&b, &b), (None, None), "nothing served: unknown, not zero");
    }
}
