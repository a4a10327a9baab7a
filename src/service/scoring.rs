//! Personalised scoring for LLM gateways.

use std::collections::HashSet;

use nalgebra::DMatrix;

use super::dto::{ProfileRef, ProfileSource, ScoreRequest, ScoreResponse, ScoreView};
use super::limits::{MAX_ID_LEN, MAX_PAIRWISE_CANDIDATES, MAX_SCORE_CANDIDATES};
use super::{Service, ServiceError, check_features, check_id};
use crate::model::{Posterior, score};

impl Service {
    /// Scores candidates for a user: mean μᵀφ, sd √(φᵀΣφ), rank. A candidate is either inline
    /// (`id` + `features`) or a bank item (`item_id`). Users without a profile get the population
    /// prior, and the response says so.
    pub async fn score(&self, req: ScoreRequest) -> Result<ScoreResponse, ServiceError> {
        check_id("user_id", &req.user_id, MAX_ID_LEN)?;
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

        let profile = self.store.get_profile(&req.user_id, &model.name).await?;
        let (posterior, profile_ref) = match profile {
            Some(p) => (
                Posterior::new(p.mean, p.cov).map_err(|e| ServiceError::Internal(e.to_string()))?,
                ProfileRef {
                    source: ProfileSource::User,
                    version: p.version,
                    answers: p.answers,
                    status: Some(p.status),
                },
            ),
            None => (
                Posterior::new(model.prior_mean.clone(), model.prior_cov.clone())
                    .map_err(|e| ServiceError::Internal(e.to_string()))?,
                ProfileRef {
                    source: ProfileSource::Population,
                    version: 0,
                    answers: 0,
                    status: None,
                },
            ),
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
            pairwise,
        })
    }
}
