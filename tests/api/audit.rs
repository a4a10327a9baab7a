//! The audit trail: one entry per admin change, written with the change, kept across restarts,
//! and holding no erased user's id.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Backend, TestDatabase, TestServer, client_with_key};

/// Operations whose tag marks them as admin-only.
const ADMIN_TAGS: [&str; 4] = ["models", "keys", "users", "audit"];

/// The admin operations in `/openapi.json` that change something: every one but the reads.
fn admin_changes(spec: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for item in spec["paths"].as_object().unwrap().values() {
        for (method, operation) in item.as_object().unwrap() {
            let admin = operation["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| ADMIN_TAGS.contains(&t.as_str().unwrap()));
            if admin && method != "get" {
                found.insert(operation["operationId"].as_str().unwrap().to_string());
            }
        }
    }
    found
}

/// An admin call: operation id, method, path, body, expected action and target.
type AdminCall = (
    &'static str,
    Method,
    String,
    Option<Value>,
    &'static str,
    String,
);

/// Every admin operation that changes something, as walked from `/openapi.json`, leaves exactly
/// one audit entry naming the acting key, the action, the target and the request's id; a call
/// that fails leaves none; the trail survives a restart; an erased user's id is nowhere in it.
async fn every_admin_change_leaves_one_entry(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (_, spec) = server.get("/openapi.json").await;

    // A second admin key acts, so the entries must name it rather than the bootstrap key.
    let (status, created) = server
        .post("/v1/keys", &json!({"name": "auditor", "role": "admin"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let actor_id = created["id"].as_str().unwrap().to_string();
    let admin = client_with_key(created["key"].as_str().unwrap());
    // A user with a session and an answer, to be erased.
    server.create_model_with_items("shop", 2, 6, 1).await;
    let user = "alice.smith@example.com";
    let (_, session) = server
        .post("/v1/sessions", &json!({"model": "shop", "user_id": user}))
        .await;
    let id = session["id"].as_str().unwrap();
    let (status, _, _) = server.answer(id, "1", "a", "k1").await;
    assert_eq!(status, 200);
    let (_, victim) = server
        .post("/v1/keys", &json!({"name": "victim", "role": "scorer"}))
        .await;
    let victim = victim["id"].as_str().unwrap().to_string();
    let (_, before) = server.get("/v1/audit?limit=1000").await;
    let entries_before = before["entries"].as_array().unwrap().len();

    let (_, found) = server
        .get(&format!("/v1/audit?user={}", urlencode(user)))
        .await;
    assert_eq!(found["entries"], json!([]), "nothing about the user yet");

    // In an order where each call succeeds: (operation, method, path, body, action, target).
    let calls: Vec<AdminCall> = vec![
        (
            "create_model",
            Method::POST,
            "/v1/models".into(),
            Some(json!({"name": "walk", "dimensions": ["a", "b"]})),
            "model.create",
            "models/walk".into(),
        ),
        (
            "upsert_items",
            Method::PUT,
            "/v1/models/walk/items".into(),
            Some(json!({"items": [
                {"id": "x", "features": [1.0, 0.0]},
                {"id": "y", "features": [0.0, 1.0]},
                {"id": "z", "features": [0.5, 0.5]},
            ]})),
            "items.upsert",
            "models/walk".into(),
        ),
        (
            "refit_prior",
            Method::POST,
            "/v1/models/walk/prior:refit".into(),
            Some(json!({})),
            "prior.refit",
            "models/walk".into(),
        ),
        (
            "restore_prior",
            Method::POST,
            "/v1/models/walk/prior:restore".into(),
            None,
            "prior.restore",
            "models/walk".into(),
        ),
        (
            "delete_item",
            Method::DELETE,
            "/v1/models/walk/items/x".into(),
            None,
            "item.delete",
            "models/walk/items/x".into(),
        ),
        (
            "delete_model",
            Method::DELETE,
            "/v1/models/walk".into(),
            None,
            "model.delete",
            "models/walk".into(),
        ),
        (
            "create_key",
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"name": "walked", "role": "frontend"})),
            "key.create",
            String::new(), // the new key's id, known from the response
        ),
        (
            "rotate_key",
            Method::POST,
            format!("/v1/keys/{victim}/rotate"),
            Some(json!({"grace_s": 0})),
            "key.rotate",
            format!("keys/{victim}"),
        ),
        (
            "revoke_key",
            Method::DELETE,
            format!("/v1/keys/{victim}"),
            None,
            "key.revoke",
            format!("keys/{victim}"),
        ),
        (
            "delete_user",
            Method::DELETE,
            format!("/v1/users/{}", urlencode(user)),
            None,
            "user.erase",
            String::new(), // a keyed hash, checked below
        ),
    ];
    let walked: BTreeSet<String> = calls.iter().map(|c| c.0.to_string()).collect();
    assert_eq!(
        walked,
        admin_changes(&spec),
        "every admin change in the document is walked (a new one needs its call here)"
    );

    for (operation, method, path, body, action, target) in calls {
        let mut request = admin.request(method, server.url(&path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let reply: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            (200..300).contains(&status),
            "{operation}: {status} {reply}"
        );

        let (_, page) = server.get("/v1/audit?limit=1000").await;
        let mine: Vec<&Value> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["request_id"] == request_id.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "{operation}: {page}");
        let entry = mine[0];
        assert_eq!(entry, &page["entries"][0], "{operation}: the newest entry");
        assert_eq!(entry["action"], action, "{operation}");
        assert_eq!(entry["actor_key_id"], actor_id.as_str(), "{operation}");
        assert!(entry["at"].as_str().unwrap().ends_with('Z'), "{entry}");
        let target = match operation {
            "create_key" => format!("keys/{}", reply["id"].as_str().unwrap()),
            "delete_user" => {
                let hashed = entry["target"].as_str().unwrap();
                assert!(
                    hashed.starts_with("users/") && hashed.len() == 6 + 64,
                    "{hashed}"
                );
                hashed.to_string()
            }
            _ => target,
        };
        assert_eq!(entry["target"], target.as_str(), "{operation}");
        if operation == "upsert_items" {
            // A finished session (not an admin change) for the refit to learn from.
            let (_, session) = server
                .post("/v1/sessions", &json!({"model": "walk", "user_id": "w"}))
                .await;
            let id = session["id"].as_str().unwrap();
            let (status, _, _) = server.answer(id, "1", "a", "w1").await;
            assert_eq!(status, 200);
            let (status, _) = server
                .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
                .await;
            assert_eq!(status, 200);
        }
    }
    let (_, after) = server.get("/v1/audit?limit=1000").await;
    let entries = after["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), entries_before + walked.len());

    // Failed calls leave nothing.
    for (method, path) in [
        (Method::DELETE, "/v1/models/missing"),
        (Method::DELETE, "/v1/keys/missing"),
        (Method::DELETE, "/v1/models/shop/items/missing"),
    ] {
        let status = admin
            .request(method, server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(status.status(), 404, "{path}");
    }
    let (status, _) = server
        .post("/v1/models", &json!({"name": "shop", "dimensions": ["a"]}))
        .await;
    assert_eq!(status, 409);
    let (_, unchanged) = server.get("/v1/audit?limit=1000").await;
    assert_eq!(
        unchanged["entries"].as_array().unwrap().len(),
        entries.len()
    );

    // The erased user is findable by whoever knows the id, and named nowhere in the trail.
    let (_, found) = server
        .get(&format!("/v1/audit?user={}", urlencode(user)))
        .await;
    let found = found["entries"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["action"], "user.erase");
    let text = after.to_string();
    assert!(!text.contains("alice"), "the user id leaked: {text}");

    // Filters: by action, by target with what lies under it; pages newest first.
    let (_, keys) = server.get("/v1/audit?action=key.rotate").await;
    assert_eq!(keys["entries"].as_array().unwrap().len(), 1);
    let (_, walk) = server.get("/v1/audit?target=models/walk").await;
    let actions: Vec<&str> = walk["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "model.delete",
            "item.delete",
            "prior.restore",
            "prior.refit",
            "items.upsert",
            "model.create"
        ]
    );
    let (_, first) = server.get("/v1/audit?limit=2").await;
    let next = first["next_before"].as_i64().unwrap();
    let (_, second) = server
        .get(&format!("/v1/audit?limit=2&before={next}"))
        .await;
    assert_eq!(second["entries"][0], entries[2]);

    // After a restart the trail is the same.
    server.stop().await;
    let server = TestServer::start(&db).await;
    let (_, restarted) = server.get("/v1/audit?limit=1000").await;
    assert_eq!(restarted["entries"], json!(entries));
    let (status, _) = server
        .get(&format!("/v1/audit?user={}", urlencode(user)))
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Only unscoped admin keys read the trail: it names every model.
async fn only_unscoped_admins_read_the_trail(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    for (name, role, models) in [
        ("scoped", "admin", Some(json!(["m"]))),
        ("gateway", "scorer", None),
        ("page", "frontend", None),
    ] {
        let mut body = json!({"name": name, "role": role});
        if let Some(models) = models {
            body["models"] = models;
        }
        let (_, created) = server.post("/v1/keys", &body).await;
        let client = client_with_key(created["key"].as_str().unwrap());
        let response = client.get(server.url("/v1/audit")).send().await.unwrap();
        assert_eq!(response.status(), 403, "{name}");
    }
    let (status, body) = server.get("/v1/audit?action=model.explode").await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = server.get("/v1/audit?target=models/m&user=u").await;
    assert_eq!((status, &body["entries"]), (200, &json!([])), "{body}");
    server.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('@', "%40")
}

crate::on_both_stores!(
    every_admin_change_leaves_one_entry,
    only_unscoped_admins_read_the_trail
);
