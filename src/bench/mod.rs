//! `elicit bench`: a load generator against a running server, in the spirit of pgbench and
//! redis-benchmark.
//!
//! It creates its own model (random N(0, 1) features from `--seed`) and users, then runs two timed
//! phases with `--clients` concurrent clients:
//! 1. onboarding: create a session, answer until the session stops asking (as a simulated user
//!    with random coefficients answering through the model's logistic noise), finish; repeat;
//! 2. scoring: `POST /v1/score` with `--candidates` inline candidates for users onboarded in phase 1.
//!
//! Every answer carries an `Idempotency-Key`; a request that fails in transport is retried with
//! the same key (up to [`RETRIES`] times) and counted. Latency is measured per request, from
//! sending to the last byte of the body. At the end it erases the model, and with it every session,
//! answer and profile it created. Request loops are bounded by `--seconds`; it stops by itself.

mod flood;
mod onboarding;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use serde_json::{Value, json};

use flood::*;
use onboarding::*;

/// Transport failures retried with the same idempotency key before a client gives up.
pub const RETRIES: usize = 5;

/// What to run: where, with which key, and the shape of the load.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub target: String,
    pub api_key: String,
    pub load: Load,
}

/// The shape of the load (the `elicit bench` flags besides the target and key; echoed in the
/// report).
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct Load {
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds of each phase (onboarding, then scoring).
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    /// Items in the bench model's bank.
    #[arg(long, default_value_t = 40)]
    pub bank: usize,
    /// Dimensions J of the bench model.
    #[arg(long, default_value_t = 16)]
    pub dims: usize,
    /// Questions per session (the session's budget).
    #[arg(long, default_value_t = 10)]
    pub questions: usize,
    /// Open sessions in all (default: one per client). Each client keeps its share open and
    /// answers one question of each in turn, so the server sees this many live sessions, as in
    /// an onboarding wave; they are opened before the clock starts, and a session that stops
    /// asking is finished and replaced by a new one.
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Candidates per scoring request.
    #[arg(long, default_value_t = 100)]
    pub candidates: usize,
    /// Aim at this many answers per second in total (default: as fast as the server goes).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Beside the clients, flood with this many requests a second from one extra key limited to
    /// a tenth of that (a runaway gateway at 10× its limit), through both phases.
    #[arg(long)]
    pub flood_per_s: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Latency summary of one kind of request.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        Self {
            count: samples.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// The median latency of answers at positions `from..=to` of their sessions.
#[derive(Debug, Clone, Serialize)]
pub struct PositionLatency {
    pub from: usize,
    pub to: usize,
    pub count: usize,
    pub p50_ms: f64,
}

/// What `elicit bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub target: String,
    #[serde(flatten)]
    pub load: Load,
    /// Creating the model and uploading its items (100,000 a request).
    pub upload_seconds: f64,
    /// The first session after the upload, which loads the bank into the server (untimed
    /// otherwise).
    pub first_session_ms: f64,
    /// The server's own estimate of the loaded bank's memory (`elicit_bank_bytes` on its
    /// `/metrics` after the first session), MiB.
    pub bank_mib: f64,
    pub answers_per_s: f64,
    pub answer_p50_ms: f64,
    pub answer_p95_ms: f64,
    pub answer_p99_ms: f64,
    pub scores_per_s: f64,
    pub score_p50_ms: f64,
    pub score_p95_ms: f64,
    pub score_p99_ms: f64,
    pub answers: Latency,
    pub scores: Latency,
    /// Session creation (`POST /v1/sessions`, its first question included).
    pub create_p50_ms: f64,
    pub create_p99_ms: f64,
    pub creates: Latency,
    pub sessions_created: usize,
    pub sessions_finished: usize,
    /// Median answer latency by position in the session, in blocks of 20 answers.
    pub answer_p50_ms_by_position: Vec<PositionLatency>,
    /// Requests retried after a transport error (same idempotency key).
    pub retries: usize,
    /// Responses with a 5xx status.
    pub server_errors: usize,
    /// The flooding key's requests: sent, refused with 429, answered otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<FloodReport>,
}

/// What the flooding key saw (`--flood-per-s`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct FloodReport {
    pub rate_per_s: f64,
    pub key_limit_per_s: f64,
    pub sent: usize,
    pub limited: usize,
    pub accepted: usize,
}

/// An HTTP client of the target with the bench's key.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

