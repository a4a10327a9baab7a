//! The connections PostgreSQL's answer path runs on (the commits, and the one-statement reads and
//! inserts around them): a small pool of its own that takes a connection back without a round
//! trip.
//!
//! sqlx's pool pings every connection it takes back (a Sync and its ReadyForQuery, in a task of
//! its own), to catch one left mid-statement by a cancelled future. The answer commit is one
//! statement, so that ping doubled its round trips: ~9 % of the server's CPU on the answer path
//! (perf, BENCHMARKS.md "The answer path at any bank size"). Here a connection goes back only
//! when its caller says its statement ran to the end ([`Leased::release`]); one dropped
//! otherwise (an error, a cancelled request) is closed, so the ping's guarantee holds without it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::AnyConnection;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyRow};
use sqlx::{Any, Connection, Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a connection may sit idle before it is pinged on being handed out (here and by the
/// store's main pool).
pub(super) const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// A bounded set of PostgreSQL connections, opened on demand.
pub(super) struct Lane {
    options: AnyConnectOptions,
    /// Run on each new connection (the session settings the pool's connections get too).
    setup: String,
    idle: Mutex<Vec<(AnyConnection, Instant)>>,
    slots: Arc<Semaphore>,
    acquire_timeout: Duration,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Lane {
    /// A lane of at most `size` connections to `options`' server, each set up with `setup`.
    pub(super) fn new(
        options: AnyConnectOptions,
        setup: String,
        size: usize,
        acquire_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            options,
            setup,
            idle: Mutex::new(Vec::with_capacity(size)),
            slots: Arc::new(Semaphore::new(size)),
            acquire_timeout,
        })
    }

    /// A connection: an idle one (pinged first if it sat idle a while), else a new one. Waits
    /// for a free slot at most the acquire timeout (then `PoolTimedOut`, as sqlx's pool).
    async fn acquire(self: &Arc<Self>) -> Result<Leased, sqlx::Error> {
        let permit = tokio::time::timeout(self.acquire_timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let popped = self.idle.lock().expect("lane lock").pop();
            let Some((mut conn, since)) = popped else {
                break;
            };
            if since.elapsed() < IDLE_BEFORE_PING || conn.ping().await.is_ok() {
                return Ok(self.leased(conn, permit));
            }
        }
        let connecting = async {
            let mut conn = AnyConnection::connect_with(&self.options).await?;
            conn.execute(sqlx::AssertSqlSafe(self.setup.clone()))
                .await?;
            Ok::<_, sqlx::Error>(conn)
        };
        let conn = tokio::time::timeout(self.acquire_timeout, connecting)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(self.leased(conn, permit))
    }

    /// Runs `query` to its end (every row, then its ReadyForQuery) on a connection of the lane,
    /// which then goes back: a one-statement read or write without the pool's release ping.
    pub(super) async fn fetch_all(
        self: &Arc<Self>,
        query: sqlx::query::Query<'_, Any, AnyArguments>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let mut leased = self.acquire().await?;
        let rows = query.fetch_all(leased.connection()).await?;
        leased.release();
        Ok(rows)
    }

    fn leased(self: &Arc<Self>, conn: AnyConnection, permit: OwnedSemaphorePermit) -> Leased {
        Leased {
            conn: Some(conn),
            lane: Arc::clone(self),
            _permit: permit,
        }
    }

    /// Closes the idle connections and refuses new acquisitions.
    pub(super) fn close(&self) {
        self.slots.close();
        self.idle.lock().expect("lane lock").clear();
    }
}

/// A connection taken from a [`Lane`]: closed when dropped, unless released.
struct Leased {
    conn: Option<AnyConnection>,
    lane: Arc<Lane>,
    _permit: OwnedSemaphorePermit,
}

impl Leased {
    /// The connection, to run statements on.
    fn connection(&mut self) -> &mut AnyConnection {
        self.conn.as_mut().expect("held until released")
    }

    /// Gives the connection back for reuse: call it only after a statement ran to its end
    /// (its ReadyForQuery read), so the next user finds the connection idle.
    fn release(mut self) {
        if let Some(conn) = self.conn.take()
            && !self.lane.slots.is_closed()
        {
            self.lane
                .idle
                .lock()
                .expect("lane lock")
                .push((conn, Instant::now()));
        }
    }
}
