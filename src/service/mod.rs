//! The application layer: what each API operation does, in terms of the engine and the store.
//! Knows nothing of HTTP; handlers translate between the wire and these calls.

mod bank;
pub mod dto;
mod error;
mod models;
mod scoring;
mod sessions;

use std::sync::Arc;

pub use bank::{BankCache, LoadedBank};
pub use error::ServiceError;

use crate::store::Store;

/// Limits on request sizes, shared by validation and documentation.
pub mod limits {
    pub const MAX_ID_LEN: usize = 256;
    pub const MAX_MODEL_NAME_LEN: usize = 64;
    pub const MAX_ITEMS_PER_UPSERT: usize = 100_000;
    pub const MAX_SCORE_CANDIDATES: usize = 10_000;
    pub const MAX_QUESTIONS: usize = 200;
    pub const MAX_PAGE: usize = 1_000;
}

/// The service: a store and the per-model banks cached in memory.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    banks: Arc<BankCache>,
}

impl Service {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            banks: Arc::new(BankCache::default()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Checks an identifier: non-empty, at most `max` bytes, no control characters.
pub(crate) fn check_id(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    if value.is_empty() {
        return Err(ServiceError::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ServiceError::invalid(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a feature vector: J finite numbers.
pub(crate) fn check_features(
    field: &str,
    features: &[f64],
    dimensions: usize,
) -> Result<(), ServiceError> {
    if features.len() != dimensions {
        return Err(ServiceError::invalid(
            field,
            format!(
                "has {} values, the model has {dimensions} dimensions",
                features.len()
            ),
        ));
    }
    if let Some(i) = features.iter().position(|v| !v.is_finite()) {
        return Err(ServiceError::invalid(
            format!("{field}[{i}]"),
            "must be a finite number",
        ));
    }
    Ok(())
}
