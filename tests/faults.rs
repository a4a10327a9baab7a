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
#[path = "support/answer_load.rs"]
mod answer_load;
#[path = "support/net.rs"]
mod net;
#[path = "support/postgres.rs"]
mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use answer_load::{
    Replica, Tally, client, create_model, ready, report, two_seconds_in, under_load, verify,
};
use net::free_port;
use postgres::{as_postgres, postgres_bin_dir, private_dir};
use sqlx::Connection;

/// A PostgreSQL cluster of this test's own.
struct Cluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        let cluster = Self {
            dir: private_dir("elicit-faults"),
            port: free_port(),
            bin: postgres_bin_dir(),
        };
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

    /// One of PostgreSQL's programs, run as its user from the cluster's directory.
    fn command(&self, program: &str) -> Command {
        as_postgres(&self.bin.join(program), &self.dir)
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
            dir: private_dir("elicit-faults"),
            port: free_port(),
            bin: self.bin.clone(),
        };
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

/// Waits for `base` to be ready again, then checks the database against what the clients saw.
async fn recovered(name: &str, base: &str, database_url: &str, tally: &Tally) {
    ready(&client(), base, Duration::from_secs(10)).await;
    report(
        "faults-report.txt",
        name,
        tally,
        verify(database_url, tally).await,
    );
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
}
