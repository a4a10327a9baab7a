//! Models held in memory with their item banks ([`LoadedModel`]), keyed by the model's bank
//! version so that every replica sees item (and prior) changes made through any other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nalgebra::DMatrix;

use super::ServiceError;
use crate::model::{Bank, Posterior};
use crate::store::{BankStamp, ModelRecord, Store};

/// A model loaded for answering: its record, its priors (validated once) and its bank with the
/// id ↔ index maps the service needs. It is cached per bank version: a model's dimensions and
/// noise never change, and a new prior bumps the bank version.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: ModelRecord,
    /// The model's current prior, validated (factorised) once when the bank was loaded.
    pub prior: Posterior,
    /// Every version of the model's prior (sessions replay under the one they started from).
    pub priors: HashMap<i64, Posterior>,
    pub version: i64,
    pub bank: Bank,
    pub ids: Vec<String>,
    pub index: HashMap<String, usize>,
    pub payloads: Vec<Option<serde_json::Value>>,
    /// Each item's group, by name.
    pub groups: Vec<Option<String>>,
}

impl LoadedModel {
    /// Approximate heap size in bytes: the features, the ids and their index, the groups, the
    /// payloads' top level and the coreset.
    pub fn size_bytes(&self) -> usize {
        let word = std::mem::size_of::<usize>();
        let ids: usize = self.ids.iter().map(|id| id.len()).sum();
        let n = self.ids.len();
        self.bank.len() * self.bank.dim() * 8
            + self.bank.len() * 4
            + 2 * ids
            + n * (3 * word) * 2
            + n * 4 * word
            + n * std::mem::size_of::<Option<serde_json::Value>>()
            + n * std::mem::size_of::<Option<String>>()
            + self.bank.space().size_bytes()
    }

    /// Which model and bank version this is.
    pub fn stamp(&self) -> BankStamp {
        BankStamp {
            model_created_ms: self.model.created_ms,
            version: self.version,
        }
    }

    pub fn item_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The prior a session that started at prior version `version` uses.
    pub fn prior_of(&self, version: i64) -> &Posterior {
        self.priors.get(&version).unwrap_or_else(|| {
            tracing::warn!(model = %self.model.name, version, "no such prior version; using the current prior");
            &self.prior
        })
    }
}

#[derive(Default)]
pub struct BankCache {
    banks: Mutex<HashMap<String, Arc<LoadedModel>>>,
    /// Held while a bank loads, so that the requests that find it stale at once wait for one
    /// load (O(N·J²) with the coreset) instead of each making its own.
    loading: tokio::sync::Mutex<()>,
}

impl BankCache {
    /// The bank of `model` at its current version, loaded from the store when stale.
    pub async fn get(
        &self,
        store: &dyn Store,
        model: &ModelRecord,
    ) -> Result<Arc<LoadedModel>, ServiceError> {
        if let Some(bank) = self.cached(&model.name, model.bank_stamp()) {
            return Ok(bank);
        }
        let _loading = self.loading.lock().await;
        if let Some(bank) = self.cached(&model.name, model.bank_stamp()) {
            return Ok(bank);
        }
        let (version, items) = store.load_bank(&model.name).await?;
        let j = model.spec.dimensions.len();
        let mut features = DMatrix::zeros(j, items.len());
        let mut group_ids: HashMap<Option<String>, u32> = HashMap::new();
        let mut groups = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.features.len() != j {
                return Err(ServiceError::Internal(format!(
                    "item '{}' has {} features, the model {j}",
                    item.id,
                    item.features.len()
                )));
            }
            features.set_column(i, &item.features);
            let next = group_ids.len() as u32;
            groups.push(*group_ids.entry(item.group.clone()).or_insert(next));
        }
        let bank =
            Bank::new(features, groups).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let prior = Posterior::new(model.prior_mean.clone(), model.prior_cov.clone())
            .map_err(|e| ServiceError::Internal(format!("model '{}' prior: {e}", model.name)))?;
        let mut priors = HashMap::new();
        for record in store.model_priors(&model.name).await? {
            let version = record.version;
            let posterior = Posterior::new(record.mean, record.cov).map_err(|e| {
                ServiceError::Internal(format!("model '{}' prior {version}: {e}", model.name))
            })?;
            priors.insert(version, posterior);
        }
        priors.insert(model.prior_version, prior.clone());
        let loaded = Arc::new(LoadedModel {
            model: ModelRecord {
                bank_version: version,
                ..model.clone()
            },
            prior,
            priors,
            version,
            bank,
            index: items
                .iter()
                .enumerate()
                .map(|(i, it)| (it.id.clone(), i))
                .collect(),
            ids: items.iter().map(|it| it.id.clone()).collect(),
            groups: items.iter().map(|it| it.group.clone()).collect(),
            payloads: items.into_iter().map(|it| it.payload).collect(),
        });
        // The bank's index of extreme items, built once here (O(N·J²), off the async workers)
        // so that no session's question pays for it.
        let prepared = loaded.clone();
        tokio::task::spawn_blocking(move || prepared.bank.prepare())
            .await
            .map_err(|e| ServiceError::Internal(format!("preparing the bank: {e}")))?;
        metrics::gauge!("elicit_bank_bytes", "model" => model.name.clone())
            .set(loaded.size_bytes() as f64);
        self.banks
            .lock()
            .expect("bank cache lock")
            .insert(model.name.clone(), loaded.clone());
        Ok(loaded)
    }

    /// The cached bank of `model` if it is of the same model and at least at the stamp's version.
    pub fn cached(&self, model: &str, stamp: BankStamp) -> Option<Arc<LoadedModel>> {
        self.banks
            .lock()
            .expect("bank cache lock")
            .get(model)
            .filter(|b| b.model.created_ms == stamp.model_created_ms && b.version >= stamp.version)
            .cloned()
    }

    /// Forgets a deleted model's bank.
    pub fn forget(&self, model: &str) {
        self.banks.lock().expect("bank cache lock").remove(model);
        metrics::gauge!("elicit_bank_bytes", "model" => model.to_string()).set(0.0);
    }
}
