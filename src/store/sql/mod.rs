//! The SQL implementation of [`Store`] for PostgreSQL and SQLite.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use super::codec::{decode_symmetric, decode_vector, encode_symmetric, encode_vector};
use super::lane::{IDLE_BEFORE_PING, Lane};
use super::*;

mod access;
mod catalog;
mod commit;
mod errors;
mod rows;
mod sessions;

use commit::*;
use errors::*;
use rows::*;

/// The SQL dialect behind a database URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The dialect of a `postgres://…` or `sqlite:…` URL.
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else {
            None
        }
    }

    /// Starts a write transaction. SQLite takes its (database-wide) write lock at once, so two
    /// writers never both read then fail to upgrade.
    fn begin_write(self) -> &'static str {
        match self {
            Dialect::Postgres => "BEGIN",
            Dialect::Sqlite => "BEGIN IMMEDIATE",
        }
    }

    /// Rows per multi-row INSERT, within each database's bound-parameter limit.
    fn insert_batch(self) -> usize {
        match self {
            Dialect::Postgres => 5_000,
            Dialect::Sqlite => 1_000,
        }
    }
}

/// Connection-pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// PostgreSQL's `synchronous_commit` for the service's connections: what an acknowledged
    /// answer survives (README, "Durability").
    pub synchronous_commit: SynchronousCommit,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            synchronous_commit: SynchronousCommit::On,
        }
    }
}

/// PostgreSQL's `synchronous_commit` levels, weakest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynchronousCommit {
    /// Wait until synchronous standbys have applied the commit (reads there see it).
    RemoteApply,
    /// Wait for the local WAL flush and, with synchronous standbys, theirs (the default).
    On,
    /// Wait for the local flush and for synchronous standbys to receive it (not flush).
    RemoteWrite,
    /// Wait for the local WAL flush only, never for standbys.
    Local,
    /// Do not wait: a crash can lose the last acknowledged answers (but never half of one).
    Off,
}

impl SynchronousCommit {
    fn as_sql(self) -> &'static str {
        match self {
            Self::RemoteApply => "remote_apply",
            Self::On => "on",
            Self::RemoteWrite => "remote_write",
            Self::Local => "local",
            Self::Off => "off",
        }
    }
}

/// A [`Store`] on PostgreSQL or SQLite.
#[derive(Debug, Clone)]
pub struct SqlStore {
    /// The connections to the database's writable server; replaced when the primary moves
    /// (a PostgreSQL URL listing several hosts; see [`hosts`](super::hosts)).
    current: Arc<RwLock<Connections>>,
    dialect: Dialect,
    /// Set by [`SqlStore::close`]: the primary's follower stops.
    closed: Arc<AtomicBool>,
}

/// The pool and the commits' lane to one server.
#[derive(Debug, Clone)]
struct Connections {
    pool: AnyPool,
    /// PostgreSQL's answer commits run here, not on `pool` (see [`Lane`]); `None` on SQLite,
    /// whose commits run in the write transaction their read opened.
    commits: Option<Arc<Lane>>,
    /// Which of the URL's hosts they reach.
    host: usize,
}

/// How often the follower asks the current host whether it still accepts writes, and how long
/// each question may take.
const PRIMARY_PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PRIMARY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

const MODEL_COLUMNS: &str =
    "name, spec, prior_mean, prior_cov, bank_version, created_ms, prior_version";
const SESSION_COLUMNS: &str = "id, user_id, model, token_hash, status, stop_reason, settings, mean, cov, version, answers, question, created_ms, updated_ms, prior_version";
const ANSWER_COLUMNS: &str = "seq, item_a, item_b, choice, log_evidence, direction, idempotency_key, request_hash, created_ms, lapse, strength, shown, chosen, ranking";
const KEY_COLUMNS: &str = "id, name, role, key_hash, created_ms, revoked_ms, rate_per_s, burst, expires_ms, rotated_from, models";
const PROFILE_COLUMNS: &str = "user_id, model, session_id, status, mean, cov, version, answers, updated_ms, unreliable, prior_version";

