//! Secrets stay secret: after traffic with API keys and session tokens (good, bad, revoked and
//! rotated ones), no secret appears in the service's logs (at debug level), in `/metrics`, in any
//! response body other than the one that issues it, in the key listing or in the audit trail —
//! neither the secret nor its stored SHA-256.
#[path = "support/net.rs"]
mod net;
use net::free_port;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ADMIN_KEY: &str = "admin-secret-7f3a9c1e5b2d4f6a8c0e";

fn with_key(key: &str) -> reqwest::Client {
    elicit::client::with_key(key, Some(Duration::from_secs(5))).unwrap()
}

/// Sends a request; returns the status and the body text.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaves_in_logs_metrics_or_bodies() {
    let dir = std::env::temp_dir().join(format!("elicit-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("server.log");
    let port = free_port();
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_elicit"))
        .args(["serve", "--port", &port.to_string()])
        .env(
            "ELICIT_DATABASE_URL",
            format!("sqlite://{}", dir.join("e.db").display()),
        )
        .env("ELICIT_ADMIN_KEY", ADMIN_KEY)
        .env("ELICIT_LOG_JSON", "true")
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let admin = with_key(ADMIN_KEY);
    for _ in 0..100 {
        if reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Traffic: keys created, used, rotated, revoked, mistyped; a session driven by its token.
    let mut secrets = vec![ADMIN_KEY.to_string()];
    let mut bodies = Vec::new();
    let post = reqwest::Method::POST;
    let (status, created) = call(
        &admin,
        post.clone(),
        &format!("{base}/v1/keys"),
        Some(json!({"name": "gw", "role": "scorer"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    let (scorer_id, scorer) = (
        created["id"].as_str().unwrap().to_string(),
        created["key"].as_str().unwrap().to_string(),
    );
    secrets.push(scorer.clone());
    let (_, model) = call(
        &admin,
        post.clone(),
        &format!("{base}/v1/models"),
        Some(json!({"name": "m", "dimensions": ["a", "b"]})),
    )
    .await;
    bodies.push(model);
    let items: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("i{i}"), "features": [i as f64, 1.0 - i as f64]}))
        .collect();
    let (_, upserted) = call(
        &admin,
        reqwest::Method::PUT,
        &format!("{base}/v1/models/m/items"),
        Some(json!({"items": items})),
    )
    .await;
    bodies.push(upserted);
    let (status, session) = call(
        &admin,
        post.clone(),
        &format!("{base}/v1/sessions"),
        Some(json!({"model": "m", "user_id": "alice"})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let session: Value = serde_json::from_str(&session).unwrap();
    let token = session["token"].as_str().unwrap().to_string();
    secrets.push(token.clone());
    let id = session["id"].as_str().unwrap().to_string();
    let question = session["question"]["id"].as_str().unwrap().to_string();
    let by_token = with_key(&token);
    let (status, answered) = call(
        &by_token,
        post.clone(),
        &format!("{base}/v1/sessions/{id}/answers"),
        Some(json!({"question_id": question, "choice": "a"})),
    )
    .await;
    assert_eq!(status, 200, "{answered}");
    bodies.push(answered);
    let score = json!({"model": "m", "user_id": "alice", "candidates": [{"item_id": "i1"}]});
    let (status, scored) = call(
        &with_key(&scorer),
        post.clone(),
        &format!("{base}/v1/score"),
        Some(score.clone()),
    )
    .await;
    assert_eq!(status, 200, "{scored}");
    bodies.push(scored);
    let (status, rotated) = call(
        &admin,
        post.clone(),
        &format!("{base}/v1/keys/{scorer_id}/rotate"),
        Some(json!({"grace_s": 0})),
    )
    .await;
    assert_eq!(status, 201, "{rotated}");
    let rotated: Value = serde_json::from_str(&rotated).unwrap();
    let successor = rotated["key"].as_str().unwrap().to_string();
    secrets.push(successor.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Refused callers: an expired key, a made-up key, a token on another route, a revoked key.
    let wrong = "ek_0000000000000000000000000000000000000000000000wrong".to_string();
    secrets.push(wrong.clone());
    for (key, url, body) in [
        (
            scorer.clone(),
            format!("{base}/v1/score"),
            Some(score.clone()),
        ),
        (
            wrong.clone(),
            format!("{base}/v1/score"),
            Some(score.clone()),
        ),
        (
            token.clone(),
            format!("{base}/v1/score"),
            Some(score.clone()),
        ),
        (successor.clone(), format!("{base}/v1/models"), None),
    ] {
        let method = if body.is_some() {
            post.clone()
        } else {
            reqwest::Method::GET
        };
        let (status, refused) = call(&with_key(&key), method, &url, body).await;
        assert!(matches!(status, 401 | 403), "{status} {refused}");
        bodies.push(refused);
    }
    let successor_id = rotated["id"].as_str().unwrap();
    let (status, _) = call(
        &admin,
        reqwest::Method::DELETE,
        &format!("{base}/v1/keys/{successor_id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, refused) = call(
        &with_key(&successor),
        post.clone(),
        &format!("{base}/v1/score"),
        Some(score),
    )
    .await;
    assert_eq!(status, 401);
    bodies.push(refused);
    let (_, listing) = call(
        &admin,
        reqwest::Method::GET,
        &format!("{base}/v1/keys"),
        None,
    )
    .await;
    bodies.push(listing);
    let (_, metrics) = call(
        &admin,
        reqwest::Method::GET,
        &format!("{base}/metrics"),
        None,
    )
    .await;
    bodies.push(metrics);
    // The audit trail recorded the key creations, the rotation and the revocation.
    let (_, audit) = call(
        &admin,
        reqwest::Method::GET,
        &format!("{base}/v1/audit?limit=1000"),
        None,
    )
    .await;
    assert!(audit.contains("key.rotate"), "{audit}");
    bodies.push(audit);

    child.kill().unwrap();
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("request"),
        "the log has the requests: {logs:.300}"
    );
    for secret in &secrets {
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        for (place, text) in
            std::iter::once(("logs", &logs)).chain(bodies.iter().map(|b| ("a response body", b)))
        {
            assert!(!text.contains(secret.as_str()), "a secret is in {place}");
            assert!(!text.contains(&hash), "a secret's hash is in {place}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
