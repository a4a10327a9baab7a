//! The SQL implementation of [`Store`] for PostgreSQL and SQLite.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use super::codec::{decode_symmetric, decode_vector, encode_symmetric, encode_vector};
use super::lane::Lane;
use super::*;

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

/// How long a pooled connection may sit idle before it is pinged on being handed out.
pub(super) const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

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

    /// Where a session change reads and writes: PostgreSQL's pool (the commit is one conditional
    /// autocommit statement), or a SQLite write transaction (taken at once: SQLite has one writer).
    async fn session_reader(&self) -> Result<Reader, StoreError> {
        Ok(match self.connections() {
            Connections {
                pool,
                commits: Some(lane),
                ..
            } => Reader::Pool(pool, lane),
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
        // On PostgreSQL the answer commits take half the connections (their own lane, below).
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

/// A session read for a change: on SQLite inside a write transaction, on PostgreSQL through the
/// pool (the commit is conditional on the version read).
struct SqlSessionUpdate {
    reader: Reader,
    session: SessionRecord,
    bank: BankStamp,
    started: std::time::Instant,
}

/// Where a [`SqlSessionUpdate`] reads and writes.
enum Reader {
    Transaction(sqlx::Transaction<'static, sqlx::Any>),
    /// Reads on the pool, the commit on the commits' lane.
    Pool(AnyPool, Arc<Lane>),
}

/// Runs a query on whichever the reader holds.
macro_rules! on_reader {
    ($reader:expr, $query:expr, $method:ident) => {
        match &mut $reader {
            Reader::Pool(pool, _) => $query.$method(&*pool).await,
            Reader::Transaction(tx) => $query.$method(&mut **tx).await,
        }
    };
}

/// A value bound to a statement whose parameters are assembled at run time.
enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    OptFloat(Option<f64>),
    Bytes(Vec<u8>),
}

/// One statement with its parameters `$1…$n`.
struct Statement {
    sql: &'static str,
    args: Vec<Arg>,
}

impl Statement {
    fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        bind_all(sqlx::query(sqlx::AssertSqlSafe(self.sql)), &self.args)
    }
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(v) => query.bind(v.as_str()),
            Arg::OptText(v) => query.bind(v.as_deref()),
            Arg::Int(v) => query.bind(*v),
            Arg::OptInt(v) => query.bind(*v),
            Arg::OptFloat(v) => bind_f64(query, *v),
            Arg::Bytes(v) => query.bind(v.as_slice()),
        };
    }
    query
}

/// Binds an optional f64. sqlx 0.9's Any driver declares a NULL f64 to PostgreSQL as `float4`
/// (sqlx-core `any/arguments.rs` maps `Null(Double)` to `Option<f32>`, and `Null(Real)` to
/// `Option<f64>`), and a cached prepared statement keeps the types of its first execution: a
/// skipped answer (no evidence) followed by an answered one on the same connection then failed
/// with "incorrect binary data format". A NULL f32 is declared as `float8`, so NULLs go as that.
fn bind_f64(
    query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    value: Option<f64>,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    match value {
        Some(v) => query.bind(v),
        None => query.bind(None::<f32>),
    }
}

/// Renumbers the parameters `$k` of `sql` to `$(k + offset)`.
fn shift_params(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' {
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            if let Ok(k) = digits.parse::<usize>() {
                out.push_str(&(k + offset).to_string());
            } else {
                out.push_str(&digits);
            }
        }
    }
    out
}

/// How the inserts of a commit get their rows: plain `VALUES` inside SQLite's write transaction;
/// on PostgreSQL a `SELECT` that yields a row only if the session update (CTE `upd`) did.
#[derive(Clone, Copy)]
enum RowSource {
    Values,
    IfUpdated,
}

impl RowSource {
    fn of(self, placeholders: usize) -> String {
        let list = (1..=placeholders)
            .map(|k| format!("${k}"))
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            RowSource::Values => format!("VALUES ({list})"),
            RowSource::IfUpdated => format!("SELECT {list} WHERE EXISTS (SELECT 1 FROM upd)"),
        }
    }
}

/// Which statements a commit runs: the session update always, the answer and the profile
/// inserts when it has them; `merged` into one statement (PostgreSQL) or one after another in a
/// transaction (SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CommitShape {
    merged: bool,
    answer: bool,
    profile: bool,
}

impl CommitShape {
    fn of(commit: &SessionCommit, merged: bool) -> Self {
        Self {
            merged,
            answer: commit.answer.is_some(),
            profile: commit.profile.is_some(),
        }
    }