impl SqlStore {
    /// Connects to `url` (creating a SQLite file and its directory if needed). Connections are
    /// opened lazily, so a database that is down at start makes readiness fail, not the process.
    ///
    /// A PostgreSQL URL may list several hosts (libpq's `h1:5432,h2:5432` form): the store
    /// connects to the first that accepts writes (the first listed if none answers yet), then a
    /// follower asks that host every [`PRIMARY_PROBE_INTERVAL`] whether it still does; when it
    /// does not (it is gone, or a standby now), the store moves to the first host that does. On
    /// any PostgreSQL the follower also keeps `elicit_database_replicas_in_sync` current.
    /// Meanwhile statements fail as an unreachable or read-only database: 503 with Retry-After,
    /// never a wrong answer, and an answer retried with its Idempotency-Key is applied once.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url).ok_or_else(|| {
            StoreError::Misconfigured(format!(
                "unsupported database URL scheme in '{}'",
                redact(url)
            ))
        })?;
        let urls = match dialect {
            Dialect::Sqlite => vec![prepare_sqlite_url(url)?],
            Dialect::Postgres => super::hosts::split(url)
                .map_err(|e| StoreError::Misconfigured(format!("database URL: {e}")))?,
        };
        let host = if urls.len() > 1 {
            super::hosts::first_writable(&urls, PRIMARY_PROBE_TIMEOUT)
                .await
                .unwrap_or(0)
        } else {
            0
        };
        let store = Self {
            current: Arc::new(RwLock::new(Connections::open(
                &urls[host],
                host,
                dialect,
                settings,
            )?)),
            dialect,
            closed: Arc::new(AtomicBool::new(false)),
        };
        if dialect == Dialect::Postgres {
            tokio::spawn(store.clone().follow_primary(urls, settings));
        }
        Ok(store)
    }

    /// The follower of [`SqlStore::connect`]: runs until the store is closed. Each tick asks the
    /// current server, through the pool, whether it is still the primary and how many standbys
    /// confirm its commits (the gauge `elicit_database_replicas_in_sync`); with several hosts,
    /// when it is not (gone, or a standby now), it moves the store to the first that is.
    async fn follow_primary(self, urls: Vec<String>, settings: PoolSettings) {
        while !self.closed.load(Ordering::Relaxed) {
            tokio::time::sleep(PRIMARY_PROBE_INTERVAL).await;
            let Connections { pool, host, .. } = self.connections();
            let state =
                tokio::time::timeout(PRIMARY_PROBE_TIMEOUT, super::hosts::state_of(&pool)).await;
            if let Ok(Ok(state)) = state
                && state.accepts_writes
            {
                metrics::gauge!("elicit_database_replicas_in_sync")
                    .set(state.replicas_in_sync as f64);
                continue;
            }
            if urls.len() == 1 {
                continue;
            }
            let Some(primary) = super::hosts::first_writable(&urls, PRIMARY_PROBE_TIMEOUT).await
            else {
                continue;
            };
            if primary == host || self.closed.load(Ordering::Relaxed) {
                continue;
            }
            let Ok(connections) =
                Connections::open(&urls[primary], primary, self.dialect, settings)
            else {
                continue;
            };
            let old = std::mem::replace(
                &mut *self.current.write().expect("store connections lock"),
                connections,
            );
            tracing::warn!(
                from = %redact(&urls[host]),
                to = %redact(&urls[primary]),
                "the database's primary moved; following it"
            );
            metrics::counter!("elicit_database_primary_changes_total").increment(1);
            old.close().await;
        }
    }

    /// The connections in use now.
    fn connections(&self) -> Connections {
        self.current.read().expect("store connections lock").clone()
    }

    /// The connection pool, for checks outside the [`Store`] trait (tests, diagnostics).
    pub fn pool(&self) -> AnyPool {
        self.connections().pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Applies the dialect's migrations (PostgreSQL serialises concurrent replicas with an
    /// advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.dialect {
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        };
        migrator.run(&self.pool()).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            other => StoreError::Misconfigured(format!("migration failed: {other}")),
        })
    }

    /// A write transaction (on SQLite it holds the database's write lock from the start).
    async fn begin_write(
        &self,
        what: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        self.pool()
            .begin_with(self.dialect.begin_write())
            .await
            .map_err(|e| classify(e, what))
    }

    /// Runs one statement of the answer path to its end (a session's creation, its model's
    /// read): on PostgreSQL on the lane, without the pool's release ping; on SQLite on the pool.
    async fn run_to_end(
        &self,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        match self.connections() {
            Connections {
                commits: Some(lane),
                ..
            } => lane.fetch_all(query).await,
            Connections { pool, .. } => query.fetch_all(&pool).await,
        }
    }

    /// Where a session change reads and writes: PostgreSQL's answer-path lane (the commit is one
    /// conditional autocommit statement), or a SQLite write transaction (taken at once: SQLite
    /// has one writer).
    async fn session_reader(&self) -> Result<Reader, StoreError> {
        Ok(match self.connections() {
            Connections {
                commits: Some(lane),
                ..
            } => Reader::Lane(lane),
            Connections { commits: None, .. } => {
                Reader::Transaction(self.begin_write("session").await?)
            }
        })
    }

    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.connections().close().await;
    }
}

