//! Prometheus metrics: HTTP requests and latency by method, route template and status; the
//! database pool's size, idle and in-use connections; acquire timeouts.
//!
//! Routes are labelled by their template (`/notes/{id}`), never the raw path, so the number
//! of series stays bounded whatever clients send.

use std::{cell::RefCell, sync::OnceLock};

use actix_web::http::Method;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::db::DbSource;

/// Latency buckets, in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .expect("the metrics recorder is installed once per process");
        describe();
        // Histogram samples are folded into their buckets on upkeep (a scrape also does it);
        // without it, a server nobody scrapes would keep every sample in memory.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            })
            .expect("the metrics upkeep thread starts");
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        "http_requests_total",
        "HTTP requests by method, route and status"
    );
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency until the response head, by method, route and status"
    );
    metrics::describe_gauge!(
        "db_pool_connections",
        "database pool connections by state: max, open, idle, in_use"
    );
    metrics::describe_histogram!(
        "db_pool_acquire_seconds",
        metrics::Unit::Seconds,
        "time a request waited to begin its write transaction (pool acquire + BEGIN)"
    );
    metrics::describe_counter!(
        "db_reads_total",
        "requests that only read, by where they read: primary or replica (with DATABASE_READ_URL)"
    );
    metrics::describe_counter!(
        "db_replica_bypasses_total",
        "read-only requests sent to the primary: replica down, lagging, behind the client's \
         last write, or a read that failed on it"
    );
    metrics::describe_gauge!(
        "db_replica_lag_seconds",
        metrics::Unit::Seconds,
        "how far the read replica was behind the primary at its last check"
    );
    metrics::describe_gauge!(
        "db_replica_up",
        "1 when the read replica answered its last check"
    );
    metrics::describe_counter!(
        "db_pool_acquire_timeouts_total",
        "requests answered 503 because no pooled connection came within DB_ACQUIRE_TIMEOUT_MS"
    );
    metrics::describe_gauge!(
        "events_streams_open",
        "GET /notes/events streams open on this instance"
    );
    metrics::describe_counter!("events_sent_total", "change events sent to streams");
    metrics::describe_gauge!(
        "db_host_fits",
        "1 while a host of a multi-host DATABASE_URL fits its target_session_attrs (pool=primary|replica), 0 during a failover"
    );
    metrics::describe_counter!(
        "db_host_switches_total",
        "times a multi-host pool moved its new connections to another host (a failover)"
    );
    metrics::describe_histogram!(
        "events_lag_seconds",
        metrics::Unit::Seconds,
        "from a note change's write to its event on a stream (catch-up reads count as late)"
    );
}

/// Count one finished request.
///
/// The handles of each (route, method, status) series are looked up once per worker thread
/// and kept: the `metrics` macros with labels build and hash a key per call, 6.4 k
/// instructions more per request (bench/PERFORMANCE.md, "request context, headers and
/// metrics"). Routes are a short list, scanned rather than hashed.
pub fn record_request(method: &Method, route: &str, status: u16, seconds: f64) {
    let method = method_label(method);
    HANDLES.with_borrow_mut(|routes| {
        let series = match routes.iter().position(|(template, _)| **template == *route) {
            Some(i) => &mut routes[i].1,
            None => {
                routes.push((route.into(), Vec::new()));
                &mut routes.last_mut().expect("pushed just above").1
            }
        };
        let position = series
            .iter()
            .position(|s| s.method == method && s.status == status);
        let handles = match position {
            Some(i) => &series[i],
            None => {
                series.push(Series::register(method, route, status));
                series.last().expect("pushed just above")
            }
        };
        handles.requests.increment(1);
        handles.duration.record(seconds);
    });
}

/// One (route, method, status) series' handles.
struct Series {
    method: &'static str,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl Series {
    fn register(method: &'static str, route: &str, status: u16) -> Self {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        Self {
            method,
            status,
            requests: metrics::counter!("http_requests_total", &labels),
            duration: metrics::histogram!("http_request_duration_seconds", &labels),
        }
    }
}

thread_local! {
    /// Route template → the series seen on this thread. Bounded: routes are templates (or
    /// `unmatched`), methods are the standard ones (or `OTHER`), statuses are three digits.
    static HANDLES: RefCell<Vec<(Box<str>, Vec<Series>)>> = const { RefCell::new(Vec::new()) };
}

/// The method label: a client can send any token as a method, so only the standard methods
/// get their own series.
fn method_label(method: &Method) -> &'static str {
    static STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    STANDARD
        .iter()
        .find(|standard| *standard == method)
        .map_or("OTHER", Method::as_str)
}

/// Refresh the pool gauges (called when `/metrics` is scraped).
pub fn record_pool(db: &DbSource, max: u32) {
    let Some((open, idle)) = db.pool_status() else {
        return;
    };
    let idle = idle as f64;
    let open = f64::from(open);
    metrics::gauge!("db_pool_connections", "state" => "max").set(f64::from(max));
    metrics::gauge!("db_pool_connections", "state" => "open").set(open);
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("db_pool_connections", "state" => "in_use").set((open - idle).max(0.0));
}
