//! Every client mistake gets a specific 4xx problem+json and leaves no partial state.

use serde_json::{Value, json};

use crate::harness::{Backend, TestDatabase, TestServer, assert_problem};

async fn raw(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, String) {
    let response = server
        .client
        .request(method, server.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, content_type)
}

async fn models_reject_bad_definitions(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let cases = [
        (json!({"name": "", "dimensions": ["a"]}), "name"),
        (json!({"name": "has space", "dimensions": ["a"]}), "name"),
        (json!({"name": "m", "dimensions": []}), "dimensions"),
        (
            json!({"name": "m", "dimensions": ["a", "a"]}),
            "dimensions[1]",
        ),
        (
            json!({"name": "m", "dimensions": ["a", "b"], "prior": {"mean": [0.0], "cov": [[1.0, 0.0], [0.0, 1.0]]}}),
            "prior.mean",
        ),
        (
            json!({"name": "m", "dimensions": ["a", "b"], "prior": {"mean": [0.0, 0.0], "cov": [[1.0, 2.0], [2.0, 1.0]]}}),
            "prior.cov",
        ),
        (
            json!({"name": "m", "dimensions": ["a"], "noise": {"lapse": 1.5}}),
            "noise.lapse",
        ),
        (
            json!({"name": "m", "dimensions": ["a"], "noise": {"beta": -1.0}}),
            "noise.beta",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = server.post("/v1/models", &body).await;
        assert_problem(status, &problem, 422, "validation");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let (status, problem) = server
        .post(
            "/v1/models",
            &json!({"name": "m", "dimensions": ["a"], "colour": "red"}),
        )
        .await;
    assert_problem(status, &problem, 422, "validation");
    let (status, problem) = server
        .post(
            "/v1/models",
            &json!({"name": "m", "dimensions": ["a"], "update_method": "magic"}),
        )
        .await;
    assert_problem(status, &problem, 422, "validation");
    let (_, list) = server.get("/v1/models").await;
    assert_eq!(
        list["models"],
        json!([]),
        "a rejected model left state behind"
    );

    let (status, _) = server
        .post("/v1/models", &json!({"name": "m", "dimensions": ["a"]}))
        .await;
    assert_eq!(status, 201);
    let (status, problem) = server
        .post("/v1/models", &json!({"name": "m", "dimensions": ["a"]}))
        .await;
    assert_problem(status, &problem, 409, "already-exists");
    let (status, problem) = server.get("/v1/models/nope").await;
    assert_problem(status, &problem, 404, "not-found");
    server.stop().await;
}

async fn items_reject_bad_batches_atomically(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (status, _) = server
        .post(
            "/v1/models",
            &json!({"name": "m", "dimensions": ["a", "b"]}),
        )
        .await;
    assert_eq!(status, 201);
    let good = |i: usize| json!({"id": format!("i{i}"), "features": [i as f64, 1.0]});
    let cases = [
        (
            json!([good(0), {"id": "x", "features": [1.0]}]),
            "items[1].features",
        ),
        (json!([good(0), good(0)]), "items[1].id"),
        (
            json!([good(0), {"id": "", "features": [1.0, 2.0]}]),
            "items[1].id",
        ),
        (json!([]), "items"),
    ];
    for (items, field) in cases {
        let (status, problem) = server
            .put("/v1/models/m/items", &json!({"items": items}))
            .await;
        assert_problem(status, &problem, 422, "validation");
        assert_eq!(problem["field"], field, "{problem}");
    }
    // Numbers JSON cannot hold finite: rejected while parsing, naming the field.
    let (status, problem, _) = raw(
        &server,
        reqwest::Method::PUT,
        "/v1/models/m/items",
        "application/json",
        r#"{"items":[{"id":"z","features":[1e999,0]}]}"#,
    )
    .await;
    assert_problem(status, &problem, 422, "validation");
    let (status, problem, _) = raw(
        &server,
        reqwest::Method::PUT,
        "/v1/models/m/items",
        "application/json",
        r#"{"items":[{"id":"z","features":["NaN",0]}]}"#,
    )
    .await;
    assert_problem(status, &problem, 422, "validation");
    assert_eq!(problem["field"], "items[0].features[0]");
    let (_, page) = server.get("/v1/models/m/items").await;
    assert_eq!(
        page["items"],
        json!([]),
        "a rejected batch left items behind"
    );
    let (status, problem) = server
        .put("/v1/models/nope/items", &json!({"items": [good(0)]}))
        .await;
    assert_problem(status, &problem, 404, "not-found");
    let (status, problem) = server.get("/v1/models/m/items?limit=0").await;
    assert_problem(status, &problem, 422, "validation");
    server.stop().await;
}

async fn sessions_reject_bad_requests(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    server.create_model_with_items("m", 2, 10, 5).await;
    // Items in groups of one: no question can be asked.
    let (status, _) = server
        .post(
            "/v1/models",
            &json!({"name": "lonely", "dimensions": ["a"]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .put("/v1/models/lonely/items", &json!({"items": [{"id": "x", "features": [1.0], "group": "g1"}, {"id": "y", "features": [2.0], "group": "g2"}]}))
        .await;
    assert_eq!(status, 200);
    let (status, problem) = server
        .post("/v1/sessions", &json!({"model": "lonely", "user_id": "u"}))
        .await;
    assert_problem(status, &problem, 422, "validation");

    let cases = [
        (json!({"model": "m", "user_id": ""}), 422, "validation"),
        (
            json!({"model": "m", "user_id": "u", "max_questions": 0}),
            422,
            "validation",
        ),
        (
            json!({"model": "m", "user_id": "u", "items": ["item-1", "item-1"]}),
            422,
            "validation",
        ),
        (
            json!({"model": "m", "user_id": "u", "items": ["item-1", "ghost"]}),
            422,
            "validation",
        ),
        (json!({"model": "nope", "user_id": "u"}), 404, "not-found"),
    ];
    for (body, status_expected, kind) in cases {
        let (status, problem) = server.post("/v1/sessions", &body).await;
        assert_problem(status, &problem, status_expected, kind);
    }
    let (status, problem) = server.get("/v1/sessions/not-a-uuid").await;
    assert_problem(status, &problem, 404, "not-found");
    let (status, problem) = server
        .get(&format!("/v1/sessions/{}", uuid::Uuid::new_v4()))
        .await;
    assert_problem(status, &problem, 404, "not-found");

    let (_, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "m", "user_id": "u", "max_questions": 1}),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let q = created["question"]["id"].as_str().unwrap();
    // Ties need a tie threshold; the model has none.
    let (status, _, problem) = server.answer(id, q, "tie", "t1").await;
    assert_problem(status, &problem, 422, "validation");
    assert_eq!(problem["field"], "choice");
    let (status, _, problem) = server.answer(id, q, "maybe", "t2").await;
    assert_problem(status, &problem, 422, "validation");
    let (status, _, problem) = server.answer(id, "99", "a", "t3").await;
    assert_problem(status, &problem, 409, "stale-question");
    let (status, _, body) = server.answer(id, q, "skip", "t4").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["bits"], 0.0);
    let (status, _, problem) = server.answer(id, "2", "a", "t5").await;
    assert_problem(status, &problem, 409, "session-closed");
    let (status, profile) = server.get("/v1/users/u/profile").await;
    assert_problem(status, &profile, 422, "validation");
    server.stop().await;
}

async fn transport_errors_are_problems(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (status, problem, content_type) = raw(
        &server,
        reqwest::Method::POST,
        "/v1/models",
        "application/json",
        "{\"name\":",
    )
    .await;
    assert_problem(status, &problem, 400, "malformed-json");
    assert_eq!(content_type, "application/problem+json");
    let (status, problem, _) = raw(
        &server,
        reqwest::Method::POST,
        "/v1/models",
        "text/plain",
        "{}",
    )
    .await;
    assert_problem(status, &problem, 415, "unsupported-media-type");
    let huge = format!(
        "{{\"name\":\"m\",\"dimensions\":[\"{}\"]}}",
        "x".repeat(2 << 20)
    );
    let (status, problem, _) = raw(
        &server,
        reqwest::Method::POST,
        "/v1/models",
        "application/json",
        huge,
    )
    .await;
    assert_problem(status, &problem, 413, "payload-too-large");
    // The server closes a connection whose body it refused; start afresh.
    let server = TestServer {
        client: reqwest::Client::new(),
        ..server
    };
    let (status, problem) = server.get("/v1/nothing-here").await;
    assert_problem(status, &problem, 404, "not-found");
    server.stop().await;
}

async fn scoring_rejects_bad_candidates(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    server.create_model_with_items("m", 2, 10, 6).await;
    let server = &server;
    let score = |candidates: Value| {
        let body = json!({"model": "m", "user_id": "u", "candidates": candidates});
        async move { server.post("/v1/score", &body).await }
    };
    let cases = [
        (json!([]), "candidates"),
        (
            json!([{"id": "a", "features": [1.0]}]),
            "candidates[0].features",
        ),
        (
            json!([{"id": "a", "features": [1.0, 2.0]}, {"id": "a", "features": [1.0, 2.0]}]),
            "candidates[1]",
        ),
        (json!([{"item_id": "ghost"}]), "candidates[0].item_id"),
        (json!([{"id": "a"}]), "candidates[0]"),
        (
            json!([{"id": "a", "features": [1.0, 2.0], "item_id": "item-1"}]),
            "candidates[0]",
        ),
    ];
    for (candidates, field) in cases {
        let (status, problem) = score(candidates).await;
        assert_problem(status, &problem, 422, "validation");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"id": format!("c{i}"), "features": [0.0, 1.0]}))
        .collect();
    let (status, problem) = score(Value::Array(many)).await;
    assert_problem(status, &problem, 422, "validation");
    let (status, problem) = server
        .post(
            "/v1/score",
            &json!({"model": "nope", "user_id": "u", "candidates": [{"item_id": "x"}]}),
        )
        .await;
    assert_problem(status, &problem, 404, "not-found");
    let ten_thousand: Vec<Value> = (0..10_000)
        .map(|i| json!({"id": format!("c{i}"), "features": [i as f64, 1.0]}))
        .collect();
    let (status, body) = score(Value::Array(ten_thousand)).await;
    assert_eq!(status, 200);
    assert_eq!(body["scores"].as_array().unwrap().len(), 10_000);
}

/// On one database connection, answers whose optional values are NULL (a skip has no evidence)
/// and answers whose values are not share the cached commit statement.
async fn a_skip_then_answers_on_one_connection(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let config = elicit::app::config::Config {
        max_connections: 1,
        ..crate::harness::test_config(&db.url)
    };
    let server = TestServer::start_with(config).await;
    server.create_model_with_items("m", 2, 12, 3).await;
    for user in ["first", "second"] {
        let (_, created) = server
            .post(
                "/v1/sessions",
                &json!({"model": "m", "user_id": user, "max_questions": 4}),
            )
            .await;
        let id = created["id"].as_str().unwrap().to_string();
        let mut question = created["question"].clone();
        for (n, choice) in ["skip", "a", "b", "a"].into_iter().enumerate() {
            let q = question["id"].as_str().unwrap().to_string();
            let (status, _, body) = server.answer(&id, &q, choice, &format!("{user}{n}")).await;
            assert_eq!(status, 200, "{choice} after a skip: {body}");
            question = body["question"].clone();
        }
    }
    server.stop().await;
}

crate::on_both_stores!(
    models_reject_bad_definitions,
    items_reject_bad_batches_atomically,
    sessions_reject_bad_requests,
    transport_errors_are_problems,
    scoring_rejects_bad_candidates,
    a_skip_then_answers_on_one_connection
);
