//! Persistence behind three narrow async traits: [`CatalogStore`] (models, banks, priors),
//! [`SessionStore`] (sessions, answer logs, profiles) and [`AccessStore`] (keys, audit trail,
//! secrets), together [`Store`]; the records they keep are in `records.rs`.
//!
//! [`SqlStore`] implements them for PostgreSQL (production; several replicas may share one
//! database) and SQLite (the embedded zero-setup default) through sqlx's `Any` driver: one body
//! of SQL, with the few dialect differences (how a session is locked, migrations) in [`Dialect`].
//!
//! The answer log is the truth; the posterior stored on the session row is a cache of it, written
//! atomically with the log. A session is changed through a [`SessionUpdate`]: the service reads
//! the session, computes, and commits typed records, which succeeds only if the session is still
//! at the version read (else [`StoreError::Changed`], and the service starts again). On PostgreSQL
//! that is optimistic: a plain read, then one autocommit statement that updates the row only at the
//! version read and appends the answer and the profile in data-modifying CTEs (two round trips an
//! answer, no lock held across them). On SQLite it is a `BEGIN IMMEDIATE` write transaction. The
//! service's own errors never pass through the store.

pub mod codec;
pub mod hosts;
mod lane;
mod records;
pub mod sql;

use async_trait::async_trait;

pub use records::{
    AnswerCommit, AnswerRow, ApiKeyRecord, AuditAction, AuditEntry, AuditQuery, AuditRecord,
    BankStamp, FinishedLog, GuardSpec, ItemRecord, LoggedAnswer, ModelRecord, ModelSpec,
    PriorRecord, ProfileRecord, QuestionRecord, SessionCommit, SessionRecord, SessionSettings,
    SessionStatus, StoredReply,
};
pub use sql::{Dialect, SqlStore, redact};

