//! Responsible personalisation over HTTP: the over-personalisation guard in scoring, and the
//! fallback to the population for users whose answers look random.

use serde_json::{Value, json};

use crate::harness::{Backend, TestDatabase, TestServer, assert_problem, random_features};

async fn onboard(
    server: &TestServer,
    model: &str,
    user: &str,
    features: &[Vec<f64>],
    lambda: &[f64],
    answers: usize,
) -> Value {
    let (status, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": model, "user_id": user, "max_questions": answers}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    for n in 0..answers {
        let (_, body) = server
            .answer_truthfully(&id, &question, features, lambda, &format!("{user}-{n}"))
            .await;
        question = body["question"].clone();
    }
    let (status, finished) = server
        .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
        .await;
    assert_eq!(status, 200, "{finished}");
    finished
}

async fn the_guard_bounds_the_divergence_and_fixes_dimensions(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (status, model) = server
        .post(
            "/v1/models",
            &json!({"name": "g", "dimensions": ["style", "length", "safety"],
                    "guard": {"max_divergence_bits": 0.5, "fixed_dimensions": ["safety"]}}),
        )
        .await;
    assert_eq!(status, 201, "{model}");
    assert_eq!(model["guard"]["fixed_dimensions"], json!(["safety"]));
    let features = server.upload_items("g", 3, 40, 7).await;
    onboard(&server, "g", "alice", &features, &[2.5, -2.0, 2.0], 20).await;

    let candidates = json!([
        {"id": "style", "features": [1.0, 0.0, 0.0]},
        {"id": "safety", "features": [0.0, 0.0, 1.0]},
    ]);
    let score = |extra: Value| {
        let mut body = json!({"model": "g", "user_id": "alice", "candidates": candidates});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let (status, scored) = server.post("/v1/score", &score(json!({}))).await;
    assert_eq!(status, 200, "{scored}");
    assert_eq!(scored["profile"]["source"], "user");
    let guard = &scored["guard"];
    let (alpha, bits) = (
        guard["alpha"].as_f64().unwrap(),
        guard["divergence_bits"].as_f64().unwrap(),
    );
    assert!(
        alpha > 0.0 && alpha < 1.0,
        "the budget binds for a confident user: {guard}"
    );
    assert!(bits <= 0.5 + 1e-12, "{guard}");
    assert_eq!(guard["max_divergence_bits"], 0.5);
    // The fixed dimension scores exactly as the population (prior N(0, I)): mean 0, sd 1.
    assert_eq!(scored["scores"][1]["mean"], 0.0, "{scored}");
    assert_eq!(scored["scores"][1]["sd"], 1.0, "{scored}");
    assert!(
        scored["scores"][0]["mean"].as_f64().unwrap() > 0.1,
        "{scored}"
    );

    // A request may tighten the model's budget, never loosen it.
    let (_, looser) = server
        .post("/v1/score", &score(json!({"max_divergence_bits": 50.0})))
        .await;
    assert_eq!(looser["guard"]["max_divergence_bits"], 0.5, "{looser}");
    let (_, tighter) = server
        .post("/v1/score", &score(json!({"max_divergence_bits": 0.05})))
        .await;
    let tight_alpha = tighter["guard"]["alpha"].as_f64().unwrap();
    assert!(tight_alpha < alpha && tighter["guard"]["divergence_bits"].as_f64().unwrap() <= 0.05);
    let (_, none) = server
        .post("/v1/score", &score(json!({"max_divergence_bits": 0.0})))
        .await;
    assert_eq!(none["guard"]["alpha"], 0.0, "{none}");
    assert_eq!(none["scores"][0]["mean"], 0.0, "{none}");

    // Without a guard on the model, a generous request budget keeps the user's own belief.
    let (status, _) = server
        .post(
            "/v1/models",
            &json!({"name": "free", "dimensions": ["a", "b"]}),
        )
        .await;
    assert_eq!(status, 201);
    let free_features = server.upload_items("free", 2, 30, 7).await;
    onboard(&server, "free", "bob", &free_features, &[1.0, -1.0], 8).await;
    let (_, plain) = server
        .post("/v1/score", &json!({"model": "free", "user_id": "bob", "candidates": [{"id": "x", "features": [1.0, 0.0]}]}))
        .await;
    assert!(plain.get("guard").is_none(), "{plain}");
    let (_, generous) = server
        .post(
            "/v1/score",
            &json!({"model": "free", "user_id": "bob", "max_divergence_bits": 1000.0,
                                   "candidates": [{"id": "x", "features": [1.0, 0.0]}]}),
        )
        .await;
    assert_eq!(generous["guard"]["alpha"], 1.0, "{generous}");
    assert_eq!(generous["scores"][0]["mean"], plain["scores"][0]["mean"]);

    // Bad guards are refused with the field named.
    let (status, body) = server
        .post(
            "/v1/models",
            &json!({"name": "bad", "dimensions": ["a"], "guard": {"fixed_dimensions": ["nope"]}}),
        )
        .await;
    assert_problem(status, &body, 422, "validation");
    assert_eq!(body["field"], "guard.fixed_dimensions[0]");
    let (status, body) = server
        .post(
            "/v1/score",
            &json!({"model": "free", "user_id": "bob", "max_divergence_bits": -1.0,
                                   "candidates": [{"id": "x", "features": [1.0, 0.0]}]}),
        )
        .await;
    assert_problem(status, &body, 422, "validation");
    server.stop().await;
}

async fn unreliable_users_are_scored_with_the_population(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    // A rule no session can pass (every session needs 1000 bits of evidence after 3 answers),
    // so that the flag's consequences are checked independently of how a user answered.
    let (status, _) = server
        .post(
            "/v1/models",
            &json!({"name": "r", "dimensions": ["a", "b"],
                    "reliability": {"min_log2_bayes_factor": 1000.0, "min_answers": 3}}),
        )
        .await;
    assert_eq!(status, 201);
    let features = server.upload_items("r", 2, 30, 7).await;
    let finished = onboard(&server, "r", "carol", &features, &[1.0, 1.0], 5).await;
    let diagnostics = &finished["diagnostics"];
    assert_eq!(diagnostics["unreliable"], true, "{finished}");
    let lapse = diagnostics["lapse_rate"].as_f64().unwrap();
    assert!(lapse > 0.0 && lapse < 0.5, "{diagnostics}");
    assert!(
        diagnostics["person_fit_z"].as_f64().is_some(),
        "{diagnostics}"
    );

    let (status, profile) = server.get("/v1/users/carol/profile?model=r").await;
    assert_eq!(status, 200);
    assert_eq!(profile["unreliable"], true);
    let request = json!({"model": "r", "user_id": "carol", "candidates": [{"id": "x", "features": [1.0, 1.0]}]});
    let (_, fallback) = server.post("/v1/score", &request).await;
    assert_eq!(fallback["profile"]["source"], "population", "{fallback}");
    assert_eq!(fallback["profile"]["unreliable"], true);
    assert_eq!(fallback["scores"][0]["mean"], 0.0);
    let mut opted_in = request.clone();
    opted_in["allow_unreliable"] = json!(true);
    let (_, own) = server.post("/v1/score", &opted_in).await;
    assert_eq!(own["profile"]["source"], "user", "{own}");
    assert!(own["scores"][0]["mean"].as_f64().unwrap() > 0.0, "{own}");

    let (_, metrics) = server.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    for name in [
        "elicit_unreliable_sessions_total",
        "elicit_unreliable_fallbacks_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    server.stop().await;
}

async fn probes_repeat_earlier_questions_without_moving_the_posterior(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (status, model) = server
        .post(
            "/v1/models",
            &json!({"name": "p", "dimensions": ["a", "b"], "probes": {"every": 3, "min_gap": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{model}");
    assert_eq!(model["probes"], json!({"every": 3, "min_gap": 1}));
    let features = server.upload_items("p", 2, 30, 7).await;
    let (_, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "p", "user_id": "dan", "max_questions": 9}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    let shown = |q: &Value| [0, 1].map(|k| q["items"][k]["id"].as_str().unwrap().to_string());
    let (mut asked, mut means) = (vec![], vec![]);
    for n in 0..9 {
        asked.push(shown(&question));
        let (_, body) = server
            .answer_truthfully(&id, &question, &features, &[1.5, -1.0], &format!("p{n}"))
            .await;
        means.push(body["posterior"]["mean"].clone());
        question = body["question"].clone();
    }
    // Questions 3, 6 and 9 re-ask earlier ones with the sides swapped, and leave the posterior
    // where it was; the others are new pairs.
    for probe in [2, 5, 8] {
        let [a, b] = asked[probe].clone();
        let earlier = asked[..probe].iter().position(|[x, y]| *x == b && *y == a);
        assert!(
            earlier.is_some(),
            "question {} is not a swapped repeat: {asked:?}",
            probe + 1
        );
        assert_eq!(
            means[probe],
            means[probe - 1],
            "a probe moved the posterior"
        );
    }
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    let diagnostics = &session["diagnostics"];
    assert_eq!(diagnostics["probes"], 3, "{diagnostics}");
    assert_eq!(
        diagnostics["probe_flips"], 0,
        "a consistent user never flips: {diagnostics}"
    );

    // The finished posterior is EP over the six questions only.
    let (status, finished) = server
        .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
        .await;
    assert_eq!(status, 200, "{finished}");
    assert_eq!(finished["diagnostics"]["probes"], 3);

    let (status, body) = server
        .post(
            "/v1/models",
            &json!({"name": "bad", "dimensions": ["a"], "probes": {"every": 1, "min_gap": 1}}),
        )
        .await;
    assert_problem(status, &body, 422, "validation");
    assert_eq!(body["field"], "probes.every");

    // A session may ask for probes of its own on a model without them (and is checked the same).
    let (status, _) = server
        .post(
            "/v1/models",
            &json!({"name": "plain", "dimensions": ["a", "b"]}),
        )
        .await;
    assert_eq!(status, 201);
    let features = server.upload_items("plain", 2, 30, 7).await;
    let (status, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "plain", "user_id": "eve", "max_questions": 6,
                    "probes": {"every": 2, "min_gap": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    for n in 0..6 {
        let (_, body) = server
            .answer_truthfully(&id, &question, &features, &[1.0, 1.0], &format!("e{n}"))
            .await;
        question = body["question"].clone();
    }
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    // Every second question is a probe when an earlier answer is eligible.
    let probes = session["diagnostics"]["probes"].as_u64().unwrap();
    assert!((2..=3).contains(&probes), "{session}");
    let (_, other) = server
        .post("/v1/sessions", &json!({"model": "plain", "user_id": "fay"}))
        .await;
    assert_eq!(other["diagnostics"]["probes"], 0);
    let (status, body) = server
        .post(
            "/v1/sessions",
            &json!({"model": "plain", "user_id": "gus", "probes": {"every": 2, "min_gap": 0}}),
        )
        .await;
    assert_problem(status, &body, 422, "validation");
    assert_eq!(body["field"], "probes.min_gap");
    server.stop().await;
}

async fn a_per_user_lapse_rate_is_used_and_replayed_across_replicas(backend: Backend) {
    use elicit::model::reliability::LapsePrior;
    use elicit::model::{ElicitationConfig, NoiseModel};
    let db = TestDatabase::new(backend).await;
    let replicas = [TestServer::start(&db).await, TestServer::start(&db).await];
    let prior = json!({"a": 2.0, "b": 8.0});
    let (status, model) = replicas[0]
        .post(
            "/v1/models",
            &json!({"name": "l", "dimensions": ["d0", "d1", "d2"], "noise": {"lapse": 0.1},
                    "lapse_per_user": prior}),
        )
        .await;
    assert_eq!(status, 201, "{model}");
    assert_eq!(model["lapse_per_user"], prior);
    let features = random_features(30, 3, 9);
    let items: Vec<Value> = features
        .iter()
        .enumerate()
        .map(|(i, f)| json!({"id": format!("item-{i}"), "features": f}))
        .collect();
    let (status, _) = replicas[0]
        .put("/v1/models/l/items", &json!({"items": items}))
        .await;
    assert_eq!(status, 200);
    let (_, created) = replicas[1]
        .post(
            "/v1/sessions",
            &json!({"model": "l", "user_id": "u", "max_questions": 12}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    let mut log = Vec::new();
    // Every third answer contradicts the user's λ, so the rate the likelihood uses changes from
    // answer to answer.
    // The replicas take turns, so each answer is applied by a run resumed from the stored log.
    for n in 0..12 {
        let truthful = crate::harness::truthful_choice(&question, &features, &[1.0, -0.5, 0.3]);
        let choice = match (n % 3, truthful) {
            (2, "a") => "b",
            (2, _) => "a",
            _ => truthful,
        };
        let q = question["id"].as_str().unwrap().to_string();
        let (status, _, body) = replicas[n % 2]
            .answer(&id, &q, choice, &format!("l{n}"))
            .await;
        assert_eq!(status, 200, "{body}");
        log.push((
            crate::harness::question_item(&question, 0),
            crate::harness::question_item(&question, 1),
            choice,
        ));
        question = body["question"].clone();
    }
    let (_, session) = replicas[0].get(&format!("/v1/sessions/{id}")).await;
    let lapse = session["diagnostics"]["lapse_rate"].as_f64().unwrap();
    assert!(
        lapse > 0.0 && lapse < 1.0 && (lapse - 0.2).abs() > 1e-3,
        "the answers move the per-user rate off its prior mean 0.2: {lapse}"
    );
    // The stored posterior is the engine's replay with the same per-user rate, answer by answer.
    let config = ElicitationConfig {
        noise: NoiseModel {
            lapse: 0.1,
            ..Default::default()
        },
        adaptive_lapse: Some(LapsePrior { a: 2.0, b: 8.0 }),
        ..Default::default()
    };
    let replayed = crate::harness::replayed_posterior_with(&features, &log, config);
    let fixed = crate::harness::replayed_posterior_with(
        &features,
        &log,
        ElicitationConfig {
            noise: NoiseModel {
                lapse: 0.1,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let distance = crate::harness::posterior_distance(&session["posterior"], &replayed);
    assert!(
        distance < 1e-9,
        "stored posterior differs from the replay by {distance}"
    );
    assert!(
        crate::harness::posterior_distance(&session["posterior"], &fixed) > 1e-6,
        "the per-user rate made no difference"
    );
    for replica in replicas {
        replica.stop().await;
    }
}

/// A model with attention checks asks, every third question, the unasked pair its posterior is
/// surest of: a truthful user answers it as predicted, and it moves the posterior like any answer.
async fn attention_checks_ask_what_the_posterior_is_surest_of(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let (status, problem) = server
        .post(
            "/v1/models",
            &json!({"name": "bad", "dimensions": ["a"], "checks": {"every": 1}}),
        )
        .await;
    assert_problem(status, &problem, 422, "validation");
    assert_eq!(problem["field"], "checks.every");
    let (status, model) = server
        .post(
            "/v1/models",
            &json!({"name": "c", "dimensions": ["a", "b"], "checks": {"every": 3}}),
        )
        .await;
    assert_eq!(status, 201, "{model}");
    assert_eq!(model["checks"], json!({"every": 3}));
    let features = server.upload_items("c", 2, 30, 7).await;
    let lambda = [1.5, -1.0];
    let (_, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "c", "user_id": "eve", "max_questions": 9}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut question = created["question"].clone();
    let mut means = vec![created["posterior"]["mean"].clone()];
    for n in 1..=9 {
        // Questions 3, 6 and 9 are checks: scored 0 bits (they are not asked for information);
        // the others are chosen for it.
        let bits = question["information_bits"].as_f64().unwrap();
        assert_eq!(bits == 0.0, n % 3 == 0, "question {n}: {question}");
        let (_, body) = server
            .answer_truthfully(&id, &question, &features, &lambda, &format!("c{n}"))
            .await;
        means.push(body["posterior"]["mean"].clone());
        question = body["question"].clone();
    }
    for check in [3, 6, 9] {
        assert_ne!(
            means[check],
            means[check - 1],
            "a check is evidence like any answer"
        );
    }
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["diagnostics"]["unreliable"], false, "{session}");
    // A session may set its own checks, validated the same way.
    let (status, problem) = server
        .post(
            "/v1/sessions",
            &json!({"model": "c", "user_id": "eve", "checks": {"every": 0}}),
        )
        .await;
    assert_problem(status, &problem, 422, "validation");
    server.stop().await;
}

crate::on_both_stores!(
    attention_checks_ask_what_the_posterior_is_surest_of,
    a_per_user_lapse_rate_is_used_and_replayed_across_replicas,
    the_guard_bounds_the_divergence_and_fixes_dimensions,
    unreliable_users_are_scored_with_the_population,
    probes_repeat_earlier_questions_without_moving_the_posterior
);
