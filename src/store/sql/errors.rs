//! sqlx's errors classified into [`StoreError`]s the service can act on.

use super::*;

/// Unique-constraint violations are conflicts (of `what`); everything else as [`From`] says.
pub(super) fn classify(error: sqlx::Error, what: &str) -> StoreError {
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
