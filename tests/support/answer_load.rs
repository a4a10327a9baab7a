//! Answer load against `elicit` processes while something fails, and the check of the database
//! against what the clients saw afterwards (tests/faults.rs, tests/failover.rs).
#![allow(dead_code)] // each test crate that includes this uses part of it

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use elicit::model::Pair;
use elicit::model::elicitation::Response;
use elicit::model::{Bank, Elicitation, ElicitationConfig, Posterior, StoppingRule};
use elicit::store::sql::PoolSettings;
use elicit::store::{LoggedAnswer, SessionStore, SqlStore};
use serde_json::{Value, json};
use tokio::sync::Mutex;

pub const ADMIN_KEY: &str = "faults-admin-key";
const DIMS: usize = 4;
const ITEMS: usize = 30;
const QUESTIONS: usize = 12;

/// The `elicit` binary serving on a fixed port.
pub struct Replica {
    child: Child,
    pub port: u16,
    database_url: String,
}

impl Replica {
    pub fn start(database_url: &str, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_elicit"))
            .args(["serve", "--port", &port.to_string()])
            .env("ELICIT_DATABASE_URL", database_url)
            .env("ELICIT_ADMIN_KEY", ADMIN_KEY)
            .env("ELICIT_MAX_CONNECTIONS", "8")
            .env("ELICIT_ACQUIRE_TIMEOUT_MS", "1000")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            database_url: database_url.to_string(),
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (no drain, no shutdown hook), then a new process on the same port after `pause`.
    pub async fn kill_for(&mut self, pause: Duration) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        tokio::time::sleep(pause).await;
        *self = Self::start(&self.database_url, self.port);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    elicit::client::with_key(ADMIN_KEY, Some(Duration::from_secs(3))).unwrap()
}

/// Waits until `base` answers `/readyz` with 200.
pub async fn ready(http: &reqwest::Client, base: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{base} not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deterministic features of item `i`.
pub fn features(i: usize) -> Vec<f64> {
    (0..DIMS)
        .map(|d| ((i * 7 + d * 13) % 11) as f64 / 5.0 - 1.0 + 0.1 * d as f64)
        .collect()
}

pub async fn create_model(http: &reqwest::Client, base: &str) {
    let r = http
        .post(format!("{base}/v1/models"))
        .json(&json!({"name": "m", "dimensions": (0..DIMS).map(|d| format!("d{d}")).collect::<Vec<_>>()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let items: Vec<Value> = (0..ITEMS)
        .map(|i| json!({"id": format!("i{i}"), "features": features(i)}))
        .collect();
    let r = http
        .put(format!("{base}/v1/models/m/items"))
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// What the clients saw.
#[derive(Default)]
pub struct Tally {
    /// (session id, idempotency key) of every answer acknowledged with 200.
    pub acknowledged: Mutex<Vec<(String, String)>>,
    pub server_errors: AtomicUsize,
    pub transport_errors: AtomicUsize,
    /// When each acknowledgement arrived, and when each request failed (5xx or transport
    /// error), for the unavailability a fault caused.
    acknowledged_at: Mutex<Vec<Instant>>,
    failed_at: Mutex<Vec<Instant>>,
}

impl Tally {
    /// From the first failed request to the first acknowledgement after the last failed one:
    /// the whole window in which clients saw the service fail: zero if nothing failed, `None`
    /// if nothing was acknowledged after the last failure.
    pub fn unavailability(&self) -> Option<Duration> {
        let failed = self.failed_at.try_lock().expect("the load is over");
        let (Some(first), Some(last)) = (failed.iter().min(), failed.iter().max()) else {
            return Some(Duration::ZERO);
        };
        let acknowledged = self.acknowledged_at.try_lock().expect("the load is over");
        let recovered = acknowledged.iter().filter(|t| *t > last).min()?;
        Some(*recovered - *first)
    }

    async fn failed(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.failed_at.lock().await.push(Instant::now());
    }
}

/// One client: sessions answered until the deadline, each request sent to the replicas in turn
/// and retried (same key) until acknowledged; with `race`, some answers go to two replicas at
/// once, and both must return the same bytes.
pub async fn client_loop(
    replicas: Arc<Vec<String>>,
    tally: Arc<Tally>,
    client_id: usize,
    deadline: Instant,
    race: bool,
) {
    let http = client();
    let mut turn = client_id;
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let user = format!("c{client_id}-u{n}");
        let created = loop {
            turn += 1;
            let base = &replicas[turn % replicas.len()];
            let sent = http
                .post(format!("{base}/v1/sessions"))
                .json(&json!({"model": "m", "user_id": user, "max_questions": QUESTIONS}))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 201 => break r.json::<Value>().await.unwrap(),
                Ok(r) if r.status().is_server_error() => tally.failed(&tally.server_errors).await,
                Ok(r) => panic!("session refused: {}", r.status()),
                Err(_) => tally.failed(&tally.transport_errors).await,
            }
            if Instant::now() > deadline + Duration::from_secs(20) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let id = created["id"].as_str().unwrap().to_string();
        let mut question = created["question"].clone();
        while !question.is_null() && Instant::now() < deadline {
            let choice = if (n + question["id"].as_str().unwrap().len()) % 3 == 0 {
                "b"
            } else {
                "a"
            };
            let key = format!("{id}/{}", question["id"].as_str().unwrap());
            let body = json!({"question_id": question["id"], "choice": choice});
            let url = |base: &str| format!("{base}/v1/sessions/{id}/answers");
            let send = |base: String| {
                let (http, body, key, url) = (http.clone(), body.clone(), key.clone(), url(&base));
                async move {
                    http.post(url)
                        .header("Idempotency-Key", key)
                        .json(&body)
                        .send()
                        .await
                }
            };
            if race && n % 2 == 0 && replicas.len() > 1 {
                // The same answer to both replicas at once: both must succeed with the same body.
                let (x, y) = tokio::join!(send(replicas[0].clone()), send(replicas[1].clone()));
                if let (Ok(x), Ok(y)) = (x, y)
                    && x.status() == 200
                    && y.status() == 200
                {
                    let (x, y) = (x.bytes().await.unwrap(), y.bytes().await.unwrap());
                    assert_eq!(
                        x, y,
                        "two replicas returned different bodies for one answer"
                    );
                }
            }
            let acked = loop {
                turn += 1;
                match send(replicas[turn % replicas.len()].clone()).await {
                    Ok(r) if r.status() == 200 => break Some(r.json::<Value>().await.unwrap()),
                    Ok(r) if r.status().is_server_error() => {
                        tally.failed(&tally.server_errors).await
                    }
                    Ok(r) => {
                        let status = r.status();
                        panic!("answer refused: {status} {}", r.text().await.unwrap());
                    }
                    Err(_) => tally.failed(&tally.transport_errors).await,
                }
                if Instant::now() > deadline + Duration::from_secs(20) {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let Some(body) = acked else { return };
            tally.acknowledged.lock().await.push((id.clone(), key));
            tally.acknowledged_at.lock().await.push(Instant::now());
            question = body["question"].clone();
        }
    }
}

/// Checks the database against what the clients saw; returns (acknowledged, lost, doubled).
pub async fn verify(database_url: &str, tally: &Tally) -> (usize, usize, usize) {
    let store = SqlStore::connect(database_url, PoolSettings::default())
        .await
        .unwrap();
    let acknowledged = tally.acknowledged.lock().await.clone();
    let mut sessions: Vec<String> = acknowledged.iter().map(|(s, _)| s.clone()).collect();
    sessions.sort();
    sessions.dedup();
    let matrix = nalgebra::DMatrix::from_fn(DIMS, ITEMS, |d, i| features(i)[d]);
    let bank = Bank::ungrouped(matrix).unwrap();
    let (mut lost, mut doubled) = (0, 0);
    for id in &sessions {
        let session = store.get_session(id).await.unwrap().expect("session kept");
        let log = store.session_answers(id).await.unwrap();
        assert_eq!(
            log.len() as i64,
            session.answers,
            "session {id}: log and count differ"
        );
        for (k, row) in log.iter().enumerate() {
            assert_eq!(row.seq, k as i64 + 1, "session {id}: the log has a gap");
        }
        for (_, key) in acknowledged.iter().filter(|(s, _)| s == id) {
            match log
                .iter()
                .filter(|r| r.idempotency_key.as_deref() == Some(key))
                .count()
            {
                0 => lost += 1,
                1 => {}
                _ => doubled += 1,
            }
        }
        let answers: Vec<Response> = log
            .iter()
            .map(|r| {
                let index = |id: &str| id.trim_start_matches('i').parse::<usize>().unwrap();
                let LoggedAnswer::Pair { choice, strength } = r.answer else {
                    panic!("the load answers pairs only");
                };
                Response::Pair {
                    pair: Pair {
                        a: index(&r.item_a),
                        b: index(&r.item_b),
                    },
                    choice,
                    strength,
                }
            })
            .collect();
        let config = ElicitationConfig {
            stopping: StoppingRule {
                max_questions: usize::MAX,
                ..Default::default()
            },
            ..Default::default()
        };
        let replayed = Elicitation::replay(
            &bank,
            Posterior::isotropic(DIMS, 1.0).unwrap(),
            config,
            None,
            &answers,
        )
        .unwrap();
        let gap = (&session.mean - replayed.posterior().mean())
            .amax()
            .max((&session.cov - replayed.posterior().cov()).amax());
        assert!(
            gap < 1e-9,
            "session {id}: stored posterior is {gap} from the replay of its log"
        );
    }
    store.close().await;
    (acknowledged.len(), lost, doubled)
}

/// Prints the counts and appends them to `target/tmp/{file}` (which `.ci/run` shows, since the
/// test harness captures a passing test's output); fails on a lost or doubled answer.
pub fn report(
    file: &str,
    name: &str,
    tally: &Tally,
    (acknowledged, lost, doubled): (usize, usize, usize),
) {
    let unavailable = match tally.unavailability() {
        Some(window) => format!("{:.1} s", window.as_secs_f64()),
        None => "not recovered".to_string(),
    };
    let line = format!(
        "{name}: acknowledged {acknowledged}, lost {lost}, doubled {doubled}, 5xx {}, \
         transport errors {}, unavailable {unavailable}",
        tally.server_errors.load(Ordering::Relaxed),
        tally.transport_errors.load(Ordering::Relaxed)
    );
    println!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    assert!(
        acknowledged > 50,
        "{name}: too little load to mean anything"
    );
    assert_eq!((lost, doubled), (0, 0), "{name}");
}

/// Runs `clients` client loops against `replicas` for `seconds` while `fault` runs beside them.
pub async fn under_load<F: std::future::Future<Output = ()>>(
    replicas: Vec<String>,
    clients: usize,
    seconds: u64,
    race: bool,
    fault: F,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let replicas = Arc::new(replicas);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(client_loop(
                replicas.clone(),
                tally.clone(),
                c,
                deadline,
                race,
            ))
        })
        .collect();
    fault.await;
    for task in tasks {
        task.await.unwrap();
    }
    tally
}

/// A fault two seconds into the load.
pub async fn two_seconds_in(fault: impl std::future::Future<Output = ()>) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    fault.await;
}
