//! High availability on pg_auto_failover, against real processes: a monitor and a pair of data
//! nodes formed by `pg_autoctl` (Debian's `postgresql-15-auto-failover`; `scripts/test` installs
//! it) in a temp dir on ports of their own, and the `elicit` binary given both data nodes in
//! libpq's multi-host URL.
//!
//! Under answer load from clients that retry unknown outcomes with the same `Idempotency-Key`:
//! 1. the primary node is lost at once (SIGKILL of its `pg_autoctl` and PostgreSQL processes, as
//!    a machine loss); the monitor promotes the secondary; the service follows it, no restart;
//! 2. the lost node is started again and rejoins as the secondary; then the new primary is lost
//!    in turn (fail back).
//!
//! After each failover: every acknowledged answer (of both runs, after the second) is in the log
//! exactly once, and every session's stored posterior equals the replay of its log. Per failover
//! the counts and the unavailability (first failed request to first success after the last) are
//! printed and appended to `target/tmp/failover-report.txt`, which `.ci/run` shows. The gauge
//! `elicit_database_replicas_in_sync` is checked to read 1 while the pair is healthy and 0 while
//! the survivor runs alone (pg_auto_failover's `wait_primary`).
//!
//! The monitor's health checks are shortened (a check a second, a node unhealthy after 2 s, a
//! lost primary given 3 s to demote itself) so that a failover takes seconds instead of the
//! defaults' half-minute; the protocol is the same.
#[path = "support/answer_load.rs"]
mod answer_load;
#[path = "support/net.rs"]
mod net;
#[path = "support/postgres.rs"]
mod postgres;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use answer_load::{
    Replica, Tally, client, create_model, ready, report, two_seconds_in, under_load, verify,
};
use net::free_port;
use postgres::{as_postgres, postgres_bin_dir, private_dir};
use sqlx::{AnyConnection, Connection};

const REPORT: &str = "failover-report.txt";
/// The longest a failover may keep clients from an acknowledgement.
const MAX_UNAVAILABLE: Duration = Duration::from_secs(30);

/// The monitor's settings that make failures seen and acted on within seconds.
const FAST_HEALTH_CHECKS: [&str; 6] = [
    "ALTER SYSTEM SET pgautofailover.health_check_period = 1000",
    "ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000",
    "ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1",
    "ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500",
    "ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 2000",
    "ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 3000",
];

/// A pg_auto_failover formation of this test's own: the monitor and two data nodes.
struct Formation {
    dir: PathBuf,
    monitor: Node,
    nodes: [Node; 2],
}

/// One `pg_autoctl` process (in a process group of its own) and the PostgreSQL it runs.
struct Node {
    name: &'static str,
    pgdata: PathBuf,
    port: u16,
    process: Option<Child>,
}

