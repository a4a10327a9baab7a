//! The profile in words: dimensions with labelled ends, the `summary` of sessions and profiles
//! (one statement per dimension whose sign the posterior is sure of, then the rest), and the
//! user's own statements on dimensions, taken as evidence.

use elicit::model::numeric::normal_cdf;
use elicit::model::summary::SURE_OF_SIGN;
use serde_json::{Value, json};

use crate::harness::{Backend, TestDatabase, TestServer, assert_problem};

/// Checks each statement against the posterior it summarises: its certainty is P(sign) =
/// Φ(|μ|/sd), at least the threshold, and the dimensions without one are listed as unknown.
fn check_against_posterior(summary: &Value, posterior: &Value) {
    let statements = summary["statements"].as_array().unwrap();
    for dimension in posterior["dimensions"].as_array().unwrap() {
        let name = dimension["name"].as_str().unwrap();
        let (mean, sd) = (
            dimension["mean"].as_f64().unwrap(),
            dimension["sd"].as_f64().unwrap(),
        );
        let certainty = normal_cdf(mean.abs() / sd);
        match statements.iter().find(|s| s["dimension"] == name) {
            Some(statement) => {
                assert!(certainty >= SURE_OF_SIGN, "{statement}");
                let stated = statement["certainty"].as_f64().unwrap();
                assert!(
                    (stated - certainty).abs() < 1e-9,
                    "{statement} vs {certainty}"
                );
                let end = if mean > 0.0 { "high" } else { "low" };
                assert_eq!(statement["prefers"], end, "{statement}");
            }
            None => {
                assert!(certainty < SURE_OF_SIGN, "{name} is known: {summary}");
                assert!(
                    summary["unknown"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(name))
                );
            }
        }
    }
}

