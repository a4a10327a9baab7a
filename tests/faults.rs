//! Faults under answer load, against real processes: the `elicit` binary on a private PostgreSQL
//! cluster (initdb into a temp dir, its own port, so nothing else is disturbed).
//!
//! 1. PostgreSQL stopped with `-m immediate` and started again mid-load: the service recovers by
//!    itself (`/readyz` back to 200, no restart).
//! 2. The service SIGKILLed and started again mid-load.
//! 3. Two replicas on one database, clients spreading each session's answers over both and racing
//!    the same answer to both, one replica SIGKILLed and started again mid-run.
//! 4. A synchronous standby beside the cluster, the service given both hosts (libpq's multi-host
//!    URL): the primary stopped `-m immediate` and the standby promoted mid-load; the service
//!    follows the new primary without a restart.
//!
//! Clients retry lost requests (transport errors, 5xx) with the same `Idempotency-Key`. After each
//! run: every acknowledged answer is in the log exactly once, every session's log is gapless and
//! matches its answer count, and every stored posterior equals the replay of its log. The counts
//! (acknowledged, lost, doubled, 5xx) are printed.
#[path = "support/net.rs"]
mod net;
use net::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use elicit::model::Pair;
use elicit::model::elicitation::Response;
use elicit::model::{Bank, Elicitation, ElicitationConfig, Posterior, StoppingRule};
use elicit::store::sql::PoolSettings;
use elicit::store::{LoggedAnswer, SqlStore, Store};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::Mutex;

const ADMIN_KEY: &str = "faults-admin-key";
const DIMS: usize = 4;
const ITEMS: usize = 30;
const QUESTIONS: usize = 12;

