//! The public demo: the bundled model loaded once, sessions started without a key but limited
//! per client address and capped in number, the ranking of unseen items, and nothing served when
//! the demo is off.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, TestDatabase, TestServer, client_with_key, test_config};

fn demo_config(db: &TestDatabase) -> elicit::app::Config {
    elicit::app::Config {
        demo: true,
        ..test_config(&db.url)
    }
}

/// The session's ranking of unseen items (at most `limit`), read with its token.
async fn ranking(server: &TestServer, token: &reqwest::Client, id: &str, limit: usize) -> Value {
    token
        .get(server.url(&format!("/v1/sessions/{id}/ranking?limit={limit}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn start_demo(server: &TestServer) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/demo/sessions"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, response.json().await.unwrap())
}

/// The demo model is loaded on the first start with its grouped, described items, once: not
/// again on a restart, and never again after an admin deleted it.
async fn the_demo_model_loads_once(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start_with(demo_config(&db)).await;
    let (status, model) = server.get("/v1/models/demo").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["dimensions"].as_array().unwrap().len(), 6);
    let (_, items) = server.get("/v1/models/demo/items?limit=1000").await;
    let items = items["items"].as_array().unwrap();
    assert!(items.len() >= 96, "{}", items.len());
    assert!(items.iter().all(|i| {
        i["group"].is_string()
            && i["payload"]["prompt"].is_string()
            && i["payload"]["text"].is_string()
    }));
    let (_, trail) = server.get("/v1/audit?target=models/demo").await;
    let entries = trail["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "created and filled: {trail}");
    assert!(entries.iter().all(|e| e["actor_key_id"] == "first-run"));
    server.stop().await;

    let server = TestServer::start_with(demo_config(&db)).await;
    let (_, trail) = server.get("/v1/audit?target=models/demo").await;
    assert_eq!(trail["entries"].as_array().unwrap().len(), 2, "not again");
    let (status, _) = server.delete("/v1/models/demo").await;
    assert_eq!(status, 200);
    server.stop().await;

    let server = TestServer::start_with(demo_config(&db)).await;
    let (status, _) = server.get("/v1/models/demo").await;
    assert_eq!(status, 404, "an admin's deletion stands");
    let (status, body, _) = start_demo(&server).await;
    assert_eq!(status, 404, "{body:?}");
    server.stop().await;
}

/// Anyone may start a demo session (no key); its token drives it, six rankings of four answers to
/// one prompt long, and its ranking lists the items it has not shown, best first, beside the
/// population's ranks.
async fn a_demo_session_runs_on_its_token(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start_with(demo_config(&db)).await;
    let (status, _, created) = start_demo(&server).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["model"], "demo");
    assert_eq!(created["max_questions"], 6);
    assert!(created["user_id"].as_str().unwrap().starts_with("demo-"));
    // The demo model's dimensions name their ends; before any answer nothing is known.
    let (_, model) = server.get("/v1/models/demo").await;
    assert_eq!(
        model["ends"][0],
        json!({"low": "concise answers", "high": "detailed answers"})
    );
    assert_eq!(created["summary"]["statements"], json!([]));
    assert_eq!(created["summary"]["unknown"].as_array().unwrap().len(), 6);
    let id = created["id"].as_str().unwrap();
    let question = &created["question"];
    assert_eq!(question["answer"], json!({"kind": "rank", "top": 4}));
    let shown: Vec<&str> = question["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(shown.len(), 4, "{question}");
    assert!(
        question["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["payload"]["prompt"] == question["items"][0]["payload"]["prompt"]),
        "a question shows answers to one prompt: {question}"
    );

    let token = client_with_key(created["token"].as_str().unwrap());
    let ranked = ranking(&server, &token, id, 1000).await;
    let items = ranked["items"].as_array().unwrap();
    assert_eq!(ranked["unseen"].as_u64().unwrap() as usize, items.len());
    assert!(
        items
            .iter()
            .all(|i| !shown.contains(&i["id"].as_str().unwrap()))
    );
    let ranks: Vec<u64> = items.iter().map(|i| i["rank"].as_u64().unwrap()).collect();
    assert_eq!(ranks, (1..=items.len() as u64).collect::<Vec<_>>());
    assert!(
        items
            .windows(2)
            .all(|w| w[0]["mean"].as_f64() >= w[1]["mean"].as_f64())
    );
    // Before any answer the session's posterior is the population's: the same order.
    assert!(items.iter().all(|i| i["rank"] == i["population_rank"]));

    let response = token
        .post(server.url(&format!("/v1/sessions/{id}/answers")))
        .header("Idempotency-Key", "k1")
        .json(&json!({"question_id": question["id"], "ranking": shown}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answered: Value = response.json().await.unwrap();
    // Neither the ranked answers nor the next question's are unseen any more.
    let seen: Vec<&str> = answered["question"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .chain(shown.iter().copied())
        .collect();
    let ranked = ranking(&server, &token, id, 1000).await;
    assert_eq!(ranked["answers"], 1);
    let unseen = ranked["items"].as_array().unwrap();
    // The next question shows at most one of the four ranked (no two of its items were compared).
    assert!(
        unseen.len() <= items.len() - 3,
        "{} of {}",
        unseen.len(),
        items.len()
    );
    assert!(
        unseen
            .iter()
            .all(|i| !seen.contains(&i["id"].as_str().unwrap()))
    );
    let ranked = ranking(&server, &token, id, 5).await;
    assert_eq!(ranked["items"].as_array().unwrap().len(), 5);

    // Another session's token may not read it; a missing session is 404.
    let (_, _, other) = start_demo(&server).await;
    let other = client_with_key(other["token"].as_str().unwrap());
    let refused = other
        .get(server.url(&format!("/v1/sessions/{id}/ranking")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let (status, _) = server
        .get("/v1/sessions/01a2ffffffff7fffbfffffffffffffff/ranking")
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// Starts are limited per client address (429 with Retry-After past the burst), and open demo
/// sessions are capped (503 with Retry-After) whoever asks.
async fn demo_starts_are_limited_and_capped(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let config = elicit::app::Config {
        demo_rate_per_s: 0.5,
        demo_burst: 3,
        ..demo_config(&db)
    };
    let server = TestServer::start_with(config).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, retry, _) = start_demo(&server).await;
        if status == 429 {
            let seconds: u64 = retry.expect("Retry-After").parse().unwrap();
            assert!((1..=2).contains(&seconds), "{seconds}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429, 429]);
    server.stop().await;

    let config = elicit::app::Config {
        demo_max_open_sessions: 2,
        ..demo_config(&db)
    };
    let server = TestServer::start_with(config).await;
    // Three open sessions exist already from the run above: at the cap of 2, nobody starts one.
    let (status, retry, body) = start_demo(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "https://elicit.dev/problems/at-capacity");
    assert_eq!(retry.as_deref(), Some("60"));
    // Sessions older than the time-to-live no longer count.
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let config = elicit::app::Config {
        demo_max_open_sessions: 2,
        demo_session_ttl_s: 1,
        ..demo_config(&db)
    };
    let server = TestServer::start_with(config).await;
    let (status, _, body) = start_demo(&server).await;
    assert_eq!(status, 201, "{body}");
    server.stop().await;
}

/// With the demo off (the production configuration), neither the page nor the endpoint exists.
async fn no_demo_when_off(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (status, _) = server.get("/v1/models/demo").await;
    assert_eq!(status, 404);
    let page = reqwest::get(server.url("/demo")).await.unwrap();
    assert_eq!(page.status(), 404);
    let (status, _, _) = start_demo(&server).await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// The page and its assets: compiled in, with their types, and under the CSP that forbids inline
/// script (the page has none).
async fn the_page_is_served_safely(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start_with(demo_config(&db)).await;
    for (path, kind) in [
        ("/demo", "text/html"),
        ("/demo/demo.js", "text/javascript"),
        ("/demo/demo.css", "text/css"),
    ] {
        let response = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let body = response.text().await.unwrap();
        if path == "/demo" {
            // Every script is a file of its own: no inline script, no inline handlers.
            assert!(body.contains("<script src=\"/demo/demo.js\" defer></script>"));
            assert_eq!(body.matches("<script").count(), 1);
            let inline_handler = body.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!inline_handler, "an inline event handler");
        }
    }
    server.stop().await;
}

crate::on_both_stores!(
    the_demo_model_loads_once,
    a_demo_session_runs_on_its_token,
    demo_starts_are_limited_and_capped,
    no_demo_when_off,
    the_page_is_served_safely
);
