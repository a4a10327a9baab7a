//! API keys: rate limits (and their scope: each replica holds its own), expiry, rotation.

use serde_json::{Value, json};

use crate::harness::{Backend, TestDatabase, TestServer, assert_problem, client_with_key};

async fn create_key(server: &TestServer, body: Value) -> String {
    let (status, created) = server.post("/v1/keys", &body).await;
    assert_eq!(status, 201, "{created}");
    created["key"].as_str().unwrap().to_string()
}

/// Sends `n` scoring requests at once with `key`; returns their statuses and Retry-After values.
async fn burst_of(server: &TestServer, key: &str, n: usize) -> Vec<(u16, Option<u64>)> {
    let client = client_with_key(key);
    let body =
        json!({"model": "m", "user_id": "u", "candidates": [{"id": "x", "features": [1.0, 0.0]}]});
    let requests = (0..n).map(|_| {
        let (client, url, body) = (client.clone(), server.url("/v1/score"), body.clone());
        tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let status = response.status().as_u16();
            if status == 429 {
                let problem: Value = response.json().await.unwrap();
                assert_problem(status, &problem, 429, "rate-limited");
            }
            (status, retry)
        })
    });
    let mut out = Vec::with_capacity(n);
    for request in requests.collect::<Vec<_>>() {
        out.push(request.await.unwrap());
    }
    out
}

async fn a_key_over_its_rate_gets_429_and_others_do_not(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    server.create_model_with_items("m", 2, 5, 1).await;
    let limited = create_key(
        &server,
        json!({"name": "gw-a", "role": "scorer", "rate_per_s": 5, "burst": 10}),
    )
    .await;
    let other = create_key(&server, json!({"name": "gw-b", "role": "scorer"})).await;
    let started = std::time::Instant::now();
    let (mut flood, mut calm) = tokio::join!(
        burst_of(&server, &limited, 50),
        burst_of(&server, &other, 20)
    );
    let elapsed = started.elapsed().as_secs_f64();
    flood.sort();
    calm.sort();
    // The bucket holds the burst (10) and refills at 5 a second: on a loaded machine the 50
    // requests may take long enough for a few more tokens, never for more than that.
    let through = flood.iter().filter(|(s, _)| *s == 200).count();
    let most = 10 + (5.0 * elapsed).ceil() as usize;
    assert!(
        (1..=most).contains(&through),
        "{through} of 50 got through in {elapsed:.2} s (at most {most}): {flood:?}"
    );
    assert!(through < 50, "none of the 50 was limited in {elapsed:.2} s");
    for (status, retry) in &flood {
        assert!(matches!(status, 200 | 429), "{flood:?}");
        if *status == 429 {
            assert!(matches!(retry, Some(1..=2)), "Retry-After {retry:?}");
        }
    }
    assert!(
        calm.iter().all(|(s, _)| *s == 200),
        "the other key was limited: {calm:?}"
    );

    let (_, keys) = server.get("/v1/keys").await;
    let listed = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "gw-a")
        .unwrap()
        .clone();
    assert_eq!(
        (listed["rate_per_s"].as_f64(), listed["burst"].as_u64()),
        (Some(5.0), Some(10))
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("elicit_rate_limited_total{role=\"scorer\"}"),
        "rejections are counted by role"
    );
    let (status, body) = server
        .post(
            "/v1/keys",
            &json!({"name": "x", "role": "scorer", "burst": 0}),
        )
        .await;
    assert_problem(status, &body, 422, "validation");
    let (status, body) = server
        .post(
            "/v1/keys",
            &json!({"name": "x", "role": "scorer", "rate_per_s": 0}),
        )
        .await;
    assert_problem(status, &body, 422, "validation");
    server.stop().await;
}

/// The documented choice: each replica holds its own limiters, so two replicas each let a
/// key's burst through.
async fn each_replica_holds_its_own_limit(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let replicas = [TestServer::start(&db).await, TestServer::start(&db).await];
    replicas[0].create_model_with_items("m", 2, 5, 1).await;
    let key = create_key(
        &replicas[0],
        json!({"name": "gw", "role": "scorer", "rate_per_s": 0.5, "burst": 3}),
    )
    .await;
    for replica in &replicas {
        let statuses = burst_of(replica, &key, 8).await;
        let through = statuses.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(through, 3, "{statuses:?}");
    }
    for replica in replicas {
        replica.stop().await;
    }
}

