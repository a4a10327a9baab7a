//! A full onboarding: model, items, 15 answers from a simulated user, finish, score.

use serde_json::{Value, json};

use crate::harness::{Backend, TestDatabase, TestServer, assert_problem};

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

async fn full_onboarding_recovers_the_user(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = server.create_model_with_items("tone", 3, 40, 1).await;
    let lambda = [1.5, -1.0, 0.5];

    let (status, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "tone", "user_id": "alice", "max_questions": 15}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["token"].as_str().unwrap().len() >= 32);
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    let mut asked = std::collections::HashSet::new();
    for n in 1..=15 {
        assert!(!question.is_null(), "question {n} missing");
        let pair = {
            let mut ids = [
                question["items"][0]["id"].as_str().unwrap().to_string(),
                question["items"][1]["id"].as_str().unwrap().to_string(),
            ];
            ids.sort();
            ids
        };
        assert!(asked.insert(pair), "a pair was asked twice");
        assert_eq!(
            question["items"][0]["payload"]["text"]
                .as_str()
                .unwrap()
                .split(' ')
                .next(),
            Some("option")
        );
        let (_, body) = server
            .answer_truthfully(&id, &question, &features, &lambda, &format!("k{n}"))
            .await;
        assert_eq!(body["answers"], n);
        question = body["question"].clone();
    }
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["status"], "completed");
    assert_eq!(session["stop_reason"], "budget");
    assert!(session["question"].is_null());
    assert!(
        session["diagnostics"]["bits"].as_f64().unwrap() > 3.0,
        "{session}"
    );
    assert!(
        session["diagnostics"]["log2_bayes_factor"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(session["posterior"]["dimensions"][0]["name"], "d0");

    let (status, finished) = server
        .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
        .await;
    assert_eq!(status, 200, "{finished}");
    assert_eq!(finished["status"], "finished");
    let mean = vector(&finished["posterior"]["mean"]);
    assert!(
        cosine(&mean, &lambda) > 0.9,
        "posterior mean {mean:?} is far from λ"
    );

    let (status, profile) = server.get("/v1/users/alice/profile?model=tone").await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["status"], "finished");
    assert_eq!(vector(&profile["posterior"]["mean"]), mean);

    // Scores rank candidates as the user would.
    let candidates: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("c{i}"), "features": [i as f64 - 2.0, 0.0, 0.0]}))
        .chain([json!({"item_id": "item-3"})])
        .collect();
    let (status, scored) = server
        .post(
            "/v1/score",
            &json!({"model": "tone", "user_id": "alice", "candidates": candidates}),
        )
        .await;
    assert_eq!(status, 200, "{scored}");
    assert_eq!(scored["profile"]["source"], "user");
    assert_eq!(scored["scores"][4]["rank"], 1, "{scored}");
    assert_eq!(scored["scores"][5]["id"], "item-3");
    assert!(scored["scores"][0]["sd"].as_f64().unwrap() > 0.0);
    assert!(scored.get("pairwise").is_none());
    let (status, pairwise) = server
        .post("/v1/score", &json!({"model": "tone", "user_id": "alice", "candidates": candidates, "pairwise": true}))
        .await;
    assert_eq!(status, 200, "{pairwise}");
    let p = &pairwise["pairwise"];
    let (p40, p04) = (p[4][0].as_f64().unwrap(), p[0][4].as_f64().unwrap());
    assert!(p40 > 0.9 && (p40 + p04 - 1.0).abs() < 1e-9, "{p}");

    // Someone never onboarded is scored with the population prior, and told so.
    let (_, population) = server
        .post("/v1/score", &json!({"model": "tone", "user_id": "bob", "candidates": [{"id": "x", "features": [1.0, 0.0, 0.0]}]}))
        .await;
    assert_eq!(population["profile"]["source"], "population");
    assert_eq!(population["scores"][0]["mean"], 0.0);

    // Finishing twice changes nothing.
    let (status, again) = server
        .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["version"], finished["version"]);

    // Erasure removes everything of the user.
    let (status, erased) = server.delete("/v1/users/alice").await;
    assert_eq!(status, 200, "{erased}");
    assert!(erased["rows_removed"].as_u64().unwrap() >= 17);
    let (status, body) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_problem(status, &body, 404, "not-found");
    let (status, body) = server.get("/v1/users/alice/profile?model=tone").await;
    assert_problem(status, &body, 404, "not-found");
    server.stop().await;
}