/// A response: status and body.
struct Reply {
    status: u16,
    body: Value,
}

impl Api {
    fn new(target: &str, key: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: target.trim_end_matches('/').to_string(),
            http: crate::client::with_key(key, Some(Duration::from_secs(30)))?,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> reqwest::Result<Reply> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok(Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// The server's `elicit_bank_bytes` gauge for `model`, from its `/metrics`.
    async fn bank_bytes(&self, model: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let series = format!("elicit_bank_bytes{{model=\"{model}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Sends until a response arrives (transport errors retried, same key), counting retries.
    async fn send_retrying(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
        retries: &mut usize,
    ) -> anyhow::Result<Reply> {
        let mut attempt = 0;
        loop {
            match self.send(method.clone(), path, body, idempotency_key).await {
                Ok(reply) => return Ok(reply),
                Err(e) if attempt < RETRIES => {
                    attempt += 1;
                    *retries += 1;
                    tracing::debug!(error = %e, path, "retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(e) => return Err(e).context(format!("{path} failed {attempt} times")),
            }
        }
    }
}

/// What one client measured.
#[derive(Default)]
struct ClientLog {
    answers: Vec<(usize, Duration)>,
    creates: Vec<Duration>,
    /// How long the client's timed loop ran (after opening its sessions).
    timed: Duration,
    scores: Vec<Duration>,
    users: Vec<String>,
    sessions_created: usize,
    sessions_finished: usize,
    retries: usize,
    server_errors: usize,
}

/// The shared set-up: the model's name and its items' features.
struct Setup {
    model: String,
    features: Vec<Vec<f64>>,
}

/// Runs the benchmark and erases what it created (also when a phase fails).
pub async fn run(options: &BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(options.load.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(options.load.bank >= 2, "--bank must be at least 2");
    anyhow::ensure!(
        (1..=64).contains(&options.load.dims),
        "--dims must be between 1 and 64"
    );
    anyhow::ensure!(options.load.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(
        options
            .load
            .sessions
            .is_none_or(|n| n >= options.load.clients),
        "--sessions must be at least --clients"
    );
    let api = Api::new(&options.target, &options.api_key)?;
    let started = Instant::now();
    let setup = create_model(&api, options).await;
    let upload_seconds = started.elapsed().as_secs_f64();
    let setup = Arc::new(setup?);
    let result = measured(&api, &setup, options, upload_seconds).await;
    let erased = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/models/{}", setup.model),
            None,
            None,
        )
        .await;
    match erased {
        Ok(reply) if reply.status == 200 => {}
        Ok(reply) => eprintln!(
            "could not erase model {}: {} {}",
            setup.model, reply.status, reply.body
        ),
        Err(e) => eprintln!("could not erase model {}: {e}", setup.model),
    }
    result
}

/// Warms the server's bank up, then runs the phases (with the flood beside them when asked).
async fn measured(
    api: &Api,
    setup: &Arc<Setup>,
    options: &BenchOptions,
    upload_seconds: f64,
) -> anyhow::Result<BenchReport> {
    let first_session_ms = warm_up(api, setup).await?;
    let bank_mib = api.bank_bytes(&setup.model).await.unwrap_or(0.0) / (1024.0 * 1024.0);
    eprintln!("elicit bench: onboarding phase starting");
    let flood = match options.load.flood_per_s {
        Some(rate) => Some(Flood::start(api, options, setup, rate).await?),
        None => None,
    };
    let mut result = phases(api, setup, options).await;
    if let Some(flood) = flood {
        let report = flood.stop(api).await;
        if let Ok(r) = &mut result {
            r.flood = Some(report);
        }
    }
    if let Ok(r) = &mut result {
        r.upload_seconds = upload_seconds;
        r.first_session_ms = first_session_ms;
        r.bank_mib = bank_mib;
    }
    result
}

/// Starts one session on the new model and returns how long it took: the server loads the bank
/// (and builds its coreset) on the first session after items change, which the timed phases
/// leave out.
async fn warm_up(api: &Api, setup: &Setup) -> anyhow::Result<f64> {
    let started = Instant::now();
    let reply = api
        .send(
            reqwest::Method::POST,
            "/v1/sessions",
            Some(&json!({"model": setup.model, "user_id": format!("{}-warm-up", setup.model)})),
            None,
        )
        .await?;
    if reply.status != 201 {
        bail!("the warm-up session: {} {}", reply.status, reply.body);
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

async fn create_model(api: &Api, options: &BenchOptions) -> anyhow::Result<Setup> {
    let model = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let dimensions: Vec<String> = (0..options.load.dims).map(|d| format!("d{d}")).collect();
    let reply = api
        .send(
            reqwest::Method::POST,
            "/v1/models",
            Some(&json!({"name": model, "dimensions": dimensions})),
            None,
        )
        .await?;
    if reply.status != 201 {
        bail!("creating the model: {} {}", reply.status, reply.body);
    }
    let mut rng = StdRng::seed_from_u64(options.load.seed);
    let features: Vec<Vec<f64>> = (0..options.load.bank)
        .map(|_| {
            (0..options.load.dims)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect()
        })
        .collect();
    // At most 100,000 items a call, the service's limit.
    for (chunk, block) in features.chunks(100_000).enumerate() {
        let items: Vec<Value> = block
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"id": format!("i{}", chunk * 100_000 + i), "features": f}))
            .collect();
        let reply = api
            .send(
                reqwest::Method::PUT,
                &format!("/v1/models/{model}/items"),
                Some(&json!({"items": items})),
                None,
            )
            .await?;
        if reply.status != 200 {
            bail!("uploading the items: {} {}", reply.status, reply.body);
        }
    }
    Ok(Setup { model, features })
}

async fn phases(
    api: &Api,
    setup: &Arc<Setup>,
    options: &BenchOptions,
) -> anyhow::Result<BenchReport> {
    let duration = Duration::from_secs_f64(options.load.seconds);
    let onboarding = run_clients(options.load.clients, |client| {
        let (api, setup, options) = (api.clone(), setup.clone(), options.clone());
        async move { onboard_loop(&api, &setup, &options, client, duration).await }
    })
    .await?;
    let mut logs = onboarding.0;
    // The timed loops, not the opening of the sessions before them.
    let onboarding_seconds = logs
        .iter()
        .map(|l| l.timed)
        .max()
        .unwrap_or(onboarding.1)
        .as_secs_f64();
    let users: Arc<Vec<String>> = Arc::new(logs.iter().flat_map(|l| l.users.clone()).collect());
    anyhow::ensure!(
        !users.is_empty(),
        "no session was created in {} s",
        options.load.seconds
    );
    let scoring = run_clients(options.load.clients, |client| {
        let (api, setup, options, users) =
            (api.clone(), setup.clone(), options.clone(), users.clone());
        async move { score_loop(&api, &setup, &options, &users, client, duration).await }
    })
    .await?;
    let scoring_seconds = scoring.1.as_secs_f64();
    logs.extend(scoring.0);

    let answer_samples: Vec<(usize, Duration)> =
        logs.iter().flat_map(|l| l.answers.clone()).collect();
    let answers = Latency::of(answer_samples.iter().map(|a| a.1).collect());
    let scores = Latency::of(logs.iter().flat_map(|l| l.scores.clone()).collect());
    let creates = Latency::of(logs.iter().flat_map(|l| l.creates.clone()).collect());
    Ok(BenchReport {
        target: options.target.clone(),
        load: options.load.clone(),
        answers_per_s: answers.count as f64 / onboarding_seconds,
        answer_p50_ms: answers.p50_ms,
        answer_p95_ms: answers.p95_ms,
        answer_p99_ms: answers.p99_ms,
        scores_per_s: scores.count as f64 / scoring_seconds,
        score_p50_ms: scores.p50_ms,
        score_p95_ms: scores.p95_ms,
        score_p99_ms: scores.p99_ms,
        answer_p50_ms_by_position: by_position(&answer_samples, options.load.questions),
        answers,
        scores,
        upload_seconds: 0.0,
        first_session_ms: 0.0,
        bank_mib: 0.0,
        create_p50_ms: creates.p50_ms,
        create_p99_ms: creates.p99_ms,
        creates,
        sessions_created: logs.iter().map(|l| l.sessions_created).sum(),
        sessions_finished: logs.iter().map(|l| l.sessions_finished).sum(),
        retries: logs.iter().map(|l| l.retries).sum(),
        server_errors: logs.iter().map(|l| l.server_errors).sum(),
        flood: None,
    })
}

/// Runs `clients` tasks to completion; returns their logs and the wall time.
async fn run_clients<F, Fut>(
    clients: usize,
    client: F,
) -> anyhow::Result<(Vec<ClientLog>, Duration)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ClientLog>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients).map(|c| tokio::spawn(client(c))).collect();
    let mut logs = Vec::with_capacity(clients);
    for task in tasks {
        logs.push(task.await??);
    }
    Ok((logs, started.elapsed()))
}

/// Median latency per block of 20 answer positions.
fn by_position(samples: &[(usize, Duration)], questions: usize) -> Vec<PositionLatency> {
    (1..=questions)
        .step_by(20)
        .filter_map(|from| {
            let to = (from + 19).min(questions);
            let latency = Latency::of(
                samples
                    .iter()
                    .filter(|(p, _)| (from..=to).contains(p))
                    .map(|s| s.1)
                    .collect(),
            );
            (latency.count > 0).then_some(PositionLatency {
                from,
                to,
                count: latency.count,
                p50_ms: latency.p50_ms,
            })
        })
        .collect()
}

/// Sleeps so that a client's answers follow its share of `--rate`.
struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(rate: Option<f64>, clients: usize) -> Self {
        Self {
            interval: rate
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(clients as f64 / r)),
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        if let Some(interval) = self.interval {
            tokio::time::sleep_until(self.next.into()).await;
            self.next = self.next.max(Instant::now() - interval) + interval;
        }
    }
}

/// One client's scoring loop until the deadline.
async fn score_loop(
    api: &Api,
    setup: &Setup,
    options: &BenchOptions,
    users: &[String],
    client: usize,
    duration: Duration,
) -> anyhow::Result<ClientLog> {
    let deadline = Instant::now() + duration;
    let mut rng = StdRng::seed_from_u64(options.load.seed ^ 0x5c0e ^ client as u64);
    let mut log = ClientLog::default();
    while Instant::now() < deadline {
        let user = &users[rng.random_range(0..users.len())];
        let candidates: Vec<Value> = (0..options.load.candidates)
            .map(|c| {
                let i = rng.random_range(0..setup.features.len());
                json!({"id": format!("c{c}"), "features": setup.features[i]})
            })
            .collect();
        let body = json!({"model": setup.model, "user_id": user, "candidates": candidates});
        let started = Instant::now();
        let reply = api
            .send_retrying(
                reqwest::Method::POST,
                "/v1/score",
                Some(&body),
                None,
                &mut log.retries,
            )
            .await?;
        match reply.status {
            200 => log.scores.push(started.elapsed()),
            s if s >= 500 => log.server_errors += 1,
            s => bail!("scoring refused: {s} {}", reply.body),
        }
    }
    Ok(log)
}

/// The report as a table.
pub fn table(r: &BenchReport) -> String {
    let mut out = format!(
        "elicit bench: {} clients, {} s per phase, bank {} × J={}, {} questions, {} candidates\n",
        r.load.clients,
        r.load.seconds,
        r.load.bank,
        r.load.dims,
        r.load.questions,
        r.load.candidates
    );
    out += &format!(
        "items uploaded in {:.1} s; the first session (the bank's load) took {:.0} ms; the bank holds {:.1} MiB\n",
        r.upload_seconds, r.first_session_ms, r.bank_mib
    );
    out += &format!(
        "{:<8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        "", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "count"
    );
    for (name, rate, l) in [
        ("answers", r.answers_per_s, &r.answers),
        ("scores", r.scores_per_s, &r.scores),
    ] {
        out += &format!(
            "{name:<8} {rate:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8}\n",
            l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.count
        );
    }
    let c = &r.creates;
    out += &format!(
        "{:<8} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8}\n",
        "creates", "", c.p50_ms, c.p95_ms, c.p99_ms, c.max_ms, c.count
    );
    out += &format!(
        "sessions: {} open at a time, {} created, {} finished; {} retries; {} server errors\n",
        r.load.sessions.unwrap_or(r.load.clients),
        r.sessions_created,
        r.sessions_finished,
        r.retries,
        r.server_errors
    );
    if let Some(f) = &r.flood {
        out += &format!(
            "flood: {:.0} req/s from a key limited to {:.0}/s: {} sent, {} refused with 429, {} accepted\n",
            f.rate_per_s, f.key_limit_per_s, f.sent, f.limited, f.accepted
        );
    }
    if r.answer_p50_ms_by_position.len() > 1 {
        out += "answer p50 by position:";
        for p in &r.answer_p50_ms_by_position {
            out += &format!(" {}–{}: {:.2} ms;", p.from, p.to, p.p50_ms);
        }
        out += "\n";
    }
    out
}