/// Status of one scoring request with `key`.
async fn score_status(server: &TestServer, key: &str) -> u16 {
    burst_of(server, key, 1).await[0].0
}

async fn keys_expire_and_rotate_at_their_moment(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    server.create_model_with_items("m", 2, 5, 1).await;
    let soon = std::time::SystemTime::now() + std::time::Duration::from_millis(1500);
    let expires_at = humantime::format_rfc3339_millis(soon).to_string();
    let (status, created) = server
        .post(
            "/v1/keys",
            &json!({"name": "temp", "role": "scorer", "expires_at": expires_at}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["expires_at"], expires_at);
    let temp = created["key"].as_str().unwrap().to_string();
    assert_eq!(
        score_status(&server, &temp).await,
        200,
        "accepted before its moment"
    );

    // Rotation: the successor keeps name, role and limits; the old key lives for the grace period.
    let (_, old) = server
        .post(
            "/v1/keys",
            &json!({"name": "gw", "role": "scorer", "rate_per_s": 50, "burst": 60}),
        )
        .await;
    let (old_id, old_key) = (old["id"].as_str().unwrap(), old["key"].as_str().unwrap());
    let (status, rotated) = server
        .post(&format!("/v1/keys/{old_id}/rotate"), &json!({"grace_s": 1}))
        .await;
    assert_eq!(status, 201, "{rotated}");
    assert_eq!(rotated["rotated_from"], old_id);
    assert_eq!(
        (&rotated["name"], &rotated["role"]),
        (&json!("gw"), &json!("scorer"))
    );
    assert_eq!(
        (rotated["rate_per_s"].as_f64(), rotated["burst"].as_u64()),
        (Some(50.0), Some(60))
    );
    assert!(rotated["expires_at"].is_null());
    let new_key = rotated["key"].as_str().unwrap().to_string();
    assert_eq!(
        score_status(&server, old_key).await,
        200,
        "the old key works during the grace"
    );
    assert_eq!(score_status(&server, &new_key).await, 200);
    let (_, keys) = server.get("/v1/keys").await;
    let listed = |id: &str| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id)
            .unwrap()
            .clone()
    };
    assert!(listed(old_id)["expires_at"].is_string(), "{keys}");
    assert_eq!(
        listed(rotated["id"].as_str().unwrap())["rotated_from"],
        old_id
    );

    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    assert_eq!(
        score_status(&server, &temp).await,
        401,
        "refused after its moment"
    );
    assert_eq!(
        score_status(&server, old_key).await,
        401,
        "refused after the grace period"
    );
    assert_eq!(score_status(&server, &new_key).await, 200);

    let (status, body) = server
        .post(&format!("/v1/keys/{old_id}/rotate"), &json!({}))
        .await;
    assert_problem(status, &body, 404, "not-found");
    let new_id = rotated["id"].as_str().unwrap();
    let (status, body) = server
        .post(
            &format!("/v1/keys/{new_id}/rotate"),
            &json!({"grace_s": 999999999}),
        )
        .await;
    assert_problem(status, &body, 422, "validation");
    let past = humantime::format_rfc3339(
        std::time::SystemTime::now() - std::time::Duration::from_secs(60),
    )
    .to_string();
    let (status, body) = server
        .post(
            "/v1/keys",
            &json!({"name": "x", "role": "scorer", "expires_at": past}),
        )
        .await;
    assert_problem(status, &body, 422, "validation");
    let (status, body) = server
        .post(
            "/v1/keys",
            &json!({"name": "x", "role": "scorer", "expires_at": "tomorrow"}),
        )
        .await;
    assert_problem(status, &body, 422, "validation");
    server.stop().await;
}

crate::on_both_stores!(
    a_key_over_its_rate_gets_429_and_others_do_not,
    each_replica_holds_its_own_limit,
    keys_expire_and_rotate_at_their_moment,
    every_route_naming_a_model_refuses_an_out_of_scope_key
);

