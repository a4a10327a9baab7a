//! `elicit bench` against a real server: `--sessions` keeps that many sessions open, opened before
//! the clock and answered in turn, and the report carries their creation latency, the upload and
//! the bank's load.

use elicit::bench::{self, BenchOptions, Load};

use crate::harness::{ADMIN_KEY, Backend, TestDatabase, TestServer};

async fn the_bench_keeps_its_sessions_open(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let load = Load {
        clients: 2,
        seconds: 1.0,
        // Above the exhaustive limit (44,850 pairs): questions come from drawn pools.
        bank: 300,
        dims: 4,
        // A session stops early only once its questions carry little information.
        questions: 200,
        candidates: 10,
        rate: None,
        flood_per_s: None,
        sessions: Some(9),
        seed: 1,
    };
    let options = BenchOptions {
        target: server.base.clone(),
        api_key: ADMIN_KEY.to_string(),
        load,
    };
    let report = bench::run(&options).await.unwrap();
    // The nine opened before the clock, and one more for each that stopped asking and was
    // finished (unless the clock ran out first).
    assert!(report.sessions_created >= 9, "{report:?}");
    assert!(
        report.sessions_created - 9 <= report.sessions_finished,
        "{report:?}"
    );
    assert_eq!(report.creates.count, report.sessions_created);
    assert!(report.create_p50_ms > 0.0 && report.create_p99_ms >= report.create_p50_ms);
    assert!(report.answers.count >= 9, "{report:?}");
    assert_eq!(report.server_errors, 0);
    assert!(report.first_session_ms > 0.0);
    assert!(
        report.bank_mib > 0.0,
        "the server's elicit_bank_bytes for the bench model"
    );
    // The bench erased its model, and with it every session it made.
    let (status, _) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    let (_, models) = server.get("/v1/models").await;
    assert!(
        !models.to_string().contains("bench-"),
        "the bench model is gone: {models}"
    );
    server.stop().await;
}

crate::on_both_stores!(the_bench_keeps_its_sessions_open);