async fn models_and_items_are_managed(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    server.create_model_with_items("m", 2, 25, 2).await;
    let (status, model) = server.get("/v1/models/m").await;
    assert_eq!(status, 200);
    assert_eq!(model["bank_version"], 1);
    let (_, list) = server.get("/v1/models").await;
    assert_eq!(list["models"].as_array().unwrap().len(), 1);

    let (status, page) = server.get("/v1/models/m/items?limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let after = page["next_after"].as_str().unwrap().to_string();
    let (_, rest) = server
        .get(&format!("/v1/models/m/items?limit=100&after={after}"))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 15);
    assert!(rest["next_after"].is_null());

    let (status, _) = server.delete("/v1/models/m/items/item-0").await;
    assert_eq!(status, 204);
    let (status, body) = server.delete("/v1/models/m/items/item-0").await;
    assert_problem(status, &body, 404, "not-found");
    let (_, model) = server.get("/v1/models/m").await;
    assert_eq!(model["bank_version"], 2);

    // Upsert replaces features in place.
    let (status, _) = server
        .put(
            "/v1/models/m/items",
            &json!({"items": [{"id": "item-1", "features": [9.0, 9.0]}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, page) = server.get("/v1/models/m/items?limit=1").await;
    assert_eq!(page["items"][0]["features"], json!([9.0, 9.0]));

    // Deleting the model removes its items, sessions, answers and profiles; a model created again
    // under the same name starts empty (no cached bank of the old one is used).
    let (status, created) = server
        .post("/v1/sessions", &json!({"model": "m", "user_id": "u"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let session = created["id"].as_str().unwrap();
    let q = created["question"]["id"].as_str().unwrap();
    let (status, _, _) = server.answer(session, q, "a", "d1").await;
    assert_eq!(status, 200);
    let (status, erased) = server.delete("/v1/models/m").await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["model"], "m");
    // model + its prior + 24 items + session + answer + profile
    assert_eq!(erased["rows_removed"], 29);
    let (status, body) = server.get(&format!("/v1/sessions/{session}")).await;
    assert_problem(status, &body, 404, "not-found");
    let (status, body) = server.delete("/v1/models/m").await;
    assert_problem(status, &body, 404, "not-found");
    server.create_model_with_items("m", 2, 3, 1).await;
    let (status, created) = server
        .post("/v1/sessions", &json!({"model": "m", "user_id": "u"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, page) = server.get("/v1/models/m/items?limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    server.stop().await;
}

async fn a_large_bank_uploads_in_one_call(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (status, _) = server
        .post(
            "/v1/models",
            &json!({"name": "big", "dimensions": ["a", "b", "c", "d"]}),
        )
        .await;
    assert_eq!(status, 201);
    let features = crate::harness::random_features(100_000, 4, 9);
    let items: Vec<Value> = features
        .iter()
        .enumerate()
        .map(|(i, f)| json!({"id": format!("i{i}"), "features": f, "group": format!("g{}", i % 1000)}))
        .collect();
    let (status, body) = server
        .put("/v1/models/big/items", &json!({"items": items}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upserted"], 100_000);
    let (status, session) = server
        .post("/v1/sessions", &json!({"model": "big", "user_id": "u"}))
        .await;
    assert_eq!(status, 201, "{session}");
    // Questions stay within one group.
    let group = |id: &str| id.trim_start_matches('i').parse::<usize>().unwrap() % 1000;
    let q = &session["question"]["items"];
    assert_eq!(
        group(q[0]["id"].as_str().unwrap()),
        group(q[1]["id"].as_str().unwrap())
    );
    server.stop().await;
}

crate::on_both_stores!(
    full_onboarding_recovers_the_user,
    models_and_items_are_managed,
    a_large_bank_uploads_in_one_call
);
