//! Models and their item banks (admin operations).

use std::collections::HashSet;

use nalgebra::{DMatrix, DVector};

use super::audit::Actor;
use super::clock::now_ms;
use super::dto::{
    CreateModel, ItemIn, ItemsPage, ModelErased, ModelList, ModelView, PriorSpec, UpsertItems,
    UpsertResult,
};
use super::limits::{MAX_ID_LEN, MAX_ITEMS_PER_UPSERT, MAX_PAGE};
use super::validate::{
    check_checks, check_ends, check_features, check_guard, check_id, check_lapse_prior,
    check_model_name, check_probes, check_questions, check_reliability, check_targets,
};
use super::{Service, ServiceError};
use crate::model::{MAX_DIMENSIONS, Posterior};
use crate::store::{AuditAction, ItemRecord, ModelRecord, ModelSpec};

impl Service {
    pub async fn create_model(
        &self,
        req: CreateModel,
        actor: &Actor,
    ) -> Result<ModelView, ServiceError> {
        check_model_name(&req.name)?;
        let j = req.dimensions.len();
        if j == 0 || j > MAX_DIMENSIONS {
            return Err(ServiceError::invalid(
                "dimensions",
                format!("must name between 1 and {MAX_DIMENSIONS} dimensions"),
            ));
        }
        let mut seen = HashSet::new();
        for (i, name) in req.dimensions.iter().enumerate() {
            check_id(&format!("dimensions[{i}]"), name, MAX_ID_LEN)?;
            if !seen.insert(name) {
                return Err(ServiceError::invalid(
                    format!("dimensions[{i}]"),
                    format!("'{name}' appears twice"),
                ));
            }
        }
        let ends = req.ends.unwrap_or_default();
        check_ends(&ends, j)?;
        let prior = match &req.prior {
            None => Posterior::isotropic(j, 1.0)?,
            Some(spec) => prior_from_spec(spec, j)?,
        };
        let noise = req.noise.unwrap_or_default();
        noise.validate()?;
        let reliability = req.reliability.unwrap_or_default();
        check_reliability(&reliability)?;
        let guard = req.guard.unwrap_or_default();
        check_guard(&guard, &req.dimensions)?;
        if let Some(probes) = &req.probes {
            check_probes(probes)?;
        }
        if let Some(checks) = &req.checks {
            check_checks(checks)?;
        }
        if let Some(prior) = &req.lapse_per_user {
            check_lapse_prior(prior)?;
        }
        let strategy = req.strategy.unwrap_or_default();
        let choices = req.choices.unwrap_or(2);
        let answer = req.answer.unwrap_or_default();
        check_questions(strategy, choices, answer)?;
        let strength_threshold = req
            .strength_threshold
            .unwrap_or(crate::model::elicitation::DEFAULT_STRENGTH_THRESHOLD);
        if !(strength_threshold.is_finite()
            && strength_threshold > 0.0
            && strength_threshold <= 20.0)
        {
            return Err(ServiceError::invalid(
                "strength_threshold",
                "must be a number in (0, 20]",
            ));
        }
        let targets = req.targets.unwrap_or_default();
        check_targets(&targets)?;
        let record = ModelRecord {
            name: req.name,
            spec: ModelSpec {
                dimensions: req.dimensions,
                ends,
                noise,
                update_method: req.update_method.unwrap_or_default(),
                strategy,
                reliability,
                guard,
                probes: req.probes,
                checks: req.checks,
                lapse_per_user: req.lapse_per_user,
                choices,
                answer,
                strength_threshold,
                targets,
            },
            prior_mean: prior.mean().clone(),
            prior_cov: prior.cov().clone(),
            bank_version: 0,
            created_ms: now_ms(),
            prior_version: 1,
        };
        let audit = actor.audit(AuditAction::ModelCreate, model_target(&record.name));
        self.store.create_model(&record, &audit).await?;
        Ok(model_view(&record))
    }

    pub async fn get_model(&self, name: &str) -> Result<ModelView, ServiceError> {
        Ok(model_view(&self.model(name).await?))
    }

    pub async fn list_models(&self) -> Result<ModelList, ServiceError> {
        let models = self.store.list_models().await?;
        Ok(ModelList {
            models: models.iter().map(model_view).collect(),
        })
    }

