//! Per-replica cache of what each session's next question needs (the engine's [`RunState`]:
//! posterior, bank statistics, asked pairs), so that an answer costs O(NJ) whatever the length of
//! the session, instead of a rebuild from the answer log.
//!
//! An entry is valid for one session version and one bank version: a session advanced by another
//! replica, or a bank changed since, is a miss, and the caller rebuilds the state from the log.
//! Entries are taken out while an answer is computed and put back only after its commit, so a
//! failed commit can never leave a state ahead of the database. Least recently used entries are
//! evicted past a byte budget.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::RunState;

struct Entry {
    version: i64,
    bank_version: i64,
    state: RunState,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Entries {
    by_session: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
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

    /// Removes and returns the state of `session` if it was left at exactly this session and
    /// bank version.
    pub fn take(&self, session: &str, version: i64, bank_version: i64) -> Option<RunState> {
        let mut entries = self.entries.lock().expect("run cache lock");
        let entry = entries.by_session.remove(session)?;
        entries.bytes -= entry.bytes;
        let hit = entry.version == version && entry.bank_version == bank_version;
        metrics::counter!("elicit_run_cache_total", "result" => if hit { "hit" } else { "miss" })
            .increment(1);
        hit.then_some(entry.state)
    }

    /// Keeps the state of `session` at this session and bank version.
    pub fn put(&self, session: &str, version: i64, bank_version: i64, state: RunState) {
        let bytes = state.size_bytes() + session.len();
        if bytes > self.budget_bytes {
            return;
        }
        let mut entries = self.entries.lock().expect("run cache lock");
        entries.clock += 1;
        let used = entries.clock;
        if let Some(old) = entries.by_session.insert(
            session.to_string(),
            Entry {
                version,
                bank_version,
                state,
                bytes,
                used,
            },
        ) {
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
    }
}