impl Connections {
    /// A lazily connecting pool (and, on PostgreSQL, a commits' lane) to `url`, host `host` of
    /// the store's URL.
    fn open(
        url: &str,
        host: usize,
        dialect: Dialect,
        settings: PoolSettings,
    ) -> Result<Self, StoreError> {
        // On PostgreSQL the answer path (its commits and the reads around them) takes half the
        // connections: its own lane, below.
        let lane_size = match dialect {
            Dialect::Postgres => (settings.max_connections / 2).max(1),
            Dialect::Sqlite => 0,
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(settings.max_connections.saturating_sub(lane_size).max(1))
            .acquire_timeout(settings.acquire_timeout)
            // sqlx pings every connection it hands out: a round trip to PostgreSQL before each
            // statement, on the answer path as many as the answer's own. A connection used
            // moments ago has just answered (and sqlx pings it on release, dropping it if that
            // fails), so only one that has sat idle is tested. One broken since fails its
            // statement, which callers see as an unreachable database (503) and retry, and is
            // then dropped.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
        // Set per connection, so the promise does not depend on the server's default.
        let postgres_setup = format!(
            "SET synchronous_commit TO {}",
            settings.synchronous_commit.as_sql()
        );
        if dialect == Dialect::Postgres {
            let setup = postgres_setup.clone();
            options = options.after_connect(move |conn, _| {
                let setup = setup.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(setup)).await?;
                    Ok(())
                })
            });
        }
        if dialect == Dialect::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; FULL sync: an acknowledged answer
                    // survives a power cut; busy_timeout queues writers instead of failing them.
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect_lazy(url)
            .map_err(|e| StoreError::Misconfigured(format!("database URL: {e}")))?;
        let commits = match dialect {
            Dialect::Postgres => Some(Lane::new(
                url.parse()
                    .map_err(|e| StoreError::Misconfigured(format!("database URL: {e}")))?,
                postgres_setup,
                lane_size as usize,
                settings.acquire_timeout,
            )),
            Dialect::Sqlite => None,
        };
        Ok(Self {
            pool,
            commits,
            host,
        })
    }

    async fn close(&self) {
        if let Some(lane) = &self.commits {
            lane.close();
        }
        self.pool.close().await;
    }
}

/// Hides a password in a database URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let file = path.split('?').next().unwrap_or_default();
    if file.is_empty() || file == ":memory:" {
        return Err(StoreError::Misconfigured(
            "the embedded store needs a file path (sqlite://path/to/file.db)".into(),
        ));
    }
    if let Some(dir) = Path::new(file)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Misconfigured(format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let separator = if path.contains('?') { '&' } else { '?' };
    Ok(if path.contains("mode=") {
        format!("sqlite://{path}")
    } else {
        format!("sqlite://{path}{separator}mode=rwc")
    })
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool())
            .await
            .map_err(|e| classify(e, "ping"))?;
        Ok(())
    }

    fn pool_usage(&self) -> (u32, usize) {
        {
            let pool = self.pool();
            (pool.size(), pool.num_idle())
        }
    }
}
