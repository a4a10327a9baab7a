//! The application layer: what each API operation does, in terms of the engine and the store.
//! Knows nothing of HTTP; handlers translate between the wire and these calls.

pub mod audit;
mod bank;
pub mod clock;
pub mod demo;
pub mod dto;
mod error;
pub mod keys;
mod models;
pub mod priors;
mod runs;
mod scoring;
mod sessions;
pub(crate) mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use bank::{BankCache, LoadedModel};
pub use error::ServiceError;
pub use runs::RunCache;
pub use sessions::{AnswerAck, IdempotencyKey, Submission, SubmitOptions};

use crate::store::Store;

/// Limits on request sizes, shared by validation and documentation.
pub mod limits {
    pub const MAX_ID_LEN: usize = 256;
    pub const MAX_MODEL_NAME_LEN: usize = 64;
    pub const MAX_ITEMS_PER_UPSERT: usize = 100_000;
    pub const MAX_SCORE_CANDIDATES: usize = 10_000;
    pub const MAX_PAIRWISE_CANDIDATES: usize = 100;
    pub const MAX_QUESTIONS: usize = 200;
    pub const MAX_PAGE: usize = 1_000;
    /// Longest label of a dimension's end.
    pub const MAX_END_LABEL_LEN: usize = 64;
}

/// Default memory budget of the run cache: about 2,000 sessions over a 1,000-item bank at J = 16.
pub const DEFAULT_RUN_CACHE_BYTES: usize = 256 << 20;

/// The service: a store, the per-model banks and resolved credentials cached in memory, and
/// whether the process is draining.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn Store>,
    banks: Arc<BankCache>,
    runs: Arc<RunCache>,
    principals: Arc<keys::PrincipalCache>,
    audit_secret: Arc<audit::AuditSecret>,
    /// SHA-256 of the bootstrap admin key, if one is configured.
    admin_key_hash: Option<String>,
    draining: Arc<AtomicBool>,
}

impl Service {
    pub fn new(store: Arc<dyn Store>, admin_key: Option<&str>) -> Self {
        Self {
            store,
            banks: Arc::new(BankCache::default()),
            runs: Arc::new(RunCache::new(DEFAULT_RUN_CACHE_BYTES)),
            principals: Arc::new(keys::PrincipalCache::default()),
            audit_secret: Arc::default(),
            admin_key_hash: admin_key.filter(|k| !k.is_empty()).map(keys::sha256_hex),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sets the memory budget of the per-session run cache ([`RunCache`]).
    pub fn with_run_cache_bytes(mut self, bytes: usize) -> Self {
        self.runs = Arc::new(RunCache::new(bytes));
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// From now on readiness fails, so load balancers stop sending new requests.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
