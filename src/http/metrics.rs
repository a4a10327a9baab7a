//! Prometheus metrics: the recorder, per-request instrumentation and `/metrics`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::service::Service;

/// Latency buckets (seconds) for every histogram: 50 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Buckets of `elicit_session_questions`: answers in a finished session.
const QUESTION_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 200.0,
];

/// Buckets of `elicit_session_lapse_rate`: a user's estimated rate of random answers.
const LAPSE_BUCKETS: &[f64] = &[0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0];

/// The process-wide recorder (installed once, shared by every server in the process).
pub fn handle() -> &'static PrometheusHandle {
    use metrics_exporter_prometheus::Matcher;
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("elicit_session_questions".into()),
                    QUESTION_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("elicit_session_lapse_rate".into()),
                    LAPSE_BUCKETS,
                )
            })
            .expect("non-empty buckets")
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

/// Records `http_requests_total` and `http_request_duration_seconds` by route template, method
/// and status.
pub async fn track(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    response
}

/// Prometheus text format. Gauges that reflect the database are refreshed on each scrape.
pub async fn render(State(service): State<Service>) -> Response {
    let (open, idle) = service.store().pool_usage();
    metrics::gauge!("elicit_db_pool_connections", "state" => "open").set(open as f64);
    metrics::gauge!("elicit_db_pool_connections", "state" => "idle").set(idle as f64);
    if let Ok(counts) = service.store().sessions_by_status().await {
        for (status, n) in counts {
            metrics::gauge!("elicit_sessions", "status" => status).set(n as f64);
        }
    }
    let handle = handle();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
