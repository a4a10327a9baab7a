//! State survives a restart of the server: nothing acknowledged is lost.

use serde_json::json;

use crate::harness::{Backend, TestDatabase, TestServer};

async fn a_restart_mid_session_loses_nothing(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = server.create_model_with_items("m", 3, 30, 3).await;
    let lambda = [1.0, 1.0, -1.0];
    let Onboarded {
        id,
        mut question,
        last,
        choice,
    } = onboard(&server, &features, &lambda, 5).await;
    server.stop().await;

    let server = TestServer::start(&db).await;
    let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(session["answers"], 5);
    assert_eq!(session["version"], last["version"]);
    assert_eq!(session["posterior"]["mean"], last["posterior"]["mean"]);
    assert_eq!(session["question"], last["question"]);
    let (_, current) = server.get(&format!("/v1/sessions/{id}/question")).await;
    assert_eq!(current["question"], last["question"]);

    // A retry of an answer acknowledged before the restart is replayed, not applied again.
    let (status, headers, replay) = server.answer(&id, "5", choice, "k5").await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(replay["answers"], 5);

    for n in 6..=10 {
        let (_, body) = server
            .answer_truthfully(&id, &question, &features, &lambda, &format!("k{n}"))
            .await;
        question = body["question"].clone();
    }
    let (_, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(session["answers"], 10);
    assert_eq!(session["status"], "completed");
    server.stop().await;
}

/// A session of a 10-question budget after `n` truthful answers.
struct Onboarded {
    id: String,
    /// The question now waiting.
    question: serde_json::Value,
    /// The last answer's response.
    last: serde_json::Value,
    /// The last choice given.
    choice: &'static str,
}

async fn onboard(
    server: &TestServer,
    features: &[Vec<f64>],
    lambda: &[f64],
    n: usize,
) -> Onboarded {
    let (_, created) = server
        .post(
            "/v1/sessions",
            &json!({"model": "m", "user_id": "u", "max_questions": 10}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let (mut question, mut last, mut choice) = (created["question"].clone(), created, "a");
    for k in 1..=n {
        let (given, body) = server
            .answer_truthfully(&id, &question, features, lambda, &format!("k{k}"))
            .await;
        choice = given;
        question = body["question"].clone();
        last = body;
    }
    Onboarded {
        id,
        question,
        last,
        choice,
    }
}

/// The answer log is the truth: a damaged cached posterior is rebuilt from it.
async fn a_damaged_posterior_is_rebuilt_from_the_log(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let server = TestServer::start(&db).await;
    let features = server.create_model_with_items("m", 3, 30, 11).await;
    let lambda = [0.5, -1.0, 1.0];
    let Onboarded { id, question, .. } = onboard(&server, &features, &lambda, 4).await;
    let (_, last) = server.get(&format!("/v1/sessions/{id}")).await;
    // Overwrite the cached covariance with a matrix that is not positive definite.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let zero = elicit::store::codec::encode_symmetric(&nalgebra::DMatrix::zeros(3, 3));
    sqlx::query("UPDATE sessions SET cov = $1 WHERE id = $2")
        .bind(zero)
        .bind(&id)
        .execute(&mut conn)
        .await
        .unwrap();

    let (status, session) = server.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{session}");
    let close = |a: &serde_json::Value, b: &serde_json::Value| {
        a.as_array()
            .unwrap()
            .iter()
            .flatten_rows()
            .zip(b.as_array().unwrap().iter().flatten_rows())
            .all(|(x, y)| (x - y).abs() < 1e-9)
    };
    assert!(
        close(&session["posterior"]["cov"], &last["posterior"]["cov"]),
        "{} vs {}",
        session["posterior"]["cov"],
        last["posterior"]["cov"]
    );
    assert!(close(
        &session["posterior"]["mean"],
        &last["posterior"]["mean"]
    ));
    let (_, body) = server
        .answer_truthfully(&id, &question, &features, &lambda, "k5")
        .await;
    assert_eq!(body["answers"], 5);
    server.stop().await;
}

/// Flattens numbers and arrays of numbers.
trait FlattenRows<'a> {
    fn flatten_rows(self) -> Box<dyn Iterator<Item = f64> + 'a>;
}

impl<'a, I: Iterator<Item = &'a serde_json::Value> + 'a> FlattenRows<'a> for I {
    fn flatten_rows(self) -> Box<dyn Iterator<Item = f64> + 'a> {
        Box::new(self.flat_map(|v| match v {
            serde_json::Value::Array(row) => {
                row.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>()
            }
            other => vec![other.as_f64().unwrap()],
        }))
    }
}

crate::on_both_stores!(
    a_restart_mid_session_loses_nothing,
    a_damaged_posterior_is_rebuilt_from_the_log
);