/// A PostgreSQL cluster of this test's own.
struct Cluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        let bin = postgres_bin_dir();
        let dir =
            std::env::temp_dir().join(format!("elicit-faults-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = Self {
            dir,
            port: free_port(),
            bin,
        };
        give_to_postgres(&cluster.dir);
        let data = cluster.data();
        let status = cluster
            .command("initdb")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A command run as the `postgres` user when this process is root (initdb refuses root),
    /// from the cluster's directory (the test's own may not be readable by that user).
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.current_dir(&self.dir);
        command
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=60",
            self.port,
            self.dir.display()
        );
        let status = self
            .command("pg_ctl")
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "-l",
            ])
            .arg(self.dir.join("log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start failed");
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`) on a port of its own, running,
    /// and made this cluster's synchronous standby: a commit here is acknowledged only once the
    /// standby has it, as pg_auto_failover's pair does with a healthy secondary.
    async fn standby(&self) -> Self {
        let standby = Self {
            dir: std::env::temp_dir()
                .join(format!("elicit-faults-{}", uuid::Uuid::new_v4().simple())),
            port: free_port(),
            bin: self.bin.clone(),
        };
        std::fs::create_dir_all(&standby.dir).unwrap();
        give_to_postgres(&standby.dir);
        let status = standby
            .command("pg_basebackup")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-D",
                standby.data().to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_basebackup failed");
        standby.pg_ctl_start();
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url()).await.unwrap();
        for statement in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let synchronous: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if synchronous == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the standby never became synchronous"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        standby
    }

    /// Promotes a standby to primary.
    fn promote(&self) {
        let status = self
            .command("pg_ctl")
            .args(["-D", self.data().to_str().unwrap(), "-w", "promote"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl promote failed");
    }

    /// Crashes the cluster and starts it again after `pause`.
    async fn crash_for(&self, pause: Duration) {
        self.stop_immediate();
        tokio::time::sleep(pause).await;
        self.pg_ctl_start();
    }

    /// Stops at once, as a crash would: no checkpoint, recovery from the WAL on the next start.
    fn stop_immediate(&self) {
        let status = self
            .command("pg_ctl")
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl stop failed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Makes `dir` the `postgres` user's when this process is root (the cluster runs as that user).
fn give_to_postgres(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// The directory of `initdb` and `pg_ctl`: on PATH, else the newest /usr/lib/postgresql/*/bin.
fn postgres_bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
        && out.status.success()
    {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let resolved = std::fs::canonicalize(&path).unwrap_or(path);
        return resolved.parent().unwrap().to_path_buf();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries (initdb, pg_ctl) are needed")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL version under /usr/lib/postgresql")
}

/// The `elicit` binary serving on a fixed port.
struct Replica {
    child: Child,
    port: u16,
    database_url: String,
}

impl Replica {
    fn start(database_url: &str, port: u16) -> Self {
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

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (no drain, no shutdown hook), then a new process on the same port after `pause`.
    async fn kill_for(&mut self, pause: Duration) {
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

fn client() -> reqwest::Client {
    elicit::client::with_key(ADMIN_KEY, Some(Duration::from_secs(3))).unwrap()
}

/// Waits until `base` answers `/readyz` with 200.
async fn ready(http: &reqwest::Client, base: &str, within: Duration) {
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
fn features(i: usize) -> Vec<f64> {
    (0..DIMS)
        .map(|d| ((i * 7 + d * 13) % 11) as f64 / 5.0 - 1.0 + 0.1 * d as f64)
        .collect()
}

async fn create_model(http: &reqwest::Client, base: &str) {
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
struct Tally {
    /// (session id, idempotency key) of every answer acknowledged with 200.
    acknowledged: Mutex<Vec<(String, String)>>,
    server_errors: AtomicUsize,
    transport_errors: AtomicUsize,
    /// When each acknowledgement arrived, for the longest time without one.
    acknowledged_at: Mutex<Vec<Instant>>,
}

impl Tally {
    /// The longest time between two acknowledged answers: the unavailability a fault caused.
    fn longest_gap(&self) -> Duration {
        let mut times = self
            .acknowledged_at
            .try_lock()
            .expect("the load is over")
            .clone();
        times.sort();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

/// One client: sessions answered until the deadline, each request sent to the replicas in turn
/// and retried (same key) until acknowledged; with `race`, some answers go to two replicas at
/// once, and both must return the same bytes.
async fn client_loop(
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
                Ok(r) if r.status().is_server_error() => {
                    tally.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => panic!("session refused: {}", r.status()),
                Err(_) => {
                    tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                }
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
                        tally.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let status = r.status();
                        panic!("answer refused: {status} {}", r.text().await.unwrap());
                    }
                    Err(_) => {
                        tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                    }
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
async fn verify(database_url: &str, tally: &Tally) -> (usize, usize, usize) {
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

/// Prints the counts and appends them to `target/tmp/faults-report.txt` (which `.ci/run` shows,
/// since the test harness captures a passing test's output).
fn report(name: &str, tally: &Tally, (acknowledged, lost, doubled): (usize, usize, usize)) {
    let line = format!(
        "{name}: acknowledged {acknowledged}, lost {lost}, doubled {doubled}, 5xx {}, transport errors {}",
        tally.server_errors.load(Ordering::Relaxed),
        tally.transport_errors.load(Ordering::Relaxed)
    );
    println!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults-report.txt");
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
async fn under_load<F: std::future::Future<Output = ()>>(
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
async fn two_seconds_in(fault: impl std::future::Future<Output = ()>) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    fault.await;
}

/// Waits for `base` to be ready again, then checks the database against what the clients saw.
async fn recovered(name: &str, base: &str, database_url: &str, tally: &Tally) {
    ready(&client(), base, Duration::from_secs(10)).await;
    report(name, tally, verify(database_url, tally).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_answers_survive_crashes_kills_and_replicas() {
    let _ = std::fs::remove_file(Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults-report.txt"));
    let cluster = Cluster::start();
    let url = cluster.url();
    let http = client();

    // 1. PostgreSQL crashes and comes back; the service is not restarted.
    let mut a = Replica::start(&url, free_port());
    let a_base = a.base();
    ready(&http, &a_base, Duration::from_secs(30)).await;
    create_model(&http, &a_base).await;
    let crash = two_seconds_in(cluster.crash_for(Duration::from_millis(1500)));
    let tally = under_load(vec![a_base.clone()], 6, 6, false, crash).await;
    recovered("database crash", &a_base, &url, &tally).await;

    // 2. The service is SIGKILLed and started again.
    let kill = two_seconds_in(a.kill_for(Duration::from_millis(500)));
    let tally = under_load(vec![a_base.clone()], 6, 6, false, kill).await;
    recovered("service killed", &a_base, &url, &tally).await;

    // 3. Two replicas share the sessions and race on answers; one is killed and restarted.
    let mut b = Replica::start(&url, free_port());
    let b_base = b.base();
    ready(&http, &b_base, Duration::from_secs(30)).await;
    let kill = two_seconds_in(b.kill_for(Duration::from_millis(500)));
    let tally = under_load(vec![a_base, b_base.clone()], 6, 6, true, kill).await;
    recovered("two replicas, one killed", &b_base, &url, &tally).await;
    drop((a, b));

    // 4. The primary is lost at once and its synchronous standby promoted; the service, given
    //    both hosts in libpq's form, follows the primary without a restart.
    let standby = cluster.standby().await;
    let both = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        cluster.port, standby.port
    );
    let c = Replica::start(&both, free_port());
    let c_base = c.base();
    ready(&http, &c_base, Duration::from_secs(30)).await;
    let failover = two_seconds_in(async {
        cluster.stop_immediate();
        standby.promote();
    });
    let tally = under_load(vec![c_base.clone()], 6, 8, false, failover).await;
    recovered(
        "primary lost, standby promoted",
        &c_base,
        &standby.url(),
        &tally,
    )
    .await;
    println!(
        "primary lost, standby promoted: no acknowledged answer for {:.1} s",
        tally.longest_gap().as_secs_f64()
    );
}
