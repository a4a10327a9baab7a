//! The public demo: the bundled model loaded on a first start, demo sessions anyone may start
//! (capped), and the ranking a session's posterior gives the items it has not shown.

use std::collections::HashSet;
use std::time::Duration;

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::audit::Actor;
use super::clock::now_ms;
use super::dto::{CreateModel, CreateSession, ItemIn, PriorSpec, SessionCreated, UpsertItems};
use super::limits::MAX_PAGE;
use super::{Service, ServiceError};
use crate::demo::{self, DemoModel};
use crate::model::kway::AnswerFormat;
use crate::model::{NoiseModel, score};
use crate::store::{AuditAction, AuditQuery, LoggedAnswer};

/// Limits on the public demo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemoLimits {
    /// Open demo sessions at most: active and started within `session_ttl`.
    pub max_open_sessions: u32,
    pub session_ttl: Duration,
}

/// Questions a demo session asks: rankings of four answers to one prompt, each worth about three
/// pairwise answers (BENCHMARKS.md, "Rankings"), so six learn what twenty pairs would.
pub const DEMO_QUESTIONS: usize = 6;

/// Answers a demo question shows, all to the same prompt, for the user to put in order.
pub const DEMO_CHOICES: usize = 4;

/// An item the session has not shown, scored by the session's posterior and by the population's.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RankedItem {
    pub id: String,
    pub group: Option<String>,
    pub payload: Option<serde_json::Value>,
    /// E[λᵀφ] under the session's posterior, and its sd.
    pub mean: f64,
    pub sd: f64,
    /// 1 = the item the session's posterior scores highest among the unseen items.
    pub rank: usize,
    /// E[λᵀφ] under the model's prior (the population), and the rank it gives.
    pub population_mean: f64,
    pub population_rank: usize,
}

/// The items a session has not shown, best first by its posterior.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionRanking {
    pub session_id: String,
    pub answers: i64,
    /// How many items the session has not shown (`items` holds at most `limit` of them).
    pub unseen: usize,
    pub items: Vec<RankedItem>,
}

