//! What operators rely on: roles, probes, metrics, the OpenAPI document, graceful shutdown.

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::harness::{
    Backend, TestDatabase, TestServer, assert_problem, client_with_key, test_config,
};

async fn status_with(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create_key(server: &TestServer, role: &str) -> (String, String) {
    let (status, key) = server
        .post(
            "/v1/keys",
            &json!({"name": format!("{role} key"), "role": role}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    (
        key["id"].as_str().unwrap().to_string(),
        key["key"].as_str().unwrap().to_string(),
    )
}

async fn roles_are_enforced(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    server.create_model_with_items("m", 2, 10, 7).await;
    let (_, frontend) = create_key(&server, "frontend").await;
    let (scorer_id, scorer) = create_key(&server, "scorer").await;
    let (frontend, scorer) = (client_with_key(&frontend), client_with_key(&scorer));
    let anonymous = reqwest::Client::new();
    let stranger = client_with_key("not-a-key");
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let score_body = json!({"model": "m", "user_id": "u", "candidates": [{"item_id": "item-1"}]});

    // No key or a wrong key: 401 with a challenge.
    let response = anonymous
        .get(server.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    let (status, body) = status_with(&stranger, get.clone(), server.url("/v1/models"), None).await;
    assert_problem(status, &body, 401, "unauthorized");

    // A frontend key drives sessions but cannot create models or score.
    let (status, body) = status_with(
        &frontend,
        post.clone(),
        server.url("/v1/models"),
        Some(json!({"name": "x", "dimensions": ["a"]})),
    )
    .await;
    assert_problem(status, &body, 403, "forbidden");
    let (status, body) = status_with(
        &frontend,
        post.clone(),
        server.url("/v1/score"),
        Some(score_body.clone()),
    )
    .await;
    assert_problem(status, &body, 403, "forbidden");
    let (status, session) = status_with(
        &frontend,
        post.clone(),
        server.url("/v1/sessions"),
        Some(json!({"model": "m", "user_id": "u"})),
    )
    .await;
    assert_eq!(status, 201, "{session}");

    // A scorer scores but cannot open sessions or manage keys.
    let (status, _) = status_with(
        &scorer,
        post.clone(),
        server.url("/v1/score"),
        Some(score_body.clone()),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = status_with(
        &scorer,
        post.clone(),
        server.url("/v1/sessions"),
        Some(json!({"model": "m", "user_id": "u"})),
    )
    .await;
    assert_problem(status, &body, 403, "forbidden");
    let (status, body) = status_with(&scorer, get.clone(), server.url("/v1/keys"), None).await;
    assert_problem(status, &body, 403, "forbidden");

    // A session token drives its own session and nothing else.
    let token = client_with_key(session["token"].as_str().unwrap());
    let id = session["id"].as_str().unwrap();
    let (status, _) = status_with(
        &token,
        get.clone(),
        server.url(&format!("/v1/sessions/{id}")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let q = session["question"]["id"].as_str().unwrap();
    let (status, _) = status_with(
        &token,
        post.clone(),
        server.url(&format!("/v1/sessions/{id}/answers")),
        Some(json!({"question_id": q, "choice": "a"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, other) = status_with(
        &frontend,
        post.clone(),
        server.url("/v1/sessions"),
        Some(json!({"model": "m", "user_id": "v"})),
    )
    .await;
    assert_eq!(status, 201);
    let other_id = other["id"].as_str().unwrap();
    let (status, body) = status_with(
        &token,
        get.clone(),
        server.url(&format!("/v1/sessions/{other_id}")),
        None,
    )
    .await;
    assert_problem(status, &body, 403, "forbidden");
    let (status, body) = status_with(
        &token,
        post.clone(),
        server.url("/v1/score"),
        Some(score_body.clone()),
    )
    .await;
    assert_problem(status, &body, 403, "forbidden");
    let (status, body) = status_with(
        &token,
        post.clone(),
        server.url("/v1/sessions"),
        Some(json!({"model": "m", "user_id": "w"})),
    )
    .await;
    assert_problem(status, &body, 403, "forbidden");

    // Keys are listed without secrets, and a revoked key stops working.
    let (status, keys) = server.get("/v1/keys").await;
    assert_eq!(status, 200);
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert!(!keys.to_string().contains("ek_"), "a secret leaked: {keys}");
    let (status, _) = server.delete(&format!("/v1/keys/{scorer_id}")).await;
    assert_eq!(status, 204);
    let server_fresh = TestServer::start(&db).await; // another replica: no cached credentials
    let (status, body) = status_with(
        &scorer,
        post,
        server_fresh.url("/v1/score"),
        Some(score_body),
    )
    .await;
    assert_problem(status, &body, 401, "unauthorized");
    server_fresh.stop().await;
    server.stop().await;
}

async fn metrics_and_probes_are_served(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    server.create_model_with_items("m", 2, 10, 8).await;
    let (_, session) = server
        .post("/v1/sessions", &json!({"model": "m", "user_id": "u"}))
        .await;
    let id = session["id"].as_str().unwrap();
    let q = session["question"]["id"].as_str().unwrap();
    server.answer(id, q, "a", "m1").await;
    server.answer(id, q, "a", "m1").await;
    server.answer(id, q, "b", "m2").await;
    let plain = reqwest::Client::new();
    assert_eq!(
        plain
            .get(server.url("/livez"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        plain
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let text = plain
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "elicit_answers_applied_total",
        "elicit_questions_served_total",
        "elicit_idempotent_replays_total",
        "elicit_conflicts_total",
        "elicit_update_duration_seconds_bucket",
        "elicit_selection_duration_seconds_bucket",
        "elicit_store_transaction_duration_seconds_bucket",
        "elicit_db_pool_connections",
        "elicit_sessions{status=\"active\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(
        text.contains("route=\"/v1/sessions/{id}/answers\""),
        "routes are labelled by template"
    );
    server.stop().await;
}

/// A TCP relay to PostgreSQL that can be cut and restored, to take "the database" away from one
/// server without disturbing the other tests.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *watch.borrow() {
                    continue; // refused: dropped at once
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }
}

async fn readiness_follows_the_database(backend: Backend) {
    if let Backend::Sqlite = backend {
        return; // an embedded file cannot go away; the PostgreSQL variant exercises this
    }
    let db = TestDatabase::new(backend).await;
    let relay = Relay::start("127.0.0.1:5432").await;
    let url = db
        .url
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port), 1);
    let mut config = test_config(&url);
    config.acquire_timeout_ms = 500;
    let server = TestServer::start_with(config).await;
    let plain = reqwest::Client::new();
    let ready = || async {
        plain
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);
    relay.cut.send(true).unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = ready().await;
        if status == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 503,
        "readiness did not notice the database going away"
    );
    // Requests that need the database fail fast with 503, not 500.
    let (status, body) = server.get("/v1/models").await;
    assert_problem(status, &body, 503, "unavailable");
    relay.cut.send(false).unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = ready().await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "readiness did not recover");
    server.stop().await;
}

async fn shutdown_drains_in_flight_requests(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let mut config = test_config(&db.url);
    config.drain_delay_ms = 2_000;
    let server = TestServer::start_with(config).await;
    let features = server.create_model_with_items("m", 2, 10, 9).await;
    assert_eq!(features.len(), 10);
    let (_, session) = server
        .post("/v1/sessions", &json!({"model": "m", "user_id": "u"}))
        .await;
    let id = session["id"].as_str().unwrap().to_string();
    let q = session["question"]["id"].as_str().unwrap().to_string();
    let url = server.url("/readyz");
    // No pooled connections: those are closed when the shutdown begins.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", crate::harness::ADMIN_KEY)
                    .parse()
                    .unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let answer_url = server.url(&format!("/v1/sessions/{id}/answers"));
    let stopping = tokio::spawn(server.stop());
    // While draining: readiness is 503, requests still complete.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let status = client.get(&url).send().await.unwrap().status();
    assert_eq!(status, 503);
    let response = client
        .post(&answer_url)
        .json(&json!({"question_id": q, "choice": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    stopping.await.unwrap();
    // The answer was committed whole.
    let server = TestServer::start(&db).await;
    let (_, s) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(s["answers"], 1);
    server.stop().await;
}

crate::on_both_stores!(
    roles_are_enforced,
    metrics_and_probes_are_served,
    readiness_follows_the_database,
    shutdown_drains_in_flight_requests
);

#[test]
fn the_checked_in_openapi_document_is_current() {
    let generated =
        serde_json::to_string_pretty(&elicit::http::openapi::document()).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test --test api openapi` and commit it"
    );
    let doc: Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/models",
        "/v1/sessions/{id}/answers",
        "/v1/score",
        "/v1/keys",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the spec"
        );
    }
}

#[tokio::test]
async fn swagger_ui_and_spec_are_served() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let plain = reqwest::Client::new();
    let spec: Value = plain
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"].get("/v1/score").is_some());
    let page = plain.get(server.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_safe_headers(page.headers());
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger"));
    // The policy allows no inline script, so the page must have none.
    for script in html.split("<script").skip(1) {
        assert!(
            script.trim_start().starts_with("src="),
            "inline script in /docs: {script}"
        );
    }

    // The API answers with the same headers and allows no other origin.
    let response = plain
        .get(server.url("/v1/models"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_safe_headers(response.headers());
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let preflight = plain
        .request(reqwest::Method::OPTIONS, server.url("/v1/score"))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    server.stop().await;
}

fn assert_safe_headers(headers: &reqwest::header::HeaderMap) {
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let csp = get("content-security-policy").expect("a Content-Security-Policy");
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .expect("a script-src directive");
    assert!(!script_src.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(get("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(get("referrer-policy").as_deref(), Some("no-referrer"));
    assert_eq!(get("x-frame-options").as_deref(), Some("DENY"));
}

/// `config/grafana/elicit.json` is a Grafana dashboard (the shape Grafana imports), and every
/// metric its queries use is on `/metrics` after a little traffic.
#[tokio::test]
async fn the_grafana_dashboard_queries_metrics_the_service_exposes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/elicit.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 30);
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut metrics = std::collections::BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        assert!(panel["title"].is_string() && panel["type"].is_string());
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{panel}");
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty());
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{expr}"
            );
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("elicit_") || token.starts_with("http_") {
                    metrics.insert(token.to_string());
                }
            }
        }
    }
    for wanted in [
        "elicit_answers_applied_total",
        "http_request_duration_seconds_bucket",
        "http_requests_total",
        "elicit_session_questions_bucket",
        "elicit_sessions",
        "elicit_db_pool_connections",
    ] {
        assert!(metrics.contains(wanted), "the dashboard shows {wanted}");
    }

    // Traffic that moves every one of them: an onboarding with a replayed answer, a finish, a
    // rate-limited key, an error.
    let db = TestDatabase::new(Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    let features = server.create_model_with_items("m", 2, 10, 1).await;
    let (_, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "m", "user_id": "u", "max_questions": 2}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let q = created["question"].clone();
    server
        .answer_truthfully(&id, &q, &features, &[1.0, 0.0], "k1")
        .await;
    server
        .answer_truthfully(&id, &q, &features, &[1.0, 0.0], "k1")
        .await;
    server
        .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
        .await;
    let (_, key) = server
        .post(
            "/v1/keys",
            &json!({"name": "tiny", "role": "scorer", "rate_per_s": 0.1, "burst": 1}),
        )
        .await;
    let tiny = client_with_key(key["key"].as_str().unwrap());
    for _ in 0..3 {
        tiny.get(server.url("/v1/users/u/profile?model=m"))
            .send()
            .await
            .unwrap();
    }
    server.get("/v1/models/none").await;
    let text = server.metrics().await;
    for metric in &metrics {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{metric}{{"))
                    || l.starts_with(&format!("{metric} "))),
            "{metric} is on the dashboard but not on /metrics"
        );
    }
    server.stop().await;
}

/// The gateway client example (Python, standard library only) ranks candidates through a real
/// server as README shows.
#[tokio::test]
async fn the_gateway_client_example_prints_a_ranking() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let server = TestServer::start(&db).await;
    server.create_model_with_items("tone", 2, 6, 1).await;
    let dir = std::env::temp_dir().join(format!("elicit-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let candidates = dir.join("candidates.json");
    std::fs::write(
        &candidates,
        json!([{"id": "short", "features": [2.0, 0.0]}, {"id": "long", "features": [-1.0, 0.5]}, {"item_id": "item-2"}]).to_string(),
    )
    .unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gateway_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["--model", "tone", "--user", "alice", "--url", &server.base])
        .arg(&candidates)
        .env("ELICIT_API_KEY", crate::harness::ADMIN_KEY)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("scored with the population prior"),
        "{stdout}"
    );
    let ranked: Vec<&str> = stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(ranked.len(), 3, "{stdout}");
    assert!(
        ranked.contains(&"short") && ranked.contains(&"item-2"),
        "{stdout}"
    );
    let failed = tokio::process::Command::new("python3")
        .arg(&script)
        .args([
            "--model",
            "missing",
            "--user",
            "alice",
            "--url",
            &server.base,
        ])
        .arg(&candidates)
        .env("ELICIT_API_KEY", crate::harness::ADMIN_KEY)
        .output()
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(1), "a problem exits 1");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("404"));
    let _ = std::fs::remove_dir_all(&dir);
    server.stop().await;
}

/// With `cors_allowed_origins` set, a browser on that origin may call the API (the preflight is
/// answered before authentication) and any other origin still gets no CORS allowance.
#[tokio::test]
async fn cors_is_allowed_only_to_configured_origins() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let config = elicit::app::config::Config {
        cors_allowed_origins: vec!["https://app.example".into()],
        ..crate::harness::test_config(&db.url)
    };
    let server = TestServer::start_with(config).await;
    let plain = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        plain
            .request(
                reqwest::Method::OPTIONS,
                server.url("/v1/sessions/x/answers"),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let response = server
        .client
        .get(server.url("/v1/models"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        response.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("etag")
    );
    server.stop().await;
}