    /// The SQL texts of this shape. A commit runs on every answer and its text depends on nothing
    /// else, so each of the eight is built once.
    fn sql(self) -> &'static [String] {
        static TEXTS: std::sync::LazyLock<Vec<(CommitShape, Vec<String>)>> =
            std::sync::LazyLock::new(|| {
                CommitShape::all()
                    .map(|shape| (shape, shape.build_sql()))
                    .collect()
            });
        &TEXTS
            .iter()
            .find(|(shape, _)| *shape == self)
            .expect("every shape is built")
            .1
    }

    /// Every shape.
    fn all() -> impl Iterator<Item = CommitShape> {
        (0..8).map(|bits| CommitShape {
            merged: bits & 4 != 0,
            answer: bits & 2 != 0,
            profile: bits & 1 != 0,
        })
    }

    fn build_sql(self) -> Vec<String> {
        let source = if self.merged {
            RowSource::IfUpdated
        } else {
            RowSource::Values
        };
        let mut texts = vec![(SESSION_UPDATE_SQL.to_string(), SESSION_UPDATE_PARAMS)];
        if self.answer {
            texts.push((
                format!(
                    "INSERT INTO answers (session_id, user_id, {ANSWER_COLUMNS}, response) {}",
                    source.of(ANSWER_INSERT_PARAMS)
                ),
                ANSWER_INSERT_PARAMS,
            ));
        }
        if self.profile {
            texts.push((
                format!(
                    "INSERT INTO profiles ({PROFILE_COLUMNS}) {} \
                     ON CONFLICT (user_id, model) DO UPDATE SET session_id = excluded.session_id, status = excluded.status, \
                     mean = excluded.mean, cov = excluded.cov, version = profiles.version + 1, answers = excluded.answers, updated_ms = excluded.updated_ms, \
                     unreliable = excluded.unreliable, prior_version = excluded.prior_version",
                    source.of(PROFILE_INSERT_PARAMS)
                ),
                PROFILE_INSERT_PARAMS,
            ));
        }
        if !self.merged {
            return texts.into_iter().map(|(sql, _)| sql).collect();
        }
        // PostgreSQL runs a commit as one autocommit statement: the session update is the CTE
        // `upd` (conditional on the version read), the inserts are CTEs that yield rows only if
        // it updated, and the statement returns a row only if it did. Atomic, and one round trip.
        let mut texts = texts.into_iter();
        let (head, mut offset) = texts.next().expect("a commit updates the session");
        let mut ctes = vec![format!("upd AS ({head} RETURNING 1)")];
        for (i, (sql, params)) in texts.enumerate() {
            ctes.push(format!("w{i} AS ({})", shift_params(&sql, offset)));
            offset += params;
        }
        vec![format!(
            "WITH {} SELECT 1 AS applied FROM upd",
            ctes.join(", ")
        )]
    }
}

/// The session update of a commit, conditional on the session's version and on its model's bank:
/// the change was computed from both, as read (or as this replica last committed them).
/// `scripts/answer-ceiling.py` writes the merged answer commit as a pgbench script (PostgreSQL's
/// ceiling in BENCHMARKS.md): a change to these statements belongs there too.
const SESSION_UPDATE_SQL: &str = "UPDATE sessions SET status = $2, stop_reason = $3, mean = $4, cov = $5, version = $6, answers = $7, question = $8, updated_ms = $9 \
    WHERE id = $1 AND version = $10 \
    AND EXISTS (SELECT 1 FROM models m WHERE m.name = sessions.model AND m.created_ms = $11 AND m.bank_version = $12)";
const SESSION_UPDATE_PARAMS: usize = 12;
const ANSWER_INSERT_PARAMS: usize = 17;
const PROFILE_INSERT_PARAMS: usize = 11;

/// The parameters of a commit that moves a session read at `read_version`, statement by statement
/// in the order of [`CommitShape::sql`]: the session update, then the answer and the profile.
fn commit_args(commit: &SessionCommit, read_version: i64, bank: BankStamp) -> Vec<Vec<Arg>> {
    let s = &commit.session;
    let mut args = vec![vec![
        Arg::Text(s.id.clone()),
        Arg::Text(s.status.as_str().into()),
        Arg::OptText(s.stop_reason.map(|r| r.as_str().into())),
        Arg::Bytes(encode_vector(&s.mean)),
        Arg::Bytes(encode_symmetric(&s.cov)),
        Arg::Int(s.version),
        Arg::Int(s.answers),
        Arg::OptText(s.question.as_ref().map(json_text)),
        Arg::Int(s.updated_ms),
        Arg::Int(read_version),
        Arg::Int(bank.model_created_ms),
        Arg::Int(bank.version),
    ]];
    if let Some(AnswerCommit { row: a, response }) = &commit.answer {
        args.push(vec![
            Arg::Text(s.id.clone()),
            Arg::Text(s.user_id.clone()),
            Arg::Int(a.seq),
            Arg::Text(a.item_a.clone()),
            Arg::Text(a.item_b.clone()),
            Arg::Text(choice_text(&a.answer)),
            Arg::OptFloat(a.log_evidence),
            Arg::Bytes(encode_vector(&a.direction)),
            Arg::OptText(a.idempotency_key.clone()),
            Arg::Text(a.request_hash.clone()),
            Arg::Int(a.created_ms),
            Arg::OptFloat(a.lapse),
            Arg::OptText(strength_text(&a.answer)),
            Arg::OptText(shown_text(&a.answer)),
            Arg::OptInt(chosen_index(&a.answer)),
            Arg::OptText(ranking_text(&a.answer)),
            Arg::Text(response.clone()),
        ]);
    }
    if let Some(p) = &commit.profile {
        args.push(vec![
            Arg::Text(p.user_id.clone()),
            Arg::Text(p.model.clone()),
            Arg::Text(p.session_id.clone()),
            Arg::Text(p.status.as_str().into()),
            Arg::Bytes(encode_vector(&p.mean)),
            Arg::Bytes(encode_symmetric(&p.cov)),
            Arg::Int(p.version),
            Arg::Int(p.answers),
            Arg::Int(p.updated_ms),
            Arg::Int(i64::from(p.unreliable)),
            Arg::Int(p.prior_version),
        ]);
    }
    args
}

