//! Personalised scoring for LLM gateways.

use std::collections::HashSet;

use nalgebra::DMatrix;

use super::dto::{GuardView, ProfileRef, ProfileSource, ScoreRequest, ScoreResponse, ScoreView};
use super::limits::{MAX_ID_LEN, MAX_PAIRWISE_CANDIDATES, MAX_SCORE_CANDIDATES};
use super::validate::{check_budget, check_features, check_id};
use super::{Service, ServiceError};
use crate::model::guard::Guard;
use crate::model::{Posterior, score};
use crate::store::ModelRecord;

impl Service {
    /// Scores candidates for a user: mean μᵀφ, sd √(φᵀΣφ), rank. A candidate is either inline
    /// (`id` + `features`) or a bank item (`item_id`). Users without a profile get the population
    /// prior, and the response says so.
    pub async fn score(&self, req: ScoreRequest) -> Result<ScoreResponse, ServiceError> {
        check_id("user_id", &req.user_id, MAX_ID_LEN)?;
        if let Some(bits) = req.max_divergence_bits {
            check_budget("max_divergence_bits", bits)?;
        }
        if req.pairwise && req.candidates.len() > MAX_PAIRWISE_CANDIDATES {
            return Err(ServiceError::invalid(
                "pairwise",
                format!(
                    "pairwise probabilities are available for at most {MAX_PAIRWISE_CANDIDATES} candidates"
                ),
            ));
        }
        if req.candidates.is_empty() || req.candidates.len() > MAX_SCORE_CANDIDATES {
            return Err(ServiceError::invalid(
                "candidates",
                format!("must hold between 1 and {MAX_SCORE_CANDIDATES} candidates"),
            ));
        }
        let model = self.model(&req.model).await?;
        let j = model.spec.dimensions.len();
        let needs_bank = req.candidates.iter().any(|c| c.item_id.is_some());
        let bank = if needs_bank {
            Some(self.banks.get(self.store.as_ref(), &model).await?)
        } else {
            None
        };

        let mut ids = Vec::with_capacity(req.candidates.len());
        let mut seen = HashSet::with_capacity(req.candidates.len());
        let mut features = DMatrix::zeros(j, req.candidates.len());
        for (i, c) in req.candidates.iter().enumerate() {
            let field = format!("candidates[{i}]");
            let id = match (&c.item_id, &c.id, &c.features) {
                (Some(item_id), None, None) => {
                    let bank = bank
                        .as_ref()
                        .expect("loaded when any candidate names an item");
                    let index = bank.item_index(item_id).ok_or_else(|| {
                        ServiceError::invalid(
                            format!("{field}.item_id"),
                            format!("unknown item '{item_id}'"),
                        )
                    })?;
                    features.set_column(i, &bank.bank.features(index));
                    item_id.clone()
                }
                (None, Some(id), Some(phi)) => {
                    check_id(&format!("{field}.id"), id, MAX_ID_LEN)?;
                    check_features(&format!("{field}.features"), phi, j)?;
                    features.set_column(i, &nalgebra::DVector::from_column_slice(phi));
                    id.clone()
                }
                _ => {
                    return Err(ServiceError::invalid(
                        field,
                        "give either {\"item_id\"} or {\"id\", \"features\"}",
                    ));
                }
            };
            if !seen.insert(id.clone()) {
                return Err(ServiceError::invalid(
                    field,
                    format!("id '{id}' appears twice"),
                ));
            }
            ids.push(id);
        }

        // The population prior, factorised only when it is used (a fallback or a guard).
        let prior = || {
            Posterior::new(model.prior_mean.clone(), model.prior_cov.clone())
                .map_err(|e| ServiceError::Internal(e.to_string()))
        };
        let profile = self.store.get_profile(&req.user_id, &model.name).await?;
        let unreliable = profile.as_ref().is_some_and(|p| p.unreliable);
        let (posterior, profile_ref, guard) = match profile {
            Some(p) if !p.unreliable || req.allow_unreliable => {
                let own = Posterior::new(p.mean, p.cov)
                    .map_err(|e| ServiceError::Internal(e.to_string()))?;
                let (posterior, guard) = guarded(&model, prior, own, req.max_divergence_bits)?;
                let profile_ref = ProfileRef {
                    source: ProfileSource::User,
                    version: p.version,
                    answers: p.answers,
                    status: Some(p.status),
                    unreliable,
                };
                (posterior, profile_ref, guard)
            }
            fallback => {
                if unreliable {
                    metrics::counter!("elicit_unreliable_fallbacks_total").increment(1);
                }
                let profile_ref = ProfileRef {
                    source: ProfileSource::Population,
                    version: fallback.as_ref().map_or(0, |p| p.version),
                    answers: fallback.as_ref().map_or(0, |p| p.answers),
                    status: fallback.as_ref().map(|p| p.status),
                    unreliable,
                };
                (prior()?, profile_ref, None)
            }
        };
        let pairwise = req.pairwise.then(|| {
            let matrix = score::preference_matrix(&posterior, &model.spec.noise, &features);
            matrix
                .row_iter()
                .map(|r| r.iter().copied().collect())
                .collect()
        });
        let scores = score::score(&posterior, &features)
            .into_iter()
            .zip(ids)
            .map(|(s, id)| ScoreView {
                id,
                mean: s.mean,
                sd: s.sd,
                rank: s.rank,
            })
            .collect();
        Ok(ScoreResponse {
            model: model.name,
            user_id: req.user_id,
            scores,
            profile: profile_ref,
            guard,
            pairwise,
        })
    }
}

/// The user's belief under the model's and the request's guard (the tighter budget wins); the
/// belief unchanged when neither sets one.
fn guarded(
    model: &ModelRecord,
    prior: impl FnOnce() -> Result<Posterior, ServiceError>,
    own: Posterior,
    requested_bits: Option<f64>,
) -> Result<(Posterior, Option<GuardView>), ServiceError> {
    let spec = &model.spec.guard;
    let budget = match (spec.max_divergence_bits, requested_bits) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if budget.is_none() && spec.fixed_dimensions.is_empty() {
        return Ok((own, None));
    }
    let fixed = spec
        .fixed_dimensions
        .iter()
        .filter_map(|name| model.spec.dimensions.iter().position(|d| d == name))
        .collect();
    let out = Guard {
        budget_bits: budget.unwrap_or(f64::INFINITY),
        fixed,
    }
    .apply(&prior()?, &own)?;
    let view = GuardView {
        max_divergence_bits: budget,
        alpha: out.alpha,
        divergence_bits: out.divergence_bits,
        fixed_dimensions: spec.fixed_dimensions.clone(),
    };
    Ok((out.posterior, Some(view)))
}
