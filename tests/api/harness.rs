//! Spawning servers and talking to them.

use std::net::SocketAddr;

use elicit::app::{Application, Config};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::oneshot;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares one `#[tokio::test]` per backend for an `async fn(Backend)` scenario.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::harness::Backend::Sqlite).await }
            )*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::harness::Backend::Postgres).await }
            )*
        }
    };
}

/// A database for one test, removed on drop: SQLite files live in a temporary directory,
/// PostgreSQL databases are dropped.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile_dir::TempDir>,
    /// (maintenance URL, database name) of a PostgreSQL test database.
    postgres: Option<(String, String)>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime: use a plain thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

mod tempfile_dir {
    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        let name = format!("elicit_test_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                Self {
                    url: format!("sqlite://{}/elicit.db", dir.display()),
                    _dir: Some(tempfile_dir::TempDir(dir)),
                    postgres: None,
                }
            }
            Backend::Postgres => {
                let admin = std::env::var("ELICIT_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL is required for these tests ({admin}): {e}")
                    });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
                Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    postgres: Some((admin.clone(), name)),
                }
            }
        }
    }
}

/// The bootstrap admin key of test servers.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// The configuration of a test server on `database_url`: any free port, a known admin key.
pub fn test_config(database_url: &str) -> Config {
    Config {
        port: 0,
        database_url: database_url.to_string(),
        admin_key: Some(ADMIN_KEY.to_string()),
        // Only the demo's own tests load the demo model.
        demo: false,
        ..Config::default()
    }
}