#[async_trait]
impl SessionUpdate for SqlSessionUpdate {
    fn session(&self) -> &SessionRecord {
        &self.session
    }

    fn bank(&self) -> BankStamp {
        self.bank
    }

    async fn stored_reply(
        &mut self,
        idempotency_key: &str,
    ) -> Result<Option<StoredReply>, StoreError> {
        let query = sqlx::query(
            "SELECT request_hash, response FROM answers WHERE session_id = $1 AND idempotency_key = $2",
        )
        .bind(self.session.id.as_str())
        .bind(idempotency_key);
        let row =
            on_reader!(self.reader, query, fetch_optional).map_err(|e| classify(e, "answer"))?;
        row.map(|row| {
            Ok(StoredReply {
                request_hash: row.try_get("request_hash")?,
                body: row.try_get("response")?,
            })
        })
        .transpose()
    }

    async fn answers(&mut self) -> Result<Vec<AnswerRow>, StoreError> {
        let sql =
            format!("SELECT {ANSWER_COLUMNS} FROM answers WHERE session_id = $1 ORDER BY seq");
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.session.id.as_str());
        on_reader!(self.reader, query, fetch_all)
            .map_err(|e| classify(e, "answers"))?
            .iter()
            .map(answer_from_row)
            .collect()
    }

    async fn commit(self: Box<Self>, commit: &SessionCommit) -> Result<(), StoreError> {
        if commit.session.version != self.session.version + 1 {
            return Err(StoreError::Database(sqlx::Error::Protocol(format!(
                "a commit must advance the session from version {} to {}, not {}",
                self.session.version,
                self.session.version + 1,
                commit.session.version
            ))));
        }
        let read_version = self.session.version;
        let started = self.started;
        match self.reader {
            Reader::Pool(_, lane) => {
                let statement = Statement {
                    sql: &CommitShape::of(commit, true).sql()[0],
                    args: commit_args(commit, read_version, self.bank)
                        .into_iter()
                        .flatten()
                        .collect(),
                };
                // `fetch_all`, not `fetch_optional`: the row arrives before the implicit
                // transaction commits; only the end of the stream (ReadyForQuery, after Sync)
                // says the commit is durable. `fetch_optional` returned at the row, and the fault
                // test once saw an acknowledged answer vanish in a crash.
                let mut connection = lane.acquire().await.map_err(|e| classify(e, "answer"))?;
                let applied = statement
                    .query()
                    .fetch_all(connection.connection())
                    .await
                    .map_err(|e| classify(e, "answer"))?;
                connection.release();
                if applied.is_empty() {
                    return Err(StoreError::Changed);
                }
            }
            Reader::Transaction(mut tx) => {
                let statements = CommitShape::of(commit, false)
                    .sql()
                    .iter()
                    .zip(commit_args(commit, read_version, self.bank))
                    .map(|(sql, args)| Statement { sql, args });
                for (i, statement) in statements.enumerate() {
                    let done = statement
                        .query()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| classify(e, "answer"))?;
                    if i == 0 && done.rows_affected() != 1 {
                        return Err(StoreError::Changed);
                    }
                }
                tx.commit().await.map_err(|e| classify(e, "session"))?;
            }
        }
        metrics::histogram!("elicit_store_transaction_duration_seconds", "op" => "session")
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Runs DELETE statements that each bind `key` as `$1`, in order, in `tx`; returns the rows removed.
async fn delete_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    statements: &[&'static str],
    key: &str,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    for sql in statements {
        removed += sqlx::query(*sql)
            .bind(key)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(removed)
}

/// Appends `audit` to the audit trail in `tx`, the transaction of the change it records.
async fn append_audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    audit: &AuditEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at_ms, actor, action, target, request_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(audit.at_ms)
    .bind(audit.actor.clone())
    .bind(audit.action.as_str())
    .bind(audit.target.clone())
    .bind(audit.request_id.clone())
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "audit entry"))?;
    Ok(())
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    let action: String = row.try_get("action")?;
    Ok(AuditRecord {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at_ms: row.try_get("at_ms")?,
            actor: row.try_get("actor")?,
            action: AuditAction::parse(&action)
                .ok_or_else(|| StoreError::Corrupt(format!("audit action '{action}'")))?,
            target: row.try_get("target")?,
            request_id: row.try_get("request_id")?,
        },
    })
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

fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

fn model_from_row(row: &AnyRow) -> Result<ModelRecord, StoreError> {
    Ok(ModelRecord {
        name: row.try_get("name")?,
        spec: serde_json::from_str(&row.try_get::<String, _>("spec")?)?,
        prior_mean: decode_vector(&row.try_get::<Vec<u8>, _>("prior_mean")?)?,
        prior_cov: decode_symmetric(&row.try_get::<Vec<u8>, _>("prior_cov")?)?,
        bank_version: row.try_get("bank_version")?,
        created_ms: row.try_get("created_ms")?,
        prior_version: row.try_get("prior_version")?,
    })
}

fn prior_from_row(row: &AnyRow) -> Result<PriorRecord, StoreError> {
    Ok(PriorRecord {
        version: row.try_get("version")?,
        mean: decode_vector(&row.try_get::<Vec<u8>, _>("mean")?)?,
        cov: decode_symmetric(&row.try_get::<Vec<u8>, _>("cov")?)?,
        users: row.try_get("users")?,
        created_ms: row.try_get("created_ms")?,
    })
}

/// Inserts one version of a model's prior.
async fn insert_prior(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    model: &str,
    prior: &PriorRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO model_priors (model, version, mean, cov, users, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(model.to_string())
    .bind(prior.version)
    .bind(encode_vector(&prior.mean))
    .bind(encode_symmetric(&prior.cov))
    .bind(prior.users)
    .bind(prior.created_ms)
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "prior version"))?;
    Ok(())
}

fn item_from_row(row: &AnyRow) -> Result<ItemRecord, StoreError> {
    let payload: Option<String> = row.try_get("payload")?;
    Ok(ItemRecord {
        id: row.try_get("id")?,
        features: decode_vector(&row.try_get::<Vec<u8>, _>("features")?)?,
        group: row.try_get("item_group")?,
        payload: payload.map(|p| serde_json::from_str(&p)).transpose()?,
    })
}