    /// Inserts or replaces up to 10⁵ items atomically; all are validated before anything is written.
    pub async fn upsert_items(
        &self,
        model: &str,
        req: UpsertItems,
        actor: &Actor,
    ) -> Result<UpsertResult, ServiceError> {
        let record = self.model(model).await?;
        let j = record.spec.dimensions.len();
        if req.items.is_empty() {
            return Err(ServiceError::invalid("items", "must not be empty"));
        }
        if req.items.len() > MAX_ITEMS_PER_UPSERT {
            return Err(ServiceError::invalid(
                "items",
                format!("at most {MAX_ITEMS_PER_UPSERT} items per call"),
            ));
        }
        let mut seen = HashSet::with_capacity(req.items.len());
        let mut records = Vec::with_capacity(req.items.len());
        for (i, item) in req.items.into_iter().enumerate() {
            check_id(&format!("items[{i}].id"), &item.id, MAX_ID_LEN)?;
            if !seen.insert(item.id.clone()) {
                return Err(ServiceError::invalid(
                    format!("items[{i}].id"),
                    format!("'{}' appears twice", item.id),
                ));
            }
            check_features(&format!("items[{i}].features"), &item.features, j)?;
            if let Some(group) = &item.group {
                check_id(&format!("items[{i}].group"), group, MAX_ID_LEN)?;
            }
            records.push(ItemRecord {
                id: item.id,
                features: DVector::from_vec(item.features),
                group: item.group,
                payload: item.payload,
            });
        }
        let audit = actor.audit(AuditAction::ItemsUpsert, model_target(model));
        let bank_version = self.store.upsert_items(model, &records, &audit).await?;
        Ok(UpsertResult {
            upserted: records.len(),
            bank_version,
        })
    }

    pub async fn list_items(
        &self,
        model: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ItemsPage, ServiceError> {
        self.model(model).await?;
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let items = self.store.list_items(model, after, limit).await?;
        let next_after = (items.len() == limit)
            .then(|| items.last().map(|i| i.id.clone()))
            .flatten();
        Ok(ItemsPage {
            items: items
                .into_iter()
                .map(|i| ItemIn {
                    id: i.id,
                    features: i.features.iter().copied().collect(),
                    group: i.group,
                    payload: i.payload,
                })
                .collect(),
            next_after,
        })
    }

    /// Deletes a model and everything of it: items, sessions, answers, profiles.
    pub async fn delete_model(
        &self,
        name: &str,
        actor: &Actor,
    ) -> Result<ModelErased, ServiceError> {
        let audit = actor.audit(AuditAction::ModelDelete, model_target(name));
        let rows_removed = self.store.delete_model(name, &audit).await?;
        self.banks.forget(name);
        Ok(ModelErased {
            model: name.to_string(),
            rows_removed,
        })
    }

    pub async fn delete_item(
        &self,
        model: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<(), ServiceError> {
        self.model(model).await?;
        let target = format!("{}/items/{id}", model_target(model));
        let audit = actor.audit(AuditAction::ItemDelete, target);
        if self.store.delete_item(model, id, &audit).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!(
                "item '{id}' of model '{model}'"
            )))
        }
    }

    /// The model record, or NotFound.
    pub(crate) async fn model(&self, name: &str) -> Result<ModelRecord, ServiceError> {
        self.store
            .get_model(name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("model '{name}'")))
    }
}

/// How the audit trail names a model.
fn model_target(name: &str) -> String {
    format!("models/{name}")
}

fn prior_from_spec(spec: &PriorSpec, j: usize) -> Result<Posterior, ServiceError> {
    if spec.mean.len() != j {
        return Err(ServiceError::invalid(
            "prior.mean",
            format!(
                "has {} values, the model has {j} dimensions",
                spec.mean.len()
            ),
        ));
    }
    if spec.cov.len() != j || spec.cov.iter().any(|row| row.len() != j) {
        return Err(ServiceError::invalid(
            "prior.cov",
            format!("must be a {j}×{j} matrix"),
        ));
    }
    let cov = DMatrix::from_fn(j, j, |r, c| spec.cov[r][c]);
    Ok(Posterior::new(DVector::from_vec(spec.mean.clone()), cov)?)
}

pub(crate) fn model_view(m: &ModelRecord) -> ModelView {
    ModelView {
        name: m.name.clone(),
        dimensions: m.spec.dimensions.clone(),
        ends: (0..m.spec.dimensions.len())
            .map(|d| m.spec.ends.get(d).cloned().flatten())
            .collect(),
        prior: PriorSpec::new(&m.prior_mean, &m.prior_cov),
        noise: m.spec.noise,
        update_method: m.spec.update_method,
        strategy: m.spec.strategy,
        reliability: m.spec.reliability,
        guard: m.spec.guard.clone(),
        probes: m.spec.probes,
        checks: m.spec.checks,
        lapse_per_user: m.spec.lapse_per_user,
        choices: m.spec.choices,
        answer: m.spec.answer,
        strength_threshold: m.spec.strength_threshold,
        targets: m.spec.targets.clone(),
        bank_version: m.bank_version,
        created_ms: m.created_ms,
        prior_version: m.prior_version,
    }
}