impl Formation {
    /// The monitor, then node_1 (which becomes the primary), then node_2 (its secondary).
    async fn start() -> Self {
        let dir = private_dir("elicit-failover");
        let node = |name: &'static str| Node {
            name,
            pgdata: dir.join(name),
            port: free_port(),
            process: None,
        };
        let mut formation = Self {
            monitor: node("monitor"),
            nodes: [node("node_1"), node("node_2")],
            dir,
        };
        let monitor = formation.monitor.create_args("monitor", &[]);
        formation.monitor.process = Some(formation.pg_autoctl("monitor", &monitor));
        formation.configure_monitor().await;
        for i in 0..2 {
            let monitor_uri = format!(
                "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
                formation.monitor.port
            );
            let name = formation.nodes[i].name;
            let args = formation.nodes[i]
                .create_args("postgres", &["--monitor", &monitor_uri, "--name", name]);
            formation.nodes[i].process = Some(formation.pg_autoctl(name, &args));
            let expected = [("node_1", "primary"), ("node_2", "secondary")];
            formation.await_states(&expected[..=i], i == 0).await;
        }
        formation
    }

    /// `pg_autoctl` with `args`, in a new process group, its settings and state kept under the
    /// formation's directory, its output in `<dir>/<node>.log`.
    fn pg_autoctl(&self, node: &str, args: &[String]) -> Child {
        let program = which("pg_autoctl").expect(
            "pg_autoctl is needed: install Debian's postgresql-15-auto-failover (scripts/test does)",
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{node}.log")))
            .unwrap();
        as_postgres(&program, &self.dir)
            .args(args)
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env("XDG_DATA_HOME", self.dir.join("share"))
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap()
    }

    async fn monitor_connection(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/pg_auto_failover",
            self.monitor.port
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut conn) = AnyConnection::connect(&url).await
                && sqlx::query("SELECT 1 FROM pgautofailover.formation")
                    .execute(&mut conn)
                    .await
                    .is_ok()
            {
                return conn;
            }
            assert!(Instant::now() < deadline, "the monitor never came up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn configure_monitor(&self) {
        let mut conn = self.monitor_connection().await;
        for setting in FAST_HEALTH_CHECKS {
            sqlx::query(setting).execute(&mut conn).await.unwrap();
        }
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await
            .unwrap();
    }

    /// Waits until the monitor reports each named node in its state, reached (reported equal to
    /// assigned); `single` also accepts the state a lone primary is in before its secondary.
    async fn await_states(&self, expected: &[(&str, &str)], single: bool) {
        let mut conn = self.monitor_connection().await;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut seen: Vec<(String, String, String)> = Vec::new();
        while Instant::now() < deadline {
            seen = sqlx::query_as(
                "SELECT nodename, reportedstate::text, goalstate::text \
                 FROM pgautofailover.node ORDER BY nodeid",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let reached = |(name, state): &(&str, &str)| {
                seen.iter().any(|(n, reported, goal)| {
                    n == name
                        && reported == goal
                        && (reported == state || (single && reported == "single"))
                })
            };
            if seen.len() == expected.len() && expected.iter().all(reached) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "the formation never reached {expected:?}; last seen {seen:?}\n{}",
            self.log_tails()
        );
    }

    /// The last lines each node's `pg_autoctl` logged, to say why a formation got stuck.
    fn log_tails(&self) -> String {
        let mut tails = String::new();
        for node in std::iter::once(&self.monitor).chain(&self.nodes) {
            let log = std::fs::read_to_string(self.dir.join(format!("{}.log", node.name)))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            tails.push_str(&format!("--- {}.log (last lines)\n{tail}\n", node.name));
        }
        tails
    }

    /// The service's database URL: both data nodes, in libpq's form.
    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// Starts a lost node's `pg_autoctl` again: it rejoins the formation.
    fn rejoin(&mut self, i: usize) {
        let args = vec![
            "run".to_string(),
            "--pgdata".to_string(),
            self.nodes[i].pgdata.display().to_string(),
        ];
        self.nodes[i].process = Some(self.pg_autoctl(self.nodes[i].name, &args));
    }
}

impl Node {
    /// `pg_autoctl create <kind>` for this node, running on after creation.
    fn create_args(&self, kind: &str, extra: &[&str]) -> Vec<String> {
        let pg_ctl = postgres_bin_dir().join("pg_ctl");
        let mut args: Vec<String> = ["create", kind, "--pgdata"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(self.pgdata.display().to_string());
        for arg in [
            "--pgport",
            &self.port.to_string(),
            "--pgctl",
            pg_ctl.to_str().unwrap(),
            "--hostname",
            "127.0.0.1",
            "--auth",
            "trust",
            "--no-ssl",
            "--run",
        ] {
            args.push(arg.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// The machine is lost: SIGKILL to `pg_autoctl`'s process group, to its PostgreSQL server and
    /// to that server's processes (each of which leads a session of its own).
    fn lose(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let mut targets = vec![format!("-{}", process.id())];
        if let Some(postmaster) = std::fs::read_to_string(self.pgdata.join("postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().next().map(str::to_string))
        {
            let children = Command::new("pgrep")
                .args(["-P", &postmaster])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            targets.push(postmaster);
            targets.extend(children.split_whitespace().map(str::to_string));
        }
        let _ = Command::new("kill")
            .arg("-9")
            .arg("--")
            .args(&targets)
            .stderr(Stdio::null())
            .status();
        let _ = process.wait();
    }
}

impl Drop for Formation {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.lose();
        }
        self.monitor.lose();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Waits until the service's `elicit_database_replicas_in_sync` gauge reads `expected`.
async fn await_replicas_in_sync(base: &str, expected: u32) {
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        last = text
            .lines()
            .find_map(|l| l.strip_prefix("elicit_database_replicas_in_sync "))
            .map(str::to_string);
        if last.as_deref() == Some(expected.to_string().as_str()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("elicit_database_replicas_in_sync never read {expected}; last {last:?}");
}

/// Checks and reports one failover's load.
async fn failed_over(name: &str, url: &str, tally: &Tally) {
    report(REPORT, name, tally, verify(url, tally).await);
    let unavailable = tally.unavailability().expect("the service recovered");
    assert!(
        unavailable <= MAX_UNAVAILABLE,
        "{name}: unavailable for {unavailable:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_answers_survive_failover_and_fail_back() {
    let started = Instant::now();
    let _ = std::fs::remove_file(Path::new(env!("CARGO_TARGET_TMPDIR")).join(REPORT));
    let mut formation = Formation::start().await;
    let url = formation.url();
    let service = Replica::start(&url, free_port());
    let base = service.base();
    ready(&client(), &base, Duration::from_secs(30)).await;
    create_model(&client(), &base).await;
    await_replicas_in_sync(&base, 1).await;

    // 1. node_1, the primary, is lost; the monitor promotes node_2.
    let (nodes, seconds) = (&mut formation.nodes, 14);
    let lose_first = two_seconds_in(async { nodes[0].lose() });
    let away = under_load(vec![base.clone()], 6, seconds, false, lose_first).await;
    failed_over("failover 1 (node_1 lost, node_2 promoted)", &url, &away).await;
    await_replicas_in_sync(&base, 0).await;

    // 2. node_1 rejoins as the secondary; then node_2 is lost and node_1 promoted again.
    formation.rejoin(0);
    formation
        .await_states(&[("node_1", "secondary"), ("node_2", "primary")], false)
        .await;
    await_replicas_in_sync(&base, 1).await;
    let nodes = &mut formation.nodes;
    let lose_second = two_seconds_in(async { nodes[1].lose() });
    let back = under_load(vec![base.clone()], 6, seconds, false, lose_second).await;
    failed_over("failover 2 (node_2 lost, node_1 promoted)", &url, &back).await;
    // What the first failover's survivor acknowledged alone reached node_1 when it rejoined.
    let (_, lost, doubled) = verify(&url, &away).await;
    assert_eq!(
        (lost, doubled),
        (0, 0),
        "failover 1's answers after the fail back"
    );

    let line = format!(
        "failover test: {:.0} s in all (formation, two failovers, a rejoin)",
        started.elapsed().as_secs_f64()
    );
    println!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(REPORT);
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
}