fn status_from(text: String) -> Result<SessionStatus, StoreError> {
    SessionStatus::parse(&text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown status '{text}'")))
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, StoreError> {
    let stop_reason: Option<String> = row.try_get("stop_reason")?;
    let question: Option<String> = row.try_get("question")?;
    Ok(SessionRecord {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        model: row.try_get("model")?,
        token_hash: row.try_get("token_hash")?,
        status: status_from(row.try_get("status")?)?,
        stop_reason: stop_reason
            .map(|s| serde_json::from_value(serde_json::Value::String(s)))
            .transpose()?,
        settings: serde_json::from_str(&row.try_get::<String, _>("settings")?)?,
        mean: decode_vector(&row.try_get::<Vec<u8>, _>("mean")?)?,
        cov: decode_symmetric(&row.try_get::<Vec<u8>, _>("cov")?)?,
        version: row.try_get("version")?,
        answers: row.try_get("answers")?,
        question: question.map(|q| serde_json::from_str(&q)).transpose()?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        prior_version: row.try_get("prior_version")?,
    })
}

/// The `choice` column: a, b, tie or skip for a pair; pick, rank or skip for a question of k.
fn choice_text(answer: &LoggedAnswer) -> String {
    match answer {
        LoggedAnswer::Pair { choice, .. } => text_of(choice),
        LoggedAnswer::Pick { ranking, .. } => match ranking.len() {
            0 => "skip",
            1 => "pick",
            _ => "rank",
        }
        .into(),
        LoggedAnswer::Statement { prefer, .. } => text_of(prefer),
    }
}

fn strength_text(answer: &LoggedAnswer) -> Option<String> {
    match answer {
        LoggedAnswer::Pair {
            strength: Some(s), ..
        }
        | LoggedAnswer::Statement {
            strength: Some(s), ..
        } => Some(text_of(s)),
        _ => None,
    }
}

fn shown_text(answer: &LoggedAnswer) -> Option<String> {
    match answer {
        LoggedAnswer::Pick { items, .. } => Some(json_text(items)),
        LoggedAnswer::Pair { .. } | LoggedAnswer::Statement { .. } => None,
    }
}

/// The `chosen` column: the first (best) ordered item's index.
fn chosen_index(answer: &LoggedAnswer) -> Option<i64> {
    match answer {
        LoggedAnswer::Pick { ranking, .. } => ranking.first().map(|&c| c as i64),
        LoggedAnswer::Pair { .. } | LoggedAnswer::Statement { .. } => None,
    }
}

/// The `ranking` column: every ordered index, for an answer that orders more than one item.
fn ranking_text(answer: &LoggedAnswer) -> Option<String> {
    match answer {
        LoggedAnswer::Pick { ranking, .. } if ranking.len() > 1 => Some(json_text(ranking)),
        _ => None,
    }
}

fn logged_answer(row: &AnyRow) -> Result<LoggedAnswer, StoreError> {
    let text = |column: &str| -> Result<Option<String>, StoreError> { Ok(row.try_get(column)?) };
    fn parse<T: serde::de::DeserializeOwned>(value: String) -> Result<T, serde_json::Error> {
        serde_json::from_value(serde_json::Value::String(value))
    }
    Ok(match text("shown")? {
        Some(items) => LoggedAnswer::Pick {
            items: serde_json::from_str(&items)?,
            ranking: match text("ranking")? {
                Some(ranking) => serde_json::from_str(&ranking)?,
                None => row
                    .try_get::<Option<i64>, _>("chosen")?
                    .map(|c| {
                        usize::try_from(c)
                            .map_err(|_| StoreError::Corrupt(format!("answer pick {c}")))
                    })
                    .transpose()?
                    .into_iter()
                    .collect(),
            },
        },
        None => {
            let choice: String = row.try_get("choice")?;
            let strength = text("strength")?.map(parse).transpose()?;
            match choice.as_str() {
                "low" | "high" => LoggedAnswer::Statement {
                    prefer: parse(choice)?,
                    strength,
                },
                _ => LoggedAnswer::Pair {
                    choice: parse(choice)?,
                    strength,
                },
            }
        }
    })
}

fn answer_from_row(row: &AnyRow) -> Result<AnswerRow, StoreError> {
    Ok(AnswerRow {
        seq: row.try_get("seq")?,
        item_a: row.try_get("item_a")?,
        item_b: row.try_get("item_b")?,
        answer: logged_answer(row)?,
        log_evidence: row.try_get("log_evidence")?,
        direction: decode_vector(&row.try_get::<Vec<u8>, _>("direction")?)?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_hash: row.try_get("request_hash")?,
        created_ms: row.try_get("created_ms")?,
        lapse: row.try_get("lapse")?,
    })
}

fn profile_from_row(row: &AnyRow) -> Result<ProfileRecord, StoreError> {
    Ok(ProfileRecord {
        user_id: row.try_get("user_id")?,
        model: row.try_get("model")?,
        session_id: row.try_get("session_id")?,
        status: status_from(row.try_get("status")?)?,
        mean: decode_vector(&row.try_get::<Vec<u8>, _>("mean")?)?,
        cov: decode_symmetric(&row.try_get::<Vec<u8>, _>("cov")?)?,
        version: row.try_get("version")?,
        answers: row.try_get("answers")?,
        updated_ms: row.try_get("updated_ms")?,
        unreliable: row.try_get::<i64, _>("unreliable")? != 0,
        prior_version: row.try_get("prior_version")?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        key_hash: row.try_get("key_hash")?,
        created_ms: row.try_get("created_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
        rate_per_s: row.try_get("rate_per_s")?,
        burst: row.try_get("burst")?,
        expires_ms: row.try_get("expires_ms")?,
        rotated_from: row.try_get("rotated_from")?,
        models: row
            .try_get::<Option<String>, _>("models")?
            .map(|text| serde_json::from_str(&text))
            .transpose()?,
    })
}

fn insert_key(
    key: &ApiKeyRecord,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    let sql = format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key.id.clone())
        .bind(key.name.clone())
        .bind(key.role.clone())
        .bind(key.key_hash.clone())
        .bind(key.created_ms)
        .bind(key.revoked_ms);
    bind_f64(query, key.rate_per_s)
        .bind(key.burst)
        .bind(key.expires_ms)
        .bind(key.rotated_from.clone())
        .bind(key.models.as_ref().map(json_text))
}

fn text_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value).expect("plain data serialises") {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Unique-constraint violations are conflicts (of `what`); everything else as [`From`] says.
fn classify(error: sqlx::Error, what: &str) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_string())
        }
        _ => error.into(),
    }
}

