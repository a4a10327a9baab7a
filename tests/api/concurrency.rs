//! Idempotency keys, optimistic concurrency and concurrent answers.

use serde_json::json;

use crate::harness::{
    Backend, TestDatabase, TestServer, assert_problem, posterior_distance, question_item,
    replayed_posterior,
};

async fn session(server: &TestServer) -> (String, String) {
    server.create_model_with_items("m", 2, 20, 4).await;
    let (_, created) = server
        .post("/v1/sessions", &json!({"model": "m", "user_id": "u"}))
        .await;
    (
        created["id"].as_str().unwrap().to_string(),
        created["question"]["id"].as_str().unwrap().to_string(),
    )
}

async fn replayed_keys_return_the_first_response(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (id, q) = session(&server).await;
    let (status, headers, first) = server.answer(&id, &q, "a", "key-1").await;
    assert_eq!(status, 200);
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(headers.get("etag").unwrap(), "\"2\"");
    let (status, headers, second) = server.answer(&id, &q, "a", "key-1").await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(first, second);
    // Same key, different body: a conflict, and nothing changes.
    let (status, _, body) = server.answer(&id, &q, "b", "key-1").await;
    assert_problem(status, &body, 409, "idempotency-key-reused");
    // Another key for the already answered question: stale.
    let (status, _, body) = server.answer(&id, &q, "a", "key-2").await;
    assert_problem(status, &body, 409, "stale-question");
    // The first key again, for the open question: reused, and nothing is applied.
    let open = first["question"]["id"].as_str().unwrap();
    let (status, _, body) = server.answer(&id, open, "a", "key-1").await;
    assert_problem(status, &body, 409, "idempotency-key-reused");
    let (_, s) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(s["answers"], 1);
    assert_eq!(s["version"], 2);
    server.stop().await;
}

/// A replay is the first response byte for byte (no re-serialisation), covariance included when
/// the first request asked for it; without asking, the answer response leaves the covariance out.
async fn a_replay_is_byte_identical(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (id, q) = session(&server).await;
    let post = |key: &'static str, question: String, query: &'static str| {
        server
            .client
            .post(server.url(&format!("/v1/sessions/{id}/answers{query}")))
            .header("Idempotency-Key", key)
            .json(&json!({"question_id": question, "choice": "a"}))
            .send()
    };
    let first = post("b-1", q.clone(), "?covariance=true").await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/json");
    let first = first.bytes().await.unwrap();
    let replay = post("b-1", q.clone(), "").await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["etag"], "\"2\"");
    assert_eq!(replay.bytes().await.unwrap(), first);
    let body: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(body["posterior"]["cov"].as_array().unwrap().len(), 2);
    let next = body["question"]["id"].as_str().unwrap().to_string();
    let small: serde_json::Value = post("b-2", next, "").await.unwrap().json().await.unwrap();
    assert!(small["posterior"].get("cov").is_none(), "{small}");
    assert_eq!(small["posterior"]["sd"].as_array().unwrap().len(), 2);
    assert!(small["bits"].as_f64().unwrap() > 0.0);
    server.stop().await;
}

