//! A model's population prior learned from its finished sessions (empirical Bayes, GUIDE §5),
//! and restored. Every change makes a new prior version; sessions keep the version they started
//! from, so a refit never changes a session in flight.

use serde::{Deserialize, Serialize};

use super::audit::Actor;
use super::clock::now_ms;
use super::dto::PriorSpec;
use super::sessions::answer_log;
use super::{Service, ServiceError};
use crate::model::Posterior;
use crate::model::population::{EmOptions, em_prior_with};
use crate::store::{AuditAction, PriorRecord, StoreError};

/// Most EM iterations a refit may ask for.
const MAX_ITERATIONS: usize = 100;

/// Options of `POST /v1/models/{model}/prior:refit` (all optional).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefitPrior {
    /// κ: the current prior counts as this many users in the new one (default J + 2), so a
    /// refit from few sessions stays near it instead of collapsing.
    #[schema(minimum = 0.0, maximum = 1e6)]
    pub shrinkage: Option<f64>,
    /// EM iterations (default 20).
    #[schema(minimum = 1, maximum = 100, value_type = Option<u32>)]
    #[serde(default, deserialize_with = "whole_number")]
    pub iterations: Option<usize>,
}

/// A whole number, however JSON wrote it: JSON has one number type, so `85.0` is 85 (JSON
/// Schema's `integer` says the same).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let Some(x) = Option::<f64>::deserialize(d)? else {
        return Ok(None);
    };
    if x.fract() != 0.0 || !(0.0..=u32::MAX as f64).contains(&x) {
        return Err(serde::de::Error::custom(format!(
            "{x} is not a whole number of iterations"
        )));
    }
    Ok(Some(x as usize))
}

/// The model's prior after a refit or a restore.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriorChanged {
    pub model: String,
    /// The new version (sessions created from now on start from it).
    pub prior_version: i64,
    pub previous_version: i64,
    /// Finished sessions (latest per user) the prior was fitted to; for a restore, those of the
    /// restored version.
    pub users: i64,
    pub prior: PriorSpec,
}

impl Service {
    /// Refits the model's prior by EM over its finished sessions (the latest of each user): the
    /// E-step is each user's EP posterior from their answer log under the current estimate, the
    /// M-step the mean and spread of those posteriors, shrunk towards the current prior.
    pub async fn refit_prior(
        &self,
        model: &str,
        req: RefitPrior,
        actor: &Actor,
    ) -> Result<PriorChanged, ServiceError> {
        if let Some(kappa) = req.shrinkage
            && !(kappa.is_finite() && (0.0..=1e6).contains(&kappa))
        {
            return Err(ServiceError::invalid("shrinkage", "must be in [0, 1e6]"));
        }
        let iterations = req.iterations.unwrap_or(20);
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ServiceError::invalid(
                "iterations",
                format!("must be between 1 and {MAX_ITERATIONS}"),
            ));
        }
        let record = self.model(model).await?;
        // The refit needs the current prior, not the bank.
        let current = Posterior::new(record.prior_mean.clone(), record.prior_cov.clone())?;
        let logs = self.store.finished_logs(model).await?;
        if logs.is_empty() {
            return Err(ServiceError::NotNow(format!(
                "model '{model}' has no finished sessions to learn a prior from"
            )));
        }

        let options = EmOptions {
            iterations,
            shrinkage: req.shrinkage,
        };
        let answer_logs: Vec<_> = logs
            .iter()
            .map(|log| answer_log(&record, &log.answers))
            .collect();
        let prior = em_prior_with(logs.len(), &current, options, |estimate| {
            Ok(answer_logs
                .iter()
                .map(|log| {
                    let posterior = log
                        .final_posterior(estimate, record.spec.update_method, None)
                        .posterior;
                    (posterior.mean().clone(), posterior.cov().clone())
                })
                .collect())
        })?;
        let next = PriorRecord {
            version: record.prior_version + 1,
            mean: prior.mean().clone(),
            cov: prior.cov().clone(),
            users: logs.len() as i64,
            created_ms: now_ms(),
        };
        self.set_prior(
            &record.name,
            record.prior_version,
            next,
            AuditAction::PriorRefit,
            actor,
        )
        .await
    }

    /// Puts back the prior the current one replaced, exactly, as a new version.
    pub async fn restore_prior(
        &self,
        model: &str,
        actor: &Actor,
    ) -> Result<PriorChanged, ServiceError> {
        let record = self.model(model).await?;
        let previous = self
            .store
            .model_priors(model)
            .await?
            .into_iter()
            .filter(|p| p.version < record.prior_version)
            .max_by_key(|p| p.version)
            .ok_or_else(|| {
                ServiceError::NotNow(format!("model '{model}' has no earlier prior to restore"))
            })?;
        let next = PriorRecord {
            version: record.prior_version + 1,
            created_ms: now_ms(),
            ..previous
        };
        self.set_prior(
            &record.name,
            record.prior_version,
            next,
            AuditAction::PriorRestore,
            actor,
        )
        .await
    }

    async fn set_prior(
        &self,
        model: &str,
        current: i64,
        next: PriorRecord,
        action: AuditAction,
        actor: &Actor,
    ) -> Result<PriorChanged, ServiceError> {
        let audit = actor.audit(action, format!("models/{model}"));
        match self.store.set_prior(model, current, &next, &audit).await {
            Ok(()) => {}
            Err(StoreError::Changed) => {
                return Err(ServiceError::NotNow(format!(
                    "another change of model '{model}''s prior came first; retry"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(PriorChanged {
            model: model.to_string(),
            prior_version: next.version,
            previous_version: current,
            users: next.users,
            prior: PriorSpec::new(&next.mean, &next.cov),
        })
    }
}