/// Lost connections, pool exhaustion, lock timeouts, deadlocks, serialisation failures and a busy
/// SQLite are "unavailable" (a client may retry); undecodable values are corrupt rows; anything
/// else is a database error.
impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error.to_string()),
            sqlx::Error::Database(db)
                if matches!(
                    db.code().as_deref(),
                    // deadlock, lock timeout, serialisation failure, admin shutdown, crash
                    // shutdown, cannot connect now, a read-only server (a standby, until the
                    // primary's follower moves on), SQLite busy and locked
                    Some(
                        "40P01"
                            | "55P03"
                            | "40001"
                            | "57P01"
                            | "57P02"
                            | "57P03"
                            | "25006"
                            | "5"
                            | "6"
                    )
                ) =>
            {
                StoreError::Unavailable(error.to_string())
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(error.to_string()),
            _ => StoreError::Database(error),
        }
    }
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

    async fn create_model(
        &self,
        model: &ModelRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write("model").await?;
        sqlx::query(
            "INSERT INTO models (name, spec, prior_mean, prior_cov, bank_version, created_ms, prior_version) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&model.name)
        .bind(json_text(&model.spec))
        .bind(encode_vector(&model.prior_mean))
        .bind(encode_symmetric(&model.prior_cov))
        .bind(model.bank_version)
        .bind(model.created_ms)
        .bind(model.prior_version)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, &format!("model '{}'", model.name)))?;
        let prior = PriorRecord {
            version: model.prior_version,
            mean: model.prior_mean.clone(),
            cov: model.prior_cov.clone(),
            users: 0,
            created_ms: model.created_ms,
        };
        insert_prior(&mut tx, &model.name, &prior).await?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "model"))?;
        Ok(())
    }

    async fn get_model(&self, name: &str) -> Result<Option<ModelRecord>, StoreError> {
        let sql = format!("SELECT {MODEL_COLUMNS} FROM models WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "model"))?;
        row.as_ref().map(model_from_row).transpose()
    }

    async fn list_models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let sql = format!("SELECT {MODEL_COLUMNS} FROM models ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "models"))?;
        rows.iter().map(model_from_row).collect()
    }

    async fn delete_model(&self, name: &str, audit: &AuditEntry) -> Result<u64, StoreError> {
        let mut tx = self.begin_write("model").await?;
        let removed = delete_rows(
            &mut tx,
            &[
                "DELETE FROM answers WHERE session_id IN (SELECT id FROM sessions WHERE model = $1)",
                "DELETE FROM sessions WHERE model = $1",
                "DELETE FROM profiles WHERE model = $1",
                "DELETE FROM items WHERE model = $1",
                "DELETE FROM model_priors WHERE model = $1",
            ],
            name,
        )
        .await?;
        let models = delete_rows(&mut tx, &["DELETE FROM models WHERE name = $1"], name).await?;
        if models == 0 {
            return Err(StoreError::NotFound(format!("model '{name}'")));
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "model"))?;
        Ok(removed + models)
    }

    async fn upsert_items(
        &self,
        model: &str,
        items: &[ItemRecord],
        audit: &AuditEntry,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write("items").await?;
        // The version bump first: it also finds out whether the model exists.
        let version: i64 = sqlx::query_scalar("UPDATE models SET bank_version = bank_version + 1 WHERE name = $1 RETURNING bank_version")
            .bind(model)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify(e, "model"))?
            .ok_or_else(|| StoreError::NotFound(format!("model '{model}'")))?;
        for chunk in items.chunks(self.dialect.insert_batch()) {
            // Numbered placeholders: both dialects read `$n` (sqlx's QueryBuilder would emit the
            // Any driver's `?`, which PostgreSQL rejects).
            let rows: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let p = 5 * r;
                    format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO items (model, id, features, item_group, payload) VALUES {} \
                 ON CONFLICT (model, id) DO UPDATE SET features = excluded.features, item_group = excluded.item_group, payload = excluded.payload",
                rows.join(", ")
            );
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for item in chunk {
                insert = insert
                    .bind(model)
                    .bind(&item.id)
                    .bind(encode_vector(&item.features))
                    .bind(item.group.clone())
                    .bind(item.payload.as_ref().map(json_text));
            }
            insert
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(e, "items"))?;
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "items"))?;
        Ok(version)
    }

    async fn delete_item(
        &self,
        model: &str,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("item").await?;
        let deleted = sqlx::query("DELETE FROM items WHERE model = $1 AND id = $2")
            .bind(model)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "item"))?
            .rows_affected();
        if deleted > 0 {
            sqlx::query("UPDATE models SET bank_version = bank_version + 1 WHERE name = $1")
                .bind(model)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(e, "model"))?;
            append_audit(&mut tx, audit).await?;
        }
        tx.commit().await.map_err(|e| classify(e, "item"))?;
        Ok(deleted > 0)
    }

    async fn list_items(
        &self,
        model: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ItemRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, features, item_group, payload FROM items WHERE model = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(model)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool())
        .await
        .map_err(|e| classify(e, "items"))?;
        rows.iter().map(item_from_row).collect()
    }

    async fn model_priors(&self, model: &str) -> Result<Vec<PriorRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, mean, cov, users, created_ms FROM model_priors WHERE model = $1 ORDER BY version",
        )
        .bind(model)
        .fetch_all(&self.pool())
        .await
        .map_err(|e| classify(e, "priors"))?;
        rows.iter().map(prior_from_row).collect()
    }

    async fn set_prior(
        &self,
        model: &str,
        expected_version: i64,
        prior: &PriorRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write("prior").await?;
        let updated = sqlx::query(
            "UPDATE models SET prior_mean = $3, prior_cov = $4, prior_version = $5, bank_version = bank_version + 1 \
             WHERE name = $1 AND prior_version = $2",
        )
        .bind(model)
        .bind(expected_version)
        .bind(encode_vector(&prior.mean))
        .bind(encode_symmetric(&prior.cov))
        .bind(prior.version)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "model"))?
        .rows_affected();
        if updated == 0 {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT prior_version FROM models WHERE name = $1")
                    .bind(model)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| classify(e, "model"))?;
            return Err(match exists {
                Some(_) => StoreError::Changed,
                None => StoreError::NotFound(format!("model '{model}'")),
            });
        }
        insert_prior(&mut tx, model, prior).await?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "prior"))?;
        Ok(())
    }

    async fn finished_logs(&self, model: &str) -> Result<Vec<FinishedLog>, StoreError> {
        // The latest finished session of each user; its answers in order.
        let sessions = sqlx::query(
            "SELECT id, user_id, updated_ms FROM sessions WHERE model = $1 AND status = 'finished' ORDER BY user_id, updated_ms, id",
        )
        .bind(model)
        .fetch_all(&self.pool())
        .await
        .map_err(|e| classify(e, "sessions"))?;
        let mut latest: Vec<FinishedLog> = Vec::new();
        for row in &sessions {
            let user_id: String = row.try_get("user_id")?;
            let log = FinishedLog {
                session_id: row.try_get("id")?,
                user_id,
                answers: Vec::new(),
            };
            match latest.last_mut() {
                Some(last) if last.user_id == log.user_id => *last = log,
                _ => latest.push(log),
            }
        }
        let sql = format!(
            "SELECT a.session_id, {} FROM answers a JOIN sessions s ON s.id = a.session_id \
             WHERE s.model = $1 AND s.status = 'finished' ORDER BY a.session_id, a.seq",
            ANSWER_COLUMNS
                .split(", ")
                .map(|c| format!("a.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(model)
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "answers"))?;
        let index: std::collections::HashMap<String, usize> = latest
            .iter()
            .enumerate()
            .map(|(i, l)| (l.session_id.clone(), i))
            .collect();
        for row in &rows {
            let session: String = row.try_get("session_id")?;
            if let Some(&i) = index.get(&session) {
                latest[i].answers.push(answer_from_row(row)?);
            }
        }
        Ok(latest)
    }

    async fn load_bank(&self, model: &str) -> Result<(i64, Vec<ItemRecord>), StoreError> {
        // One transaction, so the version and the items are consistent with each other.
        let mut tx = self.pool().begin().await.map_err(|e| classify(e, "bank"))?;
        let version: i64 = sqlx::query_scalar("SELECT bank_version FROM models WHERE name = $1")
            .bind(model)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| classify(e, "model"))?
            .ok_or_else(|| StoreError::NotFound(format!("model '{model}'")))?;
        let rows = sqlx::query(
            "SELECT id, features, item_group, payload FROM items WHERE model = $1 ORDER BY id",
        )
        .bind(model)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify(e, "items"))?;
        tx.commit().await.map_err(|e| classify(e, "bank"))?;
        Ok((
            version,
            rows.iter().map(item_from_row).collect::<Result<_, _>>()?,
        ))
    }

    async fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&s.id)
            .bind(&s.user_id)
            .bind(&s.model)
            .bind(&s.token_hash)
            .bind(s.status.as_str())
            .bind(s.stop_reason.map(|r| r.as_str()))
            .bind(json_text(&s.settings))
            .bind(encode_vector(&s.mean))
            .bind(encode_symmetric(&s.cov))
            .bind(s.version)
            .bind(s.answers)
            .bind(s.question.as_ref().map(json_text))
            .bind(s.created_ms)
            .bind(s.updated_ms)
            .bind(s.prior_version)
            .execute(&self.pool())
            .await
            .map_err(|e| classify(e, "session"))?;
        Ok(())
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "session"))?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn session_answers(&self, id: &str) -> Result<Vec<AnswerRow>, StoreError> {
        let sql =
            format!("SELECT {ANSWER_COLUMNS} FROM answers WHERE session_id = $1 ORDER BY seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "answers"))?;
        rows.iter().map(answer_from_row).collect()
    }

    async fn update_session(&self, id: &str) -> Result<Box<dyn SessionUpdate>, StoreError> {
        let started = std::time::Instant::now();
        let mut reader = self.session_reader().await?;
        let columns: Vec<String> = SESSION_COLUMNS
            .split(", ")
            .map(|c| format!("s.{c}"))
            .collect();
        let sql = format!(
            "SELECT {}, m.bank_version, m.created_ms AS model_created_ms FROM sessions s JOIN models m ON m.name = s.model WHERE s.id = $1",
            columns.join(", ")
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id);
        let row = on_reader!(reader, query, fetch_optional)
            .map_err(|e| classify(e, "session"))?
            .ok_or_else(|| StoreError::NotFound(format!("session '{id}'")))?;
        Ok(Box::new(SqlSessionUpdate {
            session: session_from_row(&row)?,
            bank: BankStamp {
                model_created_ms: row.try_get("model_created_ms")?,
                version: row.try_get("bank_version")?,
            },
            reader,
            started,
        }))
    }

    async fn resume_session(
        &self,
        session: SessionRecord,
        bank: BankStamp,
    ) -> Result<Box<dyn SessionUpdate>, StoreError> {
        Ok(Box::new(SqlSessionUpdate {
            started: std::time::Instant::now(),
            reader: self.session_reader().await?,
            session,
            bank,
        }))
    }

    async fn get_profile(
        &self,
        user_id: &str,
        model: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let sql =
            format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE user_id = $1 AND model = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(model)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "profile"))?;
        row.as_ref().map(profile_from_row).transpose()
    }

    async fn delete_user(&self, user_id: &str, audit: &AuditEntry) -> Result<u64, StoreError> {
        let mut tx = self.begin_write("user").await?;
        let removed = delete_rows(
            &mut tx,
            &[
                "DELETE FROM answers WHERE session_id IN (SELECT id FROM sessions WHERE user_id = $1)",
                "DELETE FROM sessions WHERE user_id = $1",
                "DELETE FROM profiles WHERE user_id = $1",
            ],
            user_id,
        )
        .await?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "user"))?;
        Ok(removed)
    }

    async fn session_by_token(&self, token_hash: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT id FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "session"))
    }

    async fn create_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.begin_write("key").await?;
        insert_key(key)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "key"))?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "key"))?;
        Ok(())
    }

    async fn rotate_key(
        &self,
        id: &str,
        successor: &ApiKeyRecord,
        expires_ms: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        // One transaction: the old key gets its end of life and the successor appears together.
        let mut tx = self.begin_write("key").await?;
        let shortened = sqlx::query(
            "UPDATE api_keys SET expires_ms = CASE WHEN expires_ms IS NULL OR expires_ms > $2 \
             THEN $2 ELSE expires_ms END WHERE id = $1 AND revoked_ms IS NULL",
        )
        .bind(id)
        .bind(expires_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify(e, "key"))?;
        if shortened.rows_affected() != 1 {
            return Ok(false);
        }
        insert_key(successor)
            .execute(&mut *tx)
            .await
            .map_err(|e| classify(e, "key"))?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "key"))?;
        Ok(true)
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ms DESC, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "keys"))?;
        rows.iter().map(key_from_row).collect()
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "key"))?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn revoke_key(&self, id: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("key").await?;
        let done =
            sqlx::query("UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL")
                .bind(id)
                .bind(audit.at_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(e, "key"))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| classify(e, "key"))?;
        Ok(true)
    }

    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_ms IS NULL"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key_hash)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "key"))?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn open_sessions(&self, model: &str, since_ms: i64) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE model = $1 AND status = 'active' AND created_ms >= $2",
        )
        .bind(model)
        .bind(since_ms)
        .fetch_one(&self.pool())
        .await
        .map_err(|e| classify(e, "sessions"))
    }

    async fn sessions_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM sessions GROUP BY status")
            .fetch_all(&self.pool())
            .await
            .map_err(|e| classify(e, "sessions"))?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>("status")?, r.try_get::<i64, _>("n")?)))
            .collect()
    }

    fn pool_usage(&self) -> (u32, usize) {
        {
            let pool = self.pool();
            (pool.size(), pool.num_idle())
        }
    }

    async fn audit_trail(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        // Absent filters bind values that match everything, so there is one statement. A target
        // matches itself and what lies under it (`models/m` and `models/m/items/x`).
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, action, target, request_id FROM audit_log \
             WHERE id < $1 AND ($2 = '' OR action = $2) \
             AND ($3 = '' OR target = $3 OR substr(target, 1, length($3) + 1) = $3 || '/') \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(query.before.unwrap_or(i64::MAX))
        .bind(query.action.map_or("", AuditAction::as_str))
        .bind(query.target.clone().unwrap_or_default())
        .bind(query.limit as i64)
        .fetch_all(&self.pool())
        .await
        .map_err(|e| classify(e, "audit trail"))?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn service_secret(&self, name: &str) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT value FROM service_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool())
            .await
            .map_err(|e| classify(e, "service secret"))?
            .ok_or_else(|| StoreError::Corrupt(format!("no service secret '{name}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest `$n` in `sql`.
    fn last_param(sql: &str) -> usize {
        sql.split('$')
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn each_commit_shape_numbers_exactly_the_parameters_it_binds() {
        for shape in CommitShape::all() {
            let mut params = vec![SESSION_UPDATE_PARAMS];
            params.extend(shape.answer.then_some(ANSWER_INSERT_PARAMS));
            params.extend(shape.profile.then_some(PROFILE_INSERT_PARAMS));
            let texts = shape.sql();
            if shape.merged {
                assert_eq!(texts.len(), 1);
                assert_eq!(last_param(&texts[0]), params.iter().sum::<usize>());
            } else {
                let numbered: Vec<usize> = texts.iter().map(|t| last_param(t)).collect();
                assert_eq!(numbered, params, "{shape:?}");
            }
        }
    }
}