/// Two replicas on one database answer one session in turns: each answer is a run-cache miss on
/// the replica that did not take the previous one, and the result must be what a single engine
/// reaches by replaying the log.
async fn replicas_take_turns_on_one_session(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let replicas = [TestServer::start(&db).await, TestServer::start(&db).await];
    let features = replicas[0].create_model_with_items("m", 3, 30, 9).await;
    let lambda = [1.0, -0.5, 0.3];
    let (status, created) = replicas[1]
        .post(
            "/v1/sessions",
            &json!({"model": "m", "user_id": "u", "max_questions": 12}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    let mut log = Vec::new();
    for n in 0..12 {
        let (this, other) = (&replicas[n % 2], &replicas[(n + 1) % 2]);
        let (choice, body) = this
            .answer_truthfully(&id, &question, &features, &lambda, &format!("k{n}"))
            .await;
        log.push((
            question_item(&question, 0),
            question_item(&question, 1),
            choice,
        ));
        let (_, current) = other.get(&format!("/v1/sessions/{id}/question")).await;
        assert_eq!(current["question"], body["question"]);
        question = body["question"].clone();
        if question.is_null() {
            break;
        }
    }
    assert_eq!(log.len(), 12);
    for replica in &replicas {
        let (_, session) = replica.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(session["answers"], 12);
        let distance =
            posterior_distance(&session["posterior"], &replayed_posterior(&features, &log));
        assert!(
            distance < 1e-9,
            "stored posterior is {distance} from the replay"
        );
    }
    for replica in replicas {
        replica.stop().await;
    }
}

/// A replica answers from the session as it last committed it, without reading it. When another
/// replica has moved the session since, that commit must be refused and the answer judged afresh
/// from a read: a retry of the other replica's answer is replayed, a competing answer to the same
/// question is stale, and the log holds one answer.
async fn a_replica_behind_never_commits_over_another(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let (behind, ahead) = (TestServer::start(&db).await, TestServer::start(&db).await);
    behind.create_model_with_items("m", 2, 20, 4).await;
    for (user, key, expected) in [("u1", "k1", 200), ("u2", "k2", 409)] {
        let (_, created) = behind
            .post("/v1/sessions", &json!({"model": "m", "user_id": user}))
            .await;
        let id = created["id"].as_str().unwrap();
        let q = created["question"]["id"].as_str().unwrap();
        let (status, _, first) = ahead.answer(id, q, "a", "k1").await;
        assert_eq!(status, 200, "{first}");
        // `behind` still holds the session open at question q.
        let (status, headers, body) = behind.answer(id, q, "a", key).await;
        if expected == 200 {
            assert_eq!(status, 200, "{body}");
            assert_eq!(headers["idempotent-replayed"], "true");
            assert_eq!(body, first);
        } else {
            assert_problem(status, &body, 409, "stale-question");
        }
        let (_, session) = ahead.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(session["answers"], 1);
        assert_eq!(session["version"], first["version"]);
    }
    behind.stop().await;
    ahead.stop().await;
}

async fn if_match_guards_the_version(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (id, q) = session(&server).await;
    let post = |version: &str| {
        server
            .client
            .post(server.url(&format!("/v1/sessions/{id}/answers")))
            .header("If-Match", version)
            .json(&json!({"question_id": q, "choice": "b"}))
            .send()
    };
    let response = post("\"7\"").await.unwrap();
    assert_eq!(response.status(), 412);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_problem(412, &body, 412, "version-mismatch");
    let response = post("\"1\"").await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

async fn concurrent_answers_apply_exactly_once(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (id, q) = session(&server).await;
    // Different keys: one is applied, the other is told its question is stale.
    let (a, b) = tokio::join!(
        server.answer(&id, &q, "a", "x-1"),
        server.answer(&id, &q, "b", "x-2")
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", a.2, b.2);
    // The same key twice at once: one applied, one replayed.
    let (_, s) = server.get(&format!("/v1/sessions/{id}")).await;
    let q2 = s["question"]["id"].as_str().unwrap().to_string();
    let (a, b) = tokio::join!(
        server.answer(&id, &q2, "a", "y"),
        server.answer(&id, &q2, "a", "y")
    );
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(a.2, b.2);
    let replays = [&a.1, &b.1]
        .iter()
        .filter(|h| h.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replays, 1);
    let (_, s) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(s["answers"], 2);
    server.stop().await;
}

async fn a_question_about_a_deleted_item_is_replaced(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (id, q) = session(&server).await;
    let (_, s) = server.get(&format!("/v1/sessions/{id}")).await;
    let gone = s["question"]["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = server.delete(&format!("/v1/models/m/items/{gone}")).await;
    assert_eq!(status, 204);
    let (status, _, body) = server.answer(&id, &q, "a", "d1").await;
    assert_problem(status, &body, 409, "stale-question");
    let (status, current) = server.get(&format!("/v1/sessions/{id}/question")).await;
    assert_eq!(status, 200);
    let items: Vec<&str> = current["question"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(!items.contains(&gone.as_str()), "{current}");
    let q2 = current["question"]["id"].as_str().unwrap();
    let (status, _, body) = server.answer(&id, q2, "a", "d2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["answers"], 1);
    server.stop().await;
}

/// A finish continues the EP run the replica's cached run took for its reliability verdict at the
/// last answer; a replica without that run sweeps from the start. Two sessions with the same log
/// (statements only, so no question draws differ) finished one each way end at the same posterior,
/// to the last digit.
async fn a_finish_is_the_same_with_the_verdicts_run_or_without(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let replicas = [TestServer::start(&db).await, TestServer::start(&db).await];
    // The metric is process-wide: a model of this test's own (per store) keeps its counts apart.
    let model = format!("twins_{backend:?}").to_lowercase();
    replicas[0].create_model_with_items(&model, 3, 10, 5).await;
    let statements = [
        ("d0", "high", "clearly"),
        ("d1", "low", "slightly"),
        ("d2", "high", "slightly"),
        ("d0", "low", "slightly"),
        ("d1", "low", "clearly"),
        ("d2", "high", "clearly"),
        ("d0", "high", "slightly"),
        ("d1", "high", "slightly"),
        ("d2", "low", "slightly"),
        ("d0", "high", "clearly"),
        ("d1", "low", "clearly"),
    ];
    let mut finished = Vec::new();
    for (user, finisher) in [("u1", &replicas[0]), ("u2", &replicas[1])] {
        let (status, created) = replicas[0]
            .post("/v1/sessions", &json!({"model": model, "user_id": user}))
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        for (dimension, prefer, strength) in statements {
            let (status, body) = replicas[0]
                .post(
                    &format!("/v1/sessions/{id}/statements"),
                    &json!({"dimension": dimension, "prefer": prefer, "strength": strength}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, body) = finisher
            .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
        finished.push(body);
    }
    assert_eq!(finished[0]["posterior"], finished[1]["posterior"]);
    assert_eq!(finished[0]["diagnostics"], finished[1]["diagnostics"]);
    let metrics = replicas[0].metrics().await;
    for start in ["verdict", "fresh"] {
        let line =
            format!("elicit_finish_refinements_total{{model=\"{model}\",start=\"{start}\"}} 1");
        assert!(metrics.contains(&line), "no `{line}` in /metrics");
    }
    for replica in replicas {
        replica.stop().await;
    }
}

crate::on_both_stores!(
    a_finish_is_the_same_with_the_verdicts_run_or_without,
    replayed_keys_return_the_first_response,
    a_replay_is_byte_identical,
    replicas_take_turns_on_one_session,
    a_replica_behind_never_commits_over_another,
    if_match_guards_the_version,
    concurrent_answers_apply_exactly_once,
    a_question_about_a_deleted_item_is_replaced
);
