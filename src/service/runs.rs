//! Per-replica cache of each session as this replica last committed it: the session row, the bank
//! it was computed against and the engine's [`RunState`] (posterior, asked pairs, the coreset's
//! statistics; O(J² + answers), nothing per bank item, so the cache holds as many sessions on a
//! million-item bank as on a 40-item one). An answer to the question the cached session has open
//! is computed from it without reading the session (the commit is conditional on the session's
//! and the bank's version, so a session another replica advanced, or a bank changed since, fails
//! the commit and is read again), and costs O(J²) plus a question whatever the length of the
//! session, instead of a rebuild from the log. `elicit_run_cache_bytes` and
//! `elicit_run_cache_sessions` report what it holds.
//!
//! Entries are taken out while an answer is computed and put back only after its commit, so a
//! failed commit can never leave a state ahead of the database. Least recently used entries are
//! evicted past a byte budget.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::RunState;
use crate::store::{BankStamp, SessionRecord};

/// A session as committed by this replica, with the engine state that produced it.
pub struct CachedRun {
    pub session: SessionRecord,
    /// The model and bank version the state was computed over.
    pub bank: BankStamp,
    pub state: RunState,
}

impl CachedRun {
    /// Whether this is the state of `session` as read from the store over the bank `bank`.
    pub fn matches(&self, session: &SessionRecord, bank: BankStamp) -> bool {
        self.session.version == session.version && self.bank == bank
    }

    fn size_bytes(&self) -> usize {
        let s = &self.session;
        let floats = s.mean.len() + s.cov.len();
        self.state.size_bytes()
            + floats * std::mem::size_of::<f64>()
            + std::mem::size_of::<Self>()
            + s.id.len()
            + s.user_id.len()
            + s.model.len()
            + s.token_hash.len()
    }
}

struct Entry {
    run: CachedRun,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Entries {
    by_session: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

impl Entries {
    /// Publishes the cache's size as gauges.
    fn report(&self) {
        metrics::gauge!("elicit_run_cache_bytes").set(self.bytes as f64);
        metrics::gauge!("elicit_run_cache_sessions").set(self.by_session.len() as f64);
    }
}

pub struct RunCache {
    budget_bytes: usize,
    entries: Mutex<Entries>,
}

impl RunCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            entries: Mutex::default(),
        }
    }

    /// Removes and returns what this replica last committed for `session`, if it still has it.
    pub fn take(&self, session: &str) -> Option<CachedRun> {
        let mut entries = self.entries.lock().expect("run cache lock");
        let entry = entries.by_session.remove(session)?;
        entries.bytes -= entry.bytes;
        entries.report();
        Some(entry.run)
    }

    /// Keeps `run`, the session as just committed.
    pub fn put(&self, run: CachedRun) {
        let bytes = run.size_bytes();
        if bytes > self.budget_bytes {
            return;
        }
        let mut entries = self.entries.lock().expect("run cache lock");
        entries.clock += 1;
        let used = entries.clock;
        if let Some(old) = entries
            .by_session
            .insert(run.session.id.clone(), Entry { run, bytes, used })
        {
            entries.bytes -= old.bytes;
        }
        entries.bytes += bytes;
        while entries.bytes > self.budget_bytes {
            let oldest = entries
                .by_session
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
                .expect("over budget means not empty");
            let evicted = entries.by_session.remove(&oldest).expect("present");
            entries.bytes -= evicted.bytes;
        }
        entries.report();
    }
}
