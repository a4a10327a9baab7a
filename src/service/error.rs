//! What can go wrong in a request, independent of how it is reported (HTTP maps each kind to a
//! status and an RFC 9457 problem type).

use crate::model::ModelError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A syntactically valid request with an unusable value; `field` names it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The answer is not for the question currently asked.
    #[error("{0}")]
    StaleQuestion(String),
    /// The resource's current state does not allow the operation (e.g. a prior refit without
    /// finished sessions, or another change of the same prior came first).
    #[error("{0}")]
    NotNow(String),
    /// The session no longer asks questions.
    #[error("{0}")]
    SessionClosed(String),
    /// The same idempotency key came with a different request.
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    /// The client expected the session at another version.
    #[error("the session is at version {current}, not {expected}")]
    VersionMismatch { expected: i64, current: i64 },
    /// A public resource is at its configured capacity (e.g. open demo sessions); retry later.
    #[error("{0}")]
    AtCapacity(String),
    /// The database is busy or unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a damaged database: reported as 500 and logged.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ModelError> for ServiceError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Invalid { field, message } => Self::Invalid { field, message },
            ModelError::TiesDisabled => Self::invalid("choice", e.to_string()),
        }
    }
}

/// Only an unreachable or busy database is worth a retry (503); a corrupt row, a misconfigured
/// store or a failing query is the server's fault (500).
impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::AlreadyExists(what),
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Changed => {
                Self::Unavailable("the session changed under a concurrent request; retry".into())
            }
            other @ (StoreError::Corrupt(_)
            | StoreError::Misconfigured(_)
            | StoreError::Database(_)) => Self::Internal(other.to_string()),
        }
    }
}