impl Service {
    /// On a store where the demo model was never deleted by an admin: creates it if it is missing
    /// and fills its bank if it is empty. True if anything was written.
    pub async fn load_demo_model(&self) -> Result<bool, ServiceError> {
        let target = format!("models/{}", demo::MODEL);
        let deleted = self
            .store
            .audit_trail(&AuditQuery {
                action: Some(AuditAction::ModelDelete),
                target: Some(target),
                before: None,
                limit: 1,
            })
            .await?;
        if !deleted.is_empty() {
            return Ok(false);
        }
        let spec = DemoModel::bundled();
        let actor = Actor::first_run();
        let mut wrote = false;
        if self.store.get_model(demo::MODEL).await?.is_none() {
            match self.create_model(demo_model_request(&spec), &actor).await {
                // Another replica starting at the same moment created it.
                Ok(_) | Err(ServiceError::AlreadyExists(_)) => wrote = true,
                Err(e) => return Err(e),
            }
        }
        if self
            .store
            .list_items(demo::MODEL, None, 1)
            .await?
            .is_empty()
        {
            let items = spec
                .items()
                .into_iter()
                .map(|item| ItemIn {
                    id: item.id,
                    features: item.features,
                    group: Some(item.group),
                    payload: Some(serde_json::json!({"prompt": item.prompt, "text": item.text})),
                })
                .collect();
            self.upsert_items(demo::MODEL, UpsertItems { items }, &actor)
                .await?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Starts a demo session for a new anonymous user, unless the open demo sessions are at the
    /// cap ([`ServiceError::AtCapacity`]) or there is no demo model (not found). Two starts at the
    /// same moment may both pass a cap they reach together: it is exact up to the concurrent
    /// starts.
    pub async fn start_demo_session(
        &self,
        limits: &DemoLimits,
    ) -> Result<SessionCreated, ServiceError> {
        let since = now_ms().saturating_sub(limits.session_ttl.as_millis() as i64);
        let open = self.store.open_sessions(demo::MODEL, since).await?;
        if open >= i64::from(limits.max_open_sessions) {
            metrics::counter!("elicit_demo_rejections_total", "reason" => "capacity").increment(1);
            return Err(ServiceError::AtCapacity(format!(
                "the demo has {open} open sessions, its limit; try again in a minute"
            )));
        }
        let created = self
            .create_session(CreateSession {
                model: demo::MODEL.into(),
                user_id: format!("demo-{}", uuid::Uuid::new_v4()),
                max_questions: Some(DEMO_QUESTIONS),
                strategy: None,
                items: None,
                exclude_pairs: None,
                probes: None,
                checks: None,
                choices: Some(DEMO_CHOICES),
                answer: Some(AnswerFormat::Rank),
                targets: None,
            })
            .await?;
        metrics::counter!("elicit_demo_sessions_total").increment(1);
        Ok(created)
    }

    /// The items session `id` has not shown, ranked by its posterior beside the population's
    /// ranking (at most `limit`, default 100, best first).
    pub async fn session_ranking(
        &self,
        id: &str,
        limit: Option<usize>,
    ) -> Result<SessionRanking, ServiceError> {
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let session = self.session(id).await?;
        let model = self.model(&session.model).await?;
        let bank = self.banks.get(self.store.as_ref(), &model).await?;
        let mut shown: HashSet<String> = HashSet::new();
        for answer in self.store.session_answers(id).await? {
            match answer.answer {
                LoggedAnswer::Pair { .. } => shown.extend([answer.item_a, answer.item_b]),
                LoggedAnswer::Pick { items, .. } => shown.extend(items),
                // A statement names a dimension, not an item.
                LoggedAnswer::Statement { .. } => {}
            }
        }
        if let Some(question) = &session.question {
            shown.extend(question.items().cloned());
        }
        let unseen: Vec<usize> = (0..bank.ids.len())
            .filter(|&i| !shown.contains(&bank.ids[i]))
            .collect();
        let (user, population) = if unseen.is_empty() {
            (vec![], vec![])
        } else {
            let features = DMatrix::from_columns(
                &unseen
                    .iter()
                    .map(|&i| bank.bank.features(i))
                    .collect::<Vec<DVector<f64>>>(),
            );
            let posterior = crate::model::Posterior::new(session.mean.clone(), session.cov.clone())
                .map_err(|e| ServiceError::Internal(format!("session '{id}' posterior: {e}")))?;
            (
                score::score(&posterior, &features),
                score::score(&bank.prior, &features),
            )
        };
        let mut items: Vec<RankedItem> = unseen
            .iter()
            .zip(user.iter().zip(&population))
            .map(|(&i, (u, p))| RankedItem {
                id: bank.ids[i].clone(),
                group: bank.groups[i].clone(),
                payload: bank.payloads[i].clone(),
                mean: u.mean,
                sd: u.sd,
                rank: u.rank,
                population_mean: p.mean,
                population_rank: p.rank,
            })
            .collect();
        items.sort_by_key(|item| item.rank);
        items.truncate(limit);
        Ok(SessionRanking {
            session_id: session.id,
            answers: session.answers,
            unseen: unseen.len(),
            items,
        })
    }
}

/// The request that creates the demo model: its dimensions, the population prior N(m, I), and
/// answer noise with ties (a demo page offers "about the same") and a small lapse rate.
fn demo_model_request(spec: &DemoModel) -> CreateModel {
    let j = spec.dimensions.len();
    CreateModel {
        name: spec.name.clone(),
        dimensions: spec.dimensions.clone(),
        ends: Some(spec.ends.iter().cloned().map(Some).collect()),
        prior: Some(PriorSpec::new(
            &DVector::from_vec(spec.prior_mean.clone()),
            &DMatrix::identity(j, j),
        )),
        noise: Some(NoiseModel {
            beta: 1.5,
            lapse: 0.05,
            tie_threshold: 0.5,
        }),
        update_method: None,
        strategy: None,
        reliability: None,
        guard: None,
        probes: None,
        checks: None,
        choices: None,
        answer: None,
        strength_threshold: None,
        targets: None,
        lapse_per_user: None,
    }
}