/// An HTTP client that sends `Authorization: Bearer <key>` on every request.
pub fn client_with_key(key: &str) -> reqwest::Client {
    elicit::client::with_key(key, None).unwrap()
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(db: &TestDatabase) -> Self {
        Self::start_with(test_config(&db.url)).await
    }

    pub async fn start_with(config: Config) -> Self {
        let app = Application::build(&config)
            .await
            .expect("the server starts");
        let addr: SocketAddr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.serve(async {
                let _ = stopped.await;
            })
            .await
            .expect("the server runs");
        });
        Self {
            base: format!("http://{addr}"),
            client: client_with_key(ADMIN_KEY),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown; waits until the server has closed its pool.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The `/metrics` page, fetched without a key on a connection of its own.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        into_parts(
            self.client
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        into_parts(
            self.client
                .put(self.url(path))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        into_parts(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        into_parts(self.client.delete(self.url(path)).send().await.unwrap()).await
    }

    /// Posts an answer with an idempotency key; returns status, headers and body.
    pub async fn answer(
        &self,
        session: &str,
        question: &str,
        choice: &str,
        key: &str,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .client
            .post(self.url(&format!("/v1/sessions/{session}/answers")))
            .header("Idempotency-Key", key)
            .json(&json!({"question_id": question, "choice": choice}))
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        let (status, body) = into_parts(response).await;
        (status, headers, body)
    }

    /// Answers the current question as a noiseless user with coefficients `lambda` would, with
    /// idempotency key `key`; returns the choice and the response body.
    pub async fn answer_truthfully(
        &self,
        session: &str,
        question: &Value,
        features: &[Vec<f64>],
        lambda: &[f64],
        key: &str,
    ) -> (&'static str, Value) {
        let choice = truthful_choice(question, features, lambda);
        let (status, _, body) = self
            .answer(session, question["id"].as_str().unwrap(), choice, key)
            .await;
        assert_eq!(status, 200, "{body}");
        (choice, body)
    }

    /// Uploads `items` random items (ids `item-<i>`, features from `seed`) into an existing
    /// model; returns their features.
    pub async fn upload_items(
        &self,
        model: &str,
        dims: usize,
        items: usize,
        seed: u64,
    ) -> Vec<Vec<f64>> {
        let features = random_features(items, dims, seed);
        let items_json: Vec<Value> = features
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"id": format!("item-{i}"), "features": f}))
            .collect();
        let (status, body) = self
            .put(
                &format!("/v1/models/{model}/items"),
                &json!({"items": items_json}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        features
    }

    /// Creates a model with `dims` dimensions and uploads `items` random items with a fixed seed.
    pub async fn create_model_with_items(
        &self,
        name: &str,
        dims: usize,
        items: usize,
        seed: u64,
    ) -> Vec<Vec<f64>> {
        let dimensions: Vec<String> = (0..dims).map(|d| format!("d{d}")).collect();
        let (status, body) = self
            .post(
                "/v1/models",
                &json!({"name": name, "dimensions": dimensions}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let features = random_features(items, dims, seed);
        let items_json: Vec<Value> = features
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"id": format!("item-{i}"), "features": f, "payload": {"text": format!("option {i}")}}))
            .collect();
        let (status, body) = self
            .put(
                &format!("/v1/models/{name}/items"),
                &json!({"items": items_json}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        features
    }
}

async fn into_parts(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Deterministic N(0, 1) features (Box–Muller on a xorshift stream).
pub fn random_features(items: usize, dims: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..items)
        .map(|_| {
            (0..dims)
                .map(|_| {
                    (-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos()
                })
                .collect()
        })
        .collect()
}

/// The answer a noiseless user with coefficients `lambda` gives to the session's current question.
pub fn truthful_choice(question: &Value, features: &[Vec<f64>], lambda: &[f64]) -> &'static str {
    let index = |k: usize| question_item(question, k);
    let reward = |i: usize| {
        features[i]
            .iter()
            .zip(lambda)
            .map(|(f, l)| f * l)
            .sum::<f64>()
    };
    if reward(index(0)) >= reward(index(1)) {
        "a"
    } else {
        "b"
    }
}

/// Asserts an RFC 9457 body with the given status and problem type suffix.
pub fn assert_problem(status: u16, body: &Value, expected_status: u16, kind: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["status"], expected_status, "{body}");
    let t = body["type"].as_str().unwrap_or_default();
    assert!(
        t.ends_with(&format!("/{kind}")),
        "type {t} is not {kind}: {body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

/// The bank index of the `k`-th item of a question (items are named `item-<index>`).
pub fn question_item(question: &Value, k: usize) -> usize {
    question["items"][k]["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("item-")
        .parse()
        .unwrap()
}

/// The posterior the engine reaches from a default model's prior (isotropic, unit variance;
/// default noise and update method) by replaying `(a, b, choice)` answers in order: what every
/// stored posterior must equal.
pub fn replayed_posterior(
    features: &[Vec<f64>],
    answers: &[(usize, usize, &str)],
) -> elicit::model::Posterior {
    replayed_posterior_with(
        features,
        answers,
        elicit::model::ElicitationConfig::default(),
    )
}

/// [`replayed_posterior`] under another configuration (its stopping rule is lifted).
pub fn replayed_posterior_with(
    features: &[Vec<f64>],
    answers: &[(usize, usize, &str)],
    config: elicit::model::ElicitationConfig,
) -> elicit::model::Posterior {
    use elicit::model::elicitation::Response;
    use elicit::model::{Choice, Pair};
    let log: Vec<Response> = answers
        .iter()
        .map(|&(a, b, choice)| {
            let choice: Choice = serde_json::from_value(json!(choice)).unwrap();
            Response::pair(Pair { a, b }, choice)
        })
        .collect();
    replayed_log(features, &log, config)
}

/// The posterior the engine reaches from an isotropic unit prior by replaying answers of any
/// kind in order, under `config` with its stopping rule lifted.
pub fn replayed_log(
    features: &[Vec<f64>],
    log: &[elicit::model::elicitation::Response],
    config: elicit::model::ElicitationConfig,
) -> elicit::model::Posterior {
    use elicit::model::{Bank, Elicitation, ElicitationConfig, Posterior};
    let dims = features[0].len();
    let matrix = nalgebra::DMatrix::from_fn(dims, features.len(), |d, i| features[i][d]);
    let bank = Bank::ungrouped(matrix).unwrap();
    let config = ElicitationConfig {
        stopping: elicit::model::StoppingRule {
            max_questions: usize::MAX,
            ..Default::default()
        },
        ..config
    };
    let prior = Posterior::isotropic(dims, 1.0).unwrap();
    Elicitation::replay(&bank, prior, config, None, log)
        .unwrap()
        .posterior()
        .clone()
}

pub fn posterior_distance(view: &Value, posterior: &elicit::model::Posterior) -> f64 {
    let mean = view["mean"].as_array().unwrap();
    let cov = view["cov"].as_array().unwrap();
    let mut worst: f64 = 0.0;
    for (i, m) in mean.iter().enumerate() {
        worst = worst.max((m.as_f64().unwrap() - posterior.mean()[i]).abs());
        for (j, c) in cov[i].as_array().unwrap().iter().enumerate() {
            worst = worst.max((c.as_f64().unwrap() - posterior.cov()[(i, j)]).abs());
        }
    }
    worst
}
