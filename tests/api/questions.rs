//! Richer questions over HTTP: pick one of k, graded pair answers, questions aimed at targets.

use elicit::model::Pair;
use elicit::model::elicitation::Response;
use elicit::model::{Choice, ElicitationConfig, Strategy, Strength};
use serde_json::{Value, json};

use crate::harness::{
    Backend, TestDatabase, TestServer, assert_problem, posterior_distance, question_item,
    replayed_log,
};

/// Creates model `name` with the given extra settings and `items` random items in `dims`
/// dimensions (ids `item-<i>`); returns the features.
async fn model_with(
    server: &TestServer,
    name: &str,
    dims: usize,
    items: usize,
    settings: Value,
) -> Vec<Vec<f64>> {
    let dimensions: Vec<String> = (0..dims).map(|d| format!("d{d}")).collect();
    let mut body = json!({"name": name, "dimensions": dimensions});
    body.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    let (status, model) = server.post("/v1/models", &body).await;
    assert_eq!(status, 201, "{model}");
    server.upload_items(name, dims, items, 3).await
}

fn reward(features: &[f64], lambda: &[f64]) -> f64 {
    features.iter().zip(lambda).map(|(f, l)| f * l).sum()
}

/// Posts an answer body with an idempotency key; returns the status and the raw body.
async fn post_answer(server: &TestServer, session: &str, body: &Value, key: &str) -> (u16, String) {
    let response = server
        .client
        .post(server.url(&format!("/v1/sessions/{session}/answers")))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn pick_one_of_four(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = model_with(&server, "four", 3, 30, json!({"choices": 4})).await;
    let lambda = [1.5, -1.0, 0.5];
    let (status, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "four", "user_id": "u", "max_questions": 8}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["choices"], 4);
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();

    // Wrong answers to a question of four items, each a clear 400 that changes nothing.
    let qid = question["id"].as_str().unwrap();
    for (body, field) in [
        (json!({"question_id": qid, "choice": "a"}), "choice"),
        (json!({"question_id": qid, "choice": "item-999"}), "choice"),
        (
            json!({"question_id": qid, "choice": question["items"][0]["id"], "strength": "clearly"}),
            "strength",
        ),
    ] {
        refused(&server, &id, &body, field).await;
    }

    let mut asked_pairs = std::collections::HashSet::new();
    let mut log = Vec::new();
    let mut first_reply = None;
    for n in 1..=8 {
        let items: Vec<usize> = (0..question["items"].as_array().unwrap().len())
            .map(|k| question_item(&question, k))
            .collect();
        assert_eq!(items.len(), 4, "{question}");
        // No two items are compared twice, within a question or across questions.
        for (x, &a) in items.iter().enumerate() {
            for &b in &items[x + 1..] {
                assert!(asked_pairs.insert((a.min(b), a.max(b))), "pair asked twice");
            }
        }
        // The user picks the item they like best; the third answer is a skip.
        let chosen = (n != 3).then(|| {
            (0..4)
                .max_by(|&x, &y| {
                    reward(&features[items[x]], &lambda)
                        .total_cmp(&reward(&features[items[y]], &lambda))
                })
                .unwrap()
        });
        let choice = chosen.map_or("skip".to_string(), |c| format!("item-{}", items[c]));
        let body = json!({"question_id": question["id"], "choice": choice});
        let (status, text) = post_answer(&server, &id, &body, &format!("k{n}")).await;
        assert_eq!(status, 200, "{text}");
        if n == 1 {
            first_reply = Some((body, text.clone()));
        }
        log.push(Response::Pick {
            shown: items,
            ranking: chosen.into_iter().collect(),
        });
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(reply["answers"], n);
        question = reply["question"].clone();
    }
    // A retry of the first answer replays its response byte for byte.
    let (body, text) = first_reply.unwrap();
    let (status, replay) = post_answer(&server, &id, &body, "k1").await;
    assert_eq!((status, replay), (200, text));

    // The stored posterior is the engine's replay of the log, and it points at the user.
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["status"], "completed", "{session}");
    let replayed = replayed_log(&features, &log, ElicitationConfig::default());
    let gap = posterior_distance(&session["posterior"], &replayed);
    assert!(gap < 1e-9, "stored posterior is {gap} from the replay");
    let mean: Vec<f64> = session["posterior"]["mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    let cosine =
        reward(&mean, &lambda) / (reward(&mean, &mean).sqrt() * reward(&lambda, &lambda).sqrt());
    assert!(cosine > 0.8, "cosine {cosine}: {session}");
    // Seven informative picks of four: each log₂4 = 2 bits of outcome against random clicks.
    assert_eq!(
        session["diagnostics"]["surprise_bits"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    assert!(
        session["diagnostics"]["log2_bayes_factor"]
            .as_f64()
            .unwrap()
            > 3.0
    );

    // Finishing keeps the streaming posterior (EP's sites are pairwise) as the profile.
    let (status, finished) = server
        .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
        .await;
    assert_eq!(status, 200, "{finished}");
    assert!(posterior_distance(&finished["posterior"], &replayed) < 1e-9);
    let (status, profile) = server.get("/v1/users/u/profile?model=four").await;
    assert_eq!(status, 200, "{profile}");
    assert!(posterior_distance(&profile["posterior"], &replayed) < 1e-9);
    server.stop().await;
}

async fn graded_pair_answers(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = model_with(&server, "graded", 3, 20, json!({"strength_threshold": 1.5})).await;
    let (status, model) = server.get("/v1/models/graded").await;
    assert_eq!(
        (status, model["strength_threshold"].as_f64()),
        (200, Some(1.5))
    );
    let (_, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "graded", "user_id": "g", "max_questions": 6}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    let qid = question["id"].as_str().unwrap();
    for body in [
        json!({"question_id": qid, "choice": "skip", "strength": "clearly"}),
        json!({"question_id": qid, "choice": "a", "strength": "very"}),
    ] {
        let (status, text) = post_answer(&server, &id, &body, "bad").await;
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert!(matches!(status, 400 | 422), "{problem}");
        assert_eq!(problem["status"], status, "{problem}");
    }
    // Answers by side or by item id, plain, slightly or clearly.
    let answers = [
        ("a", Some("clearly")),
        ("b", Some("slightly")),
        ("item", None),
        ("a", None),
        ("b", Some("clearly")),
        ("item", Some("slightly")),
    ];
    let mut log = Vec::new();
    for (n, (choice, strength)) in answers.into_iter().enumerate() {
        let pair = Pair {
            a: question_item(&question, 0),
            b: question_item(&question, 1),
        };
        let (wire, side) = match choice {
            "item" => (
                question["items"][1]["id"].as_str().unwrap().to_string(),
                Choice::B,
            ),
            "a" => ("a".to_string(), Choice::A),
            _ => ("b".to_string(), Choice::B),
        };
        let mut body = json!({"question_id": question["id"], "choice": wire});
        if let Some(s) = strength {
            body["strength"] = json!(s);
        }
        let (status, text) = post_answer(&server, &id, &body, &format!("g{n}")).await;
        assert_eq!(status, 200, "{text}");
        log.push(Response::Pair {
            pair,
            choice: side,
            strength: strength.map(|s| serde_json::from_value::<Strength>(json!(s)).unwrap()),
        });
        question = serde_json::from_str::<Value>(&text).unwrap()["question"].clone();
    }
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    let config = ElicitationConfig {
        strength_threshold: 1.5,
        ..Default::default()
    };
    let gap = posterior_distance(
        &session["posterior"],
        &replayed_log(&features, &log, config),
    );
    assert!(
        gap < 1e-9,
        "stored posterior is {gap} from the graded replay"
    );
    // The same answers read at another threshold give another posterior: the threshold is used.
    let other = replayed_log(&features, &log, ElicitationConfig::default());
    assert!(posterior_distance(&session["posterior"], &other) > 1e-3);
    server.stop().await;
}

async fn questions_aimed_at_targets(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = model_with(&server, "aim", 3, 40, json!({})).await;
    let targets: Vec<String> = (0..6).map(|i| format!("item-{i}")).collect();
    // EPIG needs targets, and asks pairs.
    for (body, field) in [
        (
            json!({"model": "aim", "user_id": "t", "strategy": "epig"}),
            "targets",
        ),
        (
            json!({"model": "aim", "user_id": "t", "strategy": "epig", "targets": targets, "choices": 3}),
            "choices",
        ),
        (
            json!({"model": "aim", "user_id": "t", "strategy": "epig", "targets": ["item-0", "nope"]}),
            "targets[1]",
        ),
    ] {
        let (status, problem) = server.post("/v1/sessions", &body).await;
        assert_problem(status, &problem, 422, "validation");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
    let (status, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "aim", "user_id": "t", "strategy": "epig", "targets": targets, "max_questions": 5}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["strategy"], "epig");
    assert_eq!(created["targets"], json!(targets));
    let id = created["id"].as_str().unwrap().to_string();
    let lambda = [1.0, 0.5, -1.0];
    let mut question = created["question"].clone();
    let mut log = Vec::new();
    for n in 1..=5 {
        assert!(
            question["information_bits"].as_f64().unwrap() > 0.0,
            "{question}"
        );
        let pair = Pair {
            a: question_item(&question, 0),
            b: question_item(&question, 1),
        };
        let choice = if reward(&features[pair.a], &lambda) >= reward(&features[pair.b], &lambda) {
            Choice::A
        } else {
            Choice::B
        };
        let body = json!({"question_id": question["id"], "choice": choice});
        let (status, text) = post_answer(&server, &id, &body, &format!("t{n}")).await;
        assert_eq!(status, 200, "{text}");
        log.push(Response::pair(pair, choice));
        question = serde_json::from_str::<Value>(&text).unwrap()["question"].clone();
    }
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["answers"], 5);
    let gap = posterior_distance(
        &session["posterior"],
        &replayed_log(
            &features,
            &log,
            ElicitationConfig {
                strategy: Strategy::Epig,
                ..Default::default()
            },
        ),
    );
    assert!(gap < 1e-9, "stored posterior is {gap} from the replay");
    // A model's own targets serve sessions that name none.
    let (status, _) = server
        .post(
            "/v1/models",
            &json!({"name": "aimed", "dimensions": ["d0", "d1", "d2"], "strategy": "epig", "targets": targets}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(server.upload_items("aimed", 3, 40, 3).await, features);
    let (status, created) = server
        .post("/v1/sessions", &json!({"model": "aimed", "user_id": "t2"}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["strategy"], "epig");
    assert!(created["question"]["information_bits"].as_f64().unwrap() > 0.0);
    server.stop().await;
}

/// Asserts a 422 validation problem whose detail names `field`.
async fn refused(server: &TestServer, session: &str, body: &Value, field: &str) {
    let (status, text) = post_answer(server, session, body, "bad").await;
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_problem(status, &problem, 422, "validation");
    assert!(
        problem["detail"].as_str().unwrap().contains(field),
        "{body}: {problem}"
    );
}

/// Rankings of four items: a full ranking (the model's setting) and a top two (a session's),
/// each wrong ranking a 422 naming its field, the stored posterior the engine's replay of the
/// log, an idempotent retry byte-identical, and a ranking's outcomes counted by the reliability
/// figures.
async fn rankings_of_four(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = model_with(
        &server,
        "ranked",
        3,
        40,
        json!({"choices": 4, "answer": "rank"}),
    )
    .await;
    let (_, model) = server.get("/v1/models/ranked").await;
    assert_eq!(model["answer"], "rank", "{model}");
    let lambda = [1.5, -1.0, 0.5];
    for (user, answer, ranked) in [("full", None, 4), ("top", Some(json!({"top": 2})), 2)] {
        let mut body = json!({"model": "ranked", "user_id": user, "max_questions": 6});
        if let Some(answer) = &answer {
            body["answer"] = answer.clone();
        }
        let (status, created) = server.post("/v1/sessions", &body).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        let mut question = created["question"].clone();
        assert_eq!(
            question["answer"],
            json!({"kind": "rank", "top": ranked}),
            "{question}"
        );
        let ids: Vec<Value> = (0..4).map(|k| question["items"][k]["id"].clone()).collect();
        let qid = question["id"].clone();
        for (bad, field) in [
            (
                json!({"question_id": qid, "ranking": [ids[0], ids[0]]}),
                "ranking",
            ),
            (
                json!({"question_id": qid, "ranking": [ids[0], "item-999"]}),
                "ranking",
            ),
            (
                json!({"question_id": qid, "ranking": [ids[0], ids[1], ids[2]]}),
                "ranking",
            ),
            (json!({"question_id": qid, "ranking": [ids[0]]}), "ranking"),
            (
                json!({"question_id": qid, "ranking": [], "choice": "skip"}),
                "ranking",
            ),
            (json!({"question_id": qid, "choice": ids[0]}), "choice"),
            (json!({"question_id": qid}), "choice"),
        ] {
            refused(&server, &id, &bad, field).await;
        }

        let mut log = Vec::new();
        let mut first_reply = None;
        for n in 1..=6 {
            let items: Vec<usize> = (0..4).map(|k| question_item(&question, k)).collect();
            // The user orders the items by their reward; the fourth answer is a skip.
            let mut order: Vec<usize> = (0..4).collect();
            order.sort_by(|&x, &y| {
                reward(&features[items[y]], &lambda)
                    .total_cmp(&reward(&features[items[x]], &lambda))
            });
            order.truncate(ranked);
            let body = if n == 4 {
                order.clear();
                json!({"question_id": question["id"], "choice": "skip"})
            } else {
                let ranking: Vec<Value> = order
                    .iter()
                    .map(|&p| question["items"][p]["id"].clone())
                    .collect();
                json!({"question_id": question["id"], "ranking": ranking})
            };
            let (status, text) = post_answer(&server, &id, &body, &format!("{user}{n}")).await;
            assert_eq!(status, 200, "{text}");
            if n == 1 {
                first_reply = Some((body, text.clone()));
            }
            log.push(Response::Pick {
                shown: items,
                ranking: order,
            });
            let reply: Value = serde_json::from_str(&text).unwrap();
            question = reply["question"].clone();
        }
        let (body, text) = first_reply.unwrap();
        let (status, replay) = post_answer(&server, &id, &body, &format!("{user}1")).await;
        assert_eq!((status, replay), (200, text));

        let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(session["status"], "completed", "{session}");
        assert_eq!(
            session["answer"],
            answer.unwrap_or(json!("rank")),
            "{session}"
        );
        let replayed = replayed_log(&features, &log, ElicitationConfig::default());
        let gap = posterior_distance(&session["posterior"], &replayed);
        assert!(
            gap < 1e-9,
            "{user}: stored posterior is {gap} from the replay"
        );
        let mean: Vec<f64> = session["posterior"]["mean"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let cosine = reward(&mean, &lambda)
            / (reward(&mean, &mean).sqrt() * reward(&lambda, &lambda).sqrt());
        assert!(cosine > 0.8, "{user}: cosine {cosine}: {session}");
        // Five informative rankings, each judged against the 24 (full) or 12 (top two) outcomes
        // a random answerer could give: orders that follow the user's taste are strong evidence.
        let diagnostics = &session["diagnostics"];
        assert_eq!(diagnostics["surprise_bits"].as_array().unwrap().len(), 5);
        assert!(
            diagnostics["log2_bayes_factor"].as_f64().unwrap() > 5.0,
            "{diagnostics}"
        );
        let (status, finished) = server
            .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
            .await;
        assert_eq!(status, 200, "{finished}");
        assert!(posterior_distance(&finished["posterior"], &replayed) < 1e-9);
    }

    // A pair question takes no ranking; a top m must order fewer items than a question shows.
    let (_, pairs) = server
        .post(
            "/v1/sessions",
            &json!({"model": "ranked", "user_id": "p", "choices": 2}),
        )
        .await;
    assert_eq!(pairs["question"]["answer"], json!({"kind": "pair"}));
    let ids: Vec<Value> = (0..2)
        .map(|k| pairs["question"]["items"][k]["id"].clone())
        .collect();
    let body = json!({"question_id": pairs["question"]["id"], "ranking": ids});
    refused(&server, pairs["id"].as_str().unwrap(), &body, "ranking").await;
    for body in [
        json!({"model": "ranked", "user_id": "x", "answer": {"top": 4}}),
        json!({"model": "ranked", "user_id": "x", "answer": {"top": 0}}),
    ] {
        let (status, problem) = server.post("/v1/sessions", &body).await;
        assert_problem(status, &problem, 422, "validation");
        assert!(
            problem["detail"].as_str().unwrap().contains("answer"),
            "{problem}"
        );
    }
    server.stop().await;
}

crate::on_both_stores!(
    pick_one_of_four,
    rankings_of_four,
    graded_pair_answers,
    questions_aimed_at_targets
);
