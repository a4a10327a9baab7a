//! The profile in words: dimensions with labelled ends, and the `summary` of sessions and
//! profiles (one statement per dimension whose sign the posterior is sure of, then the rest).

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

crate::on_both_stores!(profile_in_words);
