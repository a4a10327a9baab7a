//! State survives a restart of the server: nothing acknowledged is lost.

use serde_json::json;

use crate::harness::{Backend, TestDatabase, TestServer};

async fn a_restart_mid_session_loses_nothing(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = server.create_model_with_items("m", 3, 30, 3).await;
    let lambda = [1.0, 1.0, -1.0];
    let (_, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "m", "user_id": "u", "max_questions": 10}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    let mut last = created.clone();
    let mut choice = "a";
    for n in 1..=5 {
        let (given, body) = server
            .answer_truthfully(&id, &question, &features, &lambda, &format!("k{n}"))
            .await;
        choice = given;
        question = body["question"].clone();
        last = body;
    }
    server.stop().await;

    let server = TestServer::start(&db).await;
    let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(session["answers"], 5);
    assert_eq!(session["version"], last["version"]);
    assert_eq!(session["posterior"]["mean"], last["posterior"]["mean"]);
    assert_eq!(session["question"], last["question"]);
    let (_, current) = server.get(&format!("/v1/sessions/{id}/question")).await;
    assert_eq!(current["question"], last["question"]);

    // A retry of an answer acknowledged before the restart is replayed, not applied again.
    let (status, headers, replay) = server.answer(&id, "5", choice, "k5").await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(replay["answers"], 5);

    for n in 6..=10 {
        let (_, body) = server
            .answer_truthfully(&id, &question, &features, &lambda, &format!("k{n}"))
            .await;
        question = body["question"].clone();
    }
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["answers"], 10);
    assert_eq!(session["status"], "completed");
    server.stop().await;
}

crate::on_both_stores!(a_restart_mid_session_loses_nothing);
