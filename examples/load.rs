//! HTTP load figures for BENCHMARKS.md: scoring and answering through the real server and store,
//! against a plain axum JSON echo of the same body size measured in the same run.
//!
//! `cargo run --release --example load -- [--database-url URL] [--seconds 10] [--concurrency 16]`
//!
//! Everything runs in this process on loopback (the load generator shares the cores with the
//! server and the database, so the figures are lower bounds). Request loops are bounded in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use clap::Parser;
use elicit::app::{Application, Config};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Store to measure (default: a fresh SQLite file under the temp dir).
    #[arg(long)]
    database_url: Option<String>,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

const KEY: &str = "load-admin-key";
const DIMS: usize = 16;

struct Phase {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 - 1.0) * q) as usize]
    }
}

/// Runs `concurrency` workers for `seconds`; each calls `request(worker, n)` in a loop.
async fn measure<F, Fut>(seconds: u64, concurrency: usize, request: F) -> Phase
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    assert!(request(w, n).await, "a request failed");
                    latencies.push(t.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    Phase {
        requests: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    }
}

fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

fn features(seed: usize) -> Vec<f64> {
    (0..DIMS)
        .map(|d| (((seed * 31 + d * 17) % 97) as f64 / 48.0) - 1.0)
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Without --database-url: a scratch SQLite file, removed at the end.
    let scratch = std::env::temp_dir().join(format!("elicit-load-{}", std::process::id()));
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/elicit.db", scratch.display()));
    let config = Config {
        port: 0,
        database_url: url.clone(),
        admin_key: Some(KEY.into()),
        max_concurrent_requests: 4096,
        ..Config::default()
    };
    let app = Application::build(&config).await?;
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.serve(std::future::pending()));
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let echo_base = format!("http://{}", echo.local_addr()?);
    tokio::spawn(async move {
        let router = axum::Router::new().route(
            "/echo",
            post(|axum::Json(v): axum::Json<Value>| async move { axum::Json(v) }),
        );
        axum::serve(echo, router).await
    });
    let http = client();

    // A model with 1,000 items and one onboarded user.
    let model = format!("load{}", std::process::id());
    let dims: Vec<String> = (0..DIMS).map(|d| format!("d{d}")).collect();
    http.post(format!("{base}/v1/models"))
        .json(&json!({"name": model, "dimensions": dims}))
        .send()
        .await?
        .error_for_status()?;
    let items: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("i{i}"), "features": features(i)}))
        .collect();
    http.put(format!("{base}/v1/models/{model}/items"))
        .json(&json!({"items": items}))
        .send()
        .await?
        .error_for_status()?;

    // Scoring 100 inline candidates, and the echo of the same body.
    let candidates: Vec<Value> = (0..100)
        .map(|i| json!({"id": format!("c{i}"), "features": features(5000 + i)}))
        .collect();
    let score_body =
        Arc::new(json!({"model": model, "user_id": "load-user", "candidates": candidates}));
    let body_bytes = serde_json::to_vec(&*score_body)?.len();
    let (c, b) = (http.clone(), base.clone());
    let body = score_body.clone();
    let scoring = measure(args.seconds, args.concurrency, move |_, _| {
        let (c, b, body) = (c.clone(), b.clone(), body.clone());
        async move {
            c.post(format!("{b}/v1/score"))
                .json(&*body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let (c, b) = (http.clone(), echo_base.clone());
    let body = score_body.clone();
    let echoing = measure(args.seconds, args.concurrency, move |_, _| {
        let (c, b, body) = (c.clone(), b.clone(), body.clone());
        async move {
            c.post(format!("{b}/echo"))
                .json(&*body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;

    // Answering: one session per worker; each answer is a locked transaction with a commit.
    let mut sessions = Vec::new();
    for w in 0..args.concurrency {
        let created: Value = http
            .post(format!("{base}/v1/sessions"))
            .json(&json!({"model": model, "user_id": format!("load-{w}"), "max_questions": 200}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        sessions.push(Arc::new(tokio::sync::Mutex::new((
            created["id"].as_str().unwrap().to_string(),
            created["question"].clone(),
        ))));
    }
    let sessions = Arc::new(sessions);
    let (c, b) = (http.clone(), base.clone());
    let answering = measure(args.seconds, args.concurrency, move |w, n| {
        let (c, b, sessions, model) = (c.clone(), b.clone(), sessions.clone(), model.clone());
        async move {
            let mut state = sessions[w].lock().await;
            if state.1.is_null() {
                let created: Value = c
                    .post(format!("{b}/v1/sessions"))
                    .json(&json!({"model": model, "user_id": format!("load-{w}-{n}"), "max_questions": 200}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                *state = (created["id"].as_str().unwrap().to_string(), created["question"].clone());
            }
            let response = c
                .post(format!("{b}/v1/sessions/{}/answers", state.0))
                .header("Idempotency-Key", format!("{w}-{n}"))
                .json(&json!({"question_id": state.1["id"], "choice": if n % 3 == 0 { "b" } else { "a" }}))
                .send()
                .await;
            let Ok(response) = response else { return false };
            if !response.status().is_success() {
                return false;
            }
            let body: Value = response.json().await.unwrap();
            state.1 = body["question"].clone();
            true
        }
    })
    .await;

    println!("store: {}", elicit::store::sql::redact(&url));
    println!(
        "concurrency {}, {} s per phase, score body {} bytes\n",
        args.concurrency, args.seconds, body_bytes
    );
    println!("| path | requests/s | p50 | p99 | baseline | ratio |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, p: &Phase, baseline: Option<&Phase>| {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} | {} |",
            p.rate(),
            p.percentile(0.5).as_secs_f64() * 1e3,
            p.percentile(0.99).as_secs_f64() * 1e3,
            baseline.map_or(String::new(), |b| format!("echo {:.0}/s", b.rate())),
            baseline.map_or(String::new(), |b| format!("{:.2}", p.rate() / b.rate())),
        )
    };
    row(
        "POST /v1/score (100 candidates, J = 16)",
        &scoring,
        Some(&echoing),
    );
    row("POST /echo (same body)", &echoing, None);
    row(
        "POST /v1/sessions/{id}/answers (1,000-item bank, J = 16)",
        &answering,
        None,
    );
    Ok(())
}