async fn profile_in_words(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let dimensions = ["length", "tone", "jokes"];
    for (ends, field) in [
        (json!([{"low": "short", "high": "long"}]), "ends"),
        (
            json!([{"low": "", "high": "long"}, null, null]),
            "ends[0].low",
        ),
        (
            json!([null, {"low": "a\u{7}", "high": "b"}, null]),
            "ends[1].low",
        ),
    ] {
        let body = json!({"name": "bad", "dimensions": dimensions, "ends": ends});
        let (status, problem) = server.post("/v1/models", &body).await;
        assert_problem(status, &problem, 422, "validation");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
    let ends = json!([{"low": "short answers", "high": "long answers"}, null, null]);
    let (status, model) = server
        .post(
            "/v1/models",
            &json!({"name": "words", "dimensions": dimensions, "ends": ends}),
        )
        .await;
    assert_eq!(status, 201, "{model}");
    assert_eq!(model["ends"], ends);
    let features = server.upload_items("words", 3, 40, 5).await;

    let (_, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "words", "user_id": "w", "max_questions": 15}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        created["summary"],
        json!({
            "statements": [],
            "unknown": dimensions,
            "unknown_sentence": "Not known yet: length, tone, jokes."
        })
    );
    // A user who wants long answers and little of the second dimension, indifferent to jokes.
    let lambda = [3.0, -3.0, 0.0];
    let mut question = created["question"].clone();
    for n in 0..15 {
        let (_, body) = server
            .answer_truthfully(&id, &question, &features, &lambda, &format!("k{n}"))
            .await;
        question = body["question"].clone();
    }
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    let summary = &session["summary"];
    check_against_posterior(summary, &session["posterior"]);
    let sentence = |dimension: &str| {
        summary["statements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["dimension"] == dimension)
            .unwrap_or_else(|| panic!("no statement on {dimension}: {summary}"))["sentence"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let length = sentence("length");
    assert!(
        length.contains("prefers long answers to short answers — "),
        "{length}"
    );
    let tone = sentence("tone");
    assert!(tone.contains("prefers less tone — "), "{tone}");
    assert!(
        ["very sure", "sure", "fairly sure"]
            .iter()
            .any(|words| length.ends_with(&format!("— {words}"))),
        "{length}"
    );

    // The profile carries its own (EP-refined) posterior's summary.
    let (status, _) = server
        .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, profile) = server.get("/v1/users/w/profile?model=words").await;
    assert_eq!(status, 200, "{profile}");
    check_against_posterior(&profile["summary"], &profile["posterior"]);
    server.stop().await;
}

/// Statements: the user's word on one dimension moves the posterior exactly as the equivalent
/// graded answer does (x = β·e_d), is logged and replayed with the answers, shown in the session
/// view, idempotent, leaves the open question open and does not count against `max_questions`;
/// a statement on an unknown or fixed dimension is a 422 naming `dimension`.
async fn statements_correct_the_profile(backend: Backend) {
    use elicit::model::elicitation::Response;
    use elicit::model::summary::End;
    use elicit::model::{
        Choice, ElicitationConfig, NoiseModel, Outcome, Pair, Posterior, Strength,
    };

    use crate::harness::{posterior_distance, question_item, replayed_log};

    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let body = json!({
        "name": "stated",
        "dimensions": ["d0", "d1", "d2"],
        "guard": {"fixed_dimensions": ["d2"]}
    });
    let (status, model) = server.post("/v1/models", &body).await;
    assert_eq!(status, 201, "{model}");
    let features = server.upload_items("stated", 3, 30, 9).await;
    let (_, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "stated", "user_id": "s", "max_questions": 3}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let lambda = [1.0, 2.0, 0.0];
    let mut log = Vec::new();
    let mut question = created["question"].clone();
    let pair = |q: &Value| Pair {
        a: question_item(q, 0),
        b: question_item(q, 1),
    };
    let choice_of = |c: &str| if c == "a" { Choice::A } else { Choice::B };
    for n in 0..2 {
        let (choice, body) = server
            .answer_truthfully(&id, &question, &features, &lambda, &format!("a{n}"))
            .await;
        log.push(Response::pair(pair(&question), choice_of(choice)));
        question = body["question"].clone();
    }
    let (_, before) = server.get(&format!("/v1/sessions/{id}")).await;

    let post = |body: Value, key: &'static str| {
        let server = &server;
        let id = id.clone();
        async move {
            let response = server
                .client
                .post(server.url(&format!("/v1/sessions/{id}/statements")))
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            (status, replayed, response.text().await.unwrap())
        }
    };
    for bad in [
        json!({"dimension": "d9", "prefer": "low"}),
        json!({"dimension": "d2", "prefer": "high"}),
    ] {
        let (status, _, text) = post(bad.clone(), "bad").await;
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_problem(status, &problem, 422, "validation");
        assert!(
            problem["detail"].as_str().unwrap().contains("dimension"),
            "{bad}: {problem}"
        );
    }
    let (status, _, text) = post(json!({"dimension": "d1", "prefer": "middle"}), "bad").await;
    assert!(matches!(status, 400 | 422), "{text}");
    // An Idempotency-Key is visible ASCII without spaces, as the API documents.
    let (status, _, text) = post(json!({"dimension": "d1", "prefer": "low"}), "a key").await;
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_problem(status, &problem, 422, "validation");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{problem}"
    );

    // "I clearly prefer the low end of d1" (against what the answers so far suggest).
    let statement = json!({"dimension": "d1", "prefer": "low", "strength": "clearly"});
    let (status, replayed, text) = post(statement.clone(), "st").await;
    assert_eq!((status, replayed), (200, false), "{text}");
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        reply["question"]["id"], question["id"],
        "the open question stays open"
    );
    assert_eq!(reply["answers"], 3);
    let (status, replayed, again) = post(statement, "st").await;
    assert_eq!((status, replayed, &again), (200, true, &text));

    // Exactly the graded answer "b, clearly" to x = β·e₁ applied to the posterior before it.
    let (_, after) = server.get(&format!("/v1/sessions/{id}")).await;
    let vector = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let rows: Vec<Vec<f64>> = before["posterior"]["cov"]
        .as_array()
        .unwrap()
        .iter()
        .map(vector)
        .collect();
    let mut expected = Posterior::new(
        nalgebra::DVector::from_vec(vector(&before["posterior"]["mean"])),
        nalgebra::DMatrix::from_fn(3, 3, |r, c| rows[r][c]),
    )
    .unwrap();
    let noise = NoiseModel::default();
    let likelihood = noise
        .answer_likelihood(Outcome::B, Some(Strength::Clearly), 1.0)
        .unwrap();
    let x = nalgebra::DVector::from_vec(vec![0.0, noise.beta, 0.0]);
    expected.update(&x, &likelihood, elicit::model::UpdateMethod::Adf);
    let gap = posterior_distance(&after["posterior"], &expected);
    assert!(gap < 1e-9, "the statement is {gap} from the graded answer");
    assert_eq!(
        after["statements"],
        json!([{"dimension": "d1", "prefer": "low", "strength": "clearly"}])
    );
    log.push(Response::Statement {
        dimension: 1,
        prefer: End::Low,
        strength: Some(Strength::Clearly),
    });

    // The open question is answered next; statements do not use up the three questions.
    let (choice, body) = server
        .answer_truthfully(&id, &question, &features, &lambda, "a2")
        .await;
    log.push(Response::pair(pair(&question), choice_of(choice)));
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["answers"], 4);
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    let replayed = replayed_log(&features, &log, ElicitationConfig::default());
    let gap = posterior_distance(&session["posterior"], &replayed);
    assert!(
        gap < 1e-9,
        "stored posterior is {gap} from the replay of the log"
    );
    let (status, finished) = server
        .post(&format!("/v1/sessions/{id}/finish"), &json!({}))
        .await;
    assert_eq!(status, 200, "{finished}");
    server.stop().await;
}

crate::on_both_stores!(profile_in_words, statements_correct_the_profile);