/// Every operation in `/openapi.json` that names a model — in its path, its query, its body, or
/// through the session it names — answers a key scoped to other models exactly as it answers
/// for a model that does not exist.
async fn every_route_naming_a_model_refuses_an_out_of_scope_key(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    for model in ["mine", "other"] {
        server.create_model_with_items(model, 2, 6, 1).await;
    }
    let (_, session) = server
        .post("/v1/sessions", &json!({"model": "other", "user_id": "u"}))
        .await;
    let other_session = session["id"].as_str().unwrap().to_string();
    let (status, created) = server
        .post(
            "/v1/keys",
            &json!({"name": "scoped", "role": "admin", "models": ["mine"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["models"], json!(["mine"]));
    let scoped = client_with_key(created["key"].as_str().unwrap());

    let (_, spec) = server.get("/openapi.json").await;
    let mut walked = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap();
            let names_model_in_body =
                operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .is_some_and(|r| {
                        let name = r.rsplit('/').next().unwrap();
                        spec["components"]["schemas"][name]["properties"]
                            .get("model")
                            .is_some()
                    });
            let names_model = path.contains("{model}")
                || path.starts_with("/v1/sessions/")
                || names_model_in_body
                || id == "create_model"
                || operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == "model"));
            if !names_model {
                continue;
            }
            // The same request for an existing model outside the scope and for a missing one.
            let mut answers = Vec::new();
            for (model, session) in [
                ("other", other_session.as_str()),
                ("ghost", "01a2ffffffff7fffbfffffffffffffff"),
            ] {
                let url = path
                    .replace("{model}", model)
                    .replace("{id}", session)
                    .replace("{item}", "item-1")
                    .replace("{user_id}", "u");
                let url = if path.ends_with("/profile") {
                    format!("{url}?model={model}")
                } else {
                    url
                };
                let body = match id {
                    "create_model" => Some(json!({"name": model, "dimensions": ["a", "b"]})),
                    "upsert_items" => Some(json!({"items": [{"id": "x", "features": [1.0, 0.0]}]})),
                    "create_session" => Some(json!({"model": model, "user_id": "u"})),
                    "score" => Some(
                        json!({"model": model, "user_id": "u", "candidates": [{"id": "x", "features": [1.0, 0.0]}]}),
                    ),
                    "post_answer" => Some(json!({"question_id": "1", "choice": "a"})),
                    "post_statement" => Some(json!({"dimension": "a", "prefer": "low"})),
                    "finish_session" => Some(json!({})),
                    _ => None,
                };
                let mut request =
                    scoped.request(method.to_uppercase().parse().unwrap(), server.url(&url));
                if let Some(body) = body {
                    request = request.json(&body);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let text = response
                    .text()
                    .await
                    .unwrap()
                    .replace(model, "MODEL")
                    .replace(session, "SESSION");
                answers.push((status, text));
            }
            assert_eq!(answers[0].0, 404, "{method} {path}: {:?}", answers[0]);
            assert_eq!(
                answers[0], answers[1],
                "{method} {path} tells an out-of-scope model from a missing one"
            );
            walked.push(id.to_string());
        }
    }
    walked.sort();
    assert_eq!(
        walked,
        [
            "create_model",
            "create_session",
            "delete_item",
            "delete_model",
            "finish_session",
            "get_model",
            "get_profile",
            "get_question",
            "get_session",
            "list_items",
            "post_answer",
            "post_statement",
            "refit_prior",
            "restore_prior",
            "score",
            "session_ranking",
            "upsert_items",
        ]
    );

    // In scope, the key works; the listing shows only its models; keys and erasure are closed.
    let get = |url: &str| scoped.get(server.url(url)).send();
    assert_eq!(get("/v1/models/mine").await.unwrap().status(), 200);
    let list: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"]);
    assert_eq!(get("/v1/keys").await.unwrap().status(), 403);
    assert_eq!(
        scoped
            .delete(server.url("/v1/users/u"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    server.stop().await;
}