/// A session read for a change ([`SessionStore::read_for_change`]). [`SessionUpdate::commit`] writes only
/// if no other commit changed the session since it was read; dropping it writes nothing.
#[async_trait]
pub trait SessionUpdate: Send {
    /// The session as read.
    fn session(&self) -> &SessionRecord;
    /// Which bank the session's model had when the session was read.
    fn bank(&self) -> BankStamp;
    /// The reply stored for an answer sent with this idempotency key (an indexed look-up).
    async fn stored_reply(
        &mut self,
        idempotency_key: &str,
    ) -> Result<Option<StoredReply>, StoreError>;
    /// The session's answer log, in order.
    async fn answers(&mut self) -> Result<Vec<AnswerRow>, StoreError>;
    /// Writes `commit` atomically if the session is still at the version read and its model's
    /// bank still at [`SessionUpdate::bank`], else fails with [`StoreError::Changed`] and writes
    /// nothing. Fails with [`StoreError::Conflict`] (writing
    /// nothing) if the answer's sequence number or idempotency key is taken.
    async fn commit(self: Box<Self>, commit: &SessionCommit) -> Result<(), StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// Another commit changed the session since it was read: read it again and retry.
    #[error("the session changed since it was read")]
    Changed,
    /// The database is busy or unreachable (connection refused or lost, pool exhausted, lock
    /// timeout, serialisation failure); retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored row that does not decode: damaged data, or written by another version.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The store cannot work as configured (URL, file system, migrations).
    #[error("store misconfigured: {0}")]
    Misconfigured(String),
    /// Any other database error: a bug in a query or schema.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<codec::CodecError> for StoreError {
    fn from(e: codec::CodecError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// Models, their banks and their priors.
///
/// Every change an admin makes takes the [`AuditEntry`] that records it and writes it in the
/// same transaction: the change and its entry are stored together or not at all.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// Inserts a model; [`StoreError::Conflict`] if the name is taken.
    async fn create_model(&self, model: &ModelRecord, audit: &AuditEntry)
    -> Result<(), StoreError>;

    async fn get_model(&self, name: &str) -> Result<Option<ModelRecord>, StoreError>;

    async fn list_models(&self) -> Result<Vec<ModelRecord>, StoreError>;

    /// Deletes a model with its items, sessions, answers and profiles; returns the rows removed
    /// ([`StoreError::NotFound`] if there is no such model).
    async fn delete_model(&self, name: &str, audit: &AuditEntry) -> Result<u64, StoreError>;

    /// Inserts or replaces items in one transaction; returns the new bank version.
    async fn upsert_items(
        &self,
        model: &str,
        items: &[ItemRecord],
        audit: &AuditEntry,
    ) -> Result<i64, StoreError>;

    /// Deletes one item; false (and no audit entry) if it did not exist.
    async fn delete_item(
        &self,
        model: &str,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// Items ordered by id, those after `after`, at most `limit`.
    async fn list_items(
        &self,
        model: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ItemRecord>, StoreError>;

    /// Every version of the model's prior, oldest first.
    async fn model_priors(&self, model: &str) -> Result<Vec<PriorRecord>, StoreError>;

    /// Makes `prior` (whose version must be `expected_version + 1`) the model's prior, keeping
    /// the earlier versions, and bumps the bank version so every replica reloads the model;
    /// [`StoreError::Changed`] (and nothing written) if the model's prior is no longer at
    /// `expected_version`, [`StoreError::NotFound`] if there is no such model.
    async fn set_prior(
        &self,
        model: &str,
        expected_version: i64,
        prior: &PriorRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;

    /// The answer logs of the model's finished sessions, the latest one of each user.
    async fn finished_logs(&self, model: &str) -> Result<Vec<FinishedLog>, StoreError>;

    /// The whole bank and the version it was read at.
    async fn load_bank(&self, model: &str) -> Result<(i64, Vec<ItemRecord>), StoreError>;
}

/// Sessions, their answer logs and the profiles they finish into.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    async fn session_answers(&self, id: &str) -> Result<Vec<AnswerRow>, StoreError>;

    /// Reads a session to change it; [`StoreError::NotFound`] if there is no such session.
    async fn read_for_change(&self, id: &str) -> Result<Box<dyn SessionUpdate>, StoreError>;

    /// Changes a session as the caller last committed it (`session`, over the bank `bank`)
    /// without reading it: the commit applies only if neither moved since.
    async fn change_as_last_committed(
        &self,
        session: SessionRecord,
        bank: BankStamp,
    ) -> Result<Box<dyn SessionUpdate>, StoreError>;

    async fn get_profile(
        &self,
        user_id: &str,
        model: &str,
    ) -> Result<Option<ProfileRecord>, StoreError>;

    /// Erases every session, answer and profile of a user; returns the number of rows removed.
    async fn delete_user(&self, user_id: &str, audit: &AuditEntry) -> Result<u64, StoreError>;

    /// Active sessions of `model` created at or after `since_ms` (the demo's cap).
    async fn open_sessions(&self, model: &str, since_ms: i64) -> Result<i64, StoreError>;

    /// Sessions per status (for the `elicit_sessions` gauge).
    async fn sessions_by_status(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// The id of the session whose token has this hash.
    async fn session_by_token(&self, token_hash: &str) -> Result<Option<String>, StoreError>;
}

/// API keys, the audit trail and the secrets the service draws for itself.
#[async_trait]
pub trait AccessStore: Send + Sync {
    async fn create_key(&self, key: &ApiKeyRecord, audit: &AuditEntry) -> Result<(), StoreError>;

    /// Keys, newest first, revoked ones included.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// The key with this id, revoked or not.
    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Marks a key revoked at `audit.at_ms`; false (and no audit entry) if there is no such live
    /// key.
    async fn revoke_key(&self, id: &str, audit: &AuditEntry) -> Result<bool, StoreError>;

    /// Atomically: the live key `id` expires at `expires_ms` at the latest, and `successor` is
    /// created. False (and nothing changes) if there is no such live key.
    async fn rotate_key(
        &self,
        id: &str,
        successor: &ApiKeyRecord,
        expires_ms: i64,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;

    /// The key with this hash that is not revoked (it may have expired: callers compare
    /// `expires_ms` with their clock).
    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Audit entries, newest first.
    async fn audit_trail(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// A secret the service drew for itself when the database was set up (shared by every
    /// replica on it); [`StoreError::Corrupt`] if there is none by that name.
    async fn service_secret(&self, name: &str) -> Result<String, StoreError>;
}

/// Everything the service persists ([`CatalogStore`], [`SessionStore`], [`AccessStore`]: each
/// caller names the part it uses), and the database's health.
#[async_trait]
pub trait Store: CatalogStore + SessionStore + AccessStore + 'static {
    /// A cheap round trip to the database (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// (open, idle) pooled connections.
    fn pool_usage(&self) -> (u32, usize);
}
