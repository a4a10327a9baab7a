//! Onboarding sessions: create, ask, answer, finish; profiles and erasure. This module is the
//! API and its read–compute–conditional-commit loop; what a client submits is parsed and checked
//! in [`submission`], the engine is driven in [`engine`], and what the API shows is built in
//! [`views`].

mod engine;
mod submission;
mod views;

use std::sync::Arc;

use rand::RngExt;

use super::audit::Actor;
use super::bank::LoadedModel;
use super::clock::now_ms;
use super::dto::{
    CreateSession, CurrentQuestion, Erased, PosteriorView, ProfileView, SessionCreated, SessionView,
};
use super::limits::{MAX_ID_LEN, MAX_QUESTIONS};
use super::runs::CachedRun;
use super::validate::{
    check_checks, check_excluded_pairs, check_id, check_known_items, check_probes, check_questions,
    check_session_id,
};
use super::{Service, ServiceError};
use crate::model::elicitation::Response;
use crate::model::history::AnswerLog;
use crate::model::{Elicitation, Posterior, StopReason, Strategy};
use crate::store::{
    AnswerCommit, AnswerRow, AuditAction, LoggedAnswer, SessionCommit, SessionRecord,
    SessionSettings, SessionStatus, SessionUpdate, StoreError,
};

pub(super) use engine::answer_log;
use engine::{
    aimed, allowed_indices, apply_exclusions, asks_about_deleted_item, continue_run, rebuild_run,
    run_config, session_posterior, set_next_question, target_indices,
};
pub use submission::{IdempotencyKey, Submission};
use submission::{answer_direction, loggable};
use views::{answer_view, profile_of, question_view, session_view, summary_of};

/// Questions expected to yield less than this stop the session early.
const MIN_INFORMATION_BITS: f64 = 0.01;
const DEFAULT_MAX_QUESTIONS: usize = 15;

/// How many times a change to a session is computed again after another commit overtook it (or
/// its model's bank changed while it was read).
const COMMIT_ATTEMPTS: usize = 5;

/// Awaits an attempt (a future of `Result<Option<T>, ServiceError>`, `None` when another commit
/// overtook it) until it commits, [`COMMIT_ATTEMPTS`] times at most. (A macro rather than a
/// function over an async closure: such closures' futures are not provably `Send`.)
macro_rules! until_committed {
    ($attempt:expr) => {{
        let mut outcome = Err(ServiceError::Unavailable(
            "the session kept changing under concurrent requests; retry".into(),
        ));
        for _ in 0..COMMIT_ATTEMPTS {
            match $attempt.await {
                Ok(None) => {
                    metrics::counter!("elicit_conflicts_total", "kind" => "overtaken").increment(1)
                }
                done => {
                    outcome = done.map(|d| d.expect("committed"));
                    break;
                }
            }
        }
        outcome
    }};
}

/// An answer request, validated and fingerprinted.
pub(super) struct AnswerRequest {
    req: Submission,
    request_hash: String,
    options: SubmitOptions,
}

/// How a submission is applied.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// The client's key for this submission: a retry with it is applied once and answered with
    /// the first reply.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The session version the client saw: a submission to any other version is refused
    /// ([`ServiceError::VersionMismatch`]).
    pub expected_version: Option<i64>,
    /// Whether the reply carries the full posterior covariance.
    pub covariance: bool,
}

/// The result of posting an answer: the exact JSON of an [`AnswerView`], as first sent.
#[derive(Debug, Clone)]
pub struct AnswerAck {
    /// The body, byte for byte the one sent the first time (replays return it unchanged).
    pub body: String,
    /// The session version after the answer (the ETag).
    pub version: i64,
    /// True when an earlier response was replayed for the same Idempotency-Key.
    pub replayed: bool,
}

/// The part of an [`AnswerView`] a replay needs besides its bytes.
#[derive(serde::Deserialize)]
pub(super) struct VersionOf {
    version: i64,
}

impl Service {
    pub async fn create_session(&self, req: CreateSession) -> Result<SessionCreated, ServiceError> {
        check_id("user_id", &req.user_id, MAX_ID_LEN)?;
        let max_questions = req.max_questions.unwrap_or(DEFAULT_MAX_QUESTIONS);
        if max_questions == 0 || max_questions > MAX_QUESTIONS {
            return Err(ServiceError::invalid(
                "max_questions",
                format!("must be between 1 and {MAX_QUESTIONS}"),
            ));
        }
        let model = self.model(&req.model).await?;
        let bank = self.banks.get(self.store.as_ref(), &model).await?;
        if let Some(items) = &req.items {
            check_known_items("items", items, &bank)?;
        }
        let exclude_pairs = req.exclude_pairs.unwrap_or_default();
        check_excluded_pairs(&exclude_pairs, &bank)?;
        if let Some(probes) = &req.probes {
            check_probes(probes)?;
        }
        if let Some(checks) = &req.checks {
            check_checks(checks)?;
        }
        if let Some(targets) = &req.targets {
            check_known_items("targets", targets, &bank)?;
        }
        let settings = SessionSettings {
            max_questions,
            strategy: req.strategy.unwrap_or(model.spec.strategy),
            items: req.items,
            exclude_pairs,
            probes: req.probes,
            checks: req.checks,
            choices: req.choices.unwrap_or(model.spec.choices),
            answer: req.answer.unwrap_or(model.spec.answer),
            targets: req.targets,
        };
        check_questions(settings.strategy, settings.choices, settings.answer)?;
        if settings.strategy == Strategy::Epig && target_indices(&settings, &bank).len() < 2 {
            return Err(ServiceError::invalid(
                "targets",
                "strategy epig needs at least two target items of the bank (on the session or the model)",
            ));
        }
        let prior = bank.prior.clone();
        let allowed = allowed_indices(&settings, &bank);
        let id = uuid::Uuid::now_v7().to_string();
        let run = Elicitation::new(
            &bank.bank,
            prior.clone(),
            run_config(&model, &settings),
            allowed.as_deref(),
        )?;
        let mut run = aimed(run, &id, &settings, &bank);
        apply_exclusions(&mut run, &settings, &bank);
        if run.remaining_pairs() == 0 {
            return Err(ServiceError::invalid(
                if settings.items.is_some() {
                    "items"
                } else {
                    "model"
                },
                "no two of the session's items share a group, so no question can be asked",
            ));
        }
        let token = hex::encode(rand::rng().random::<[u8; 32]>());
        let now = now_ms();
        let mut session = SessionRecord {
            id: id.clone(),
            user_id: req.user_id,
            model: model.name.clone(),
            token_hash: super::keys::sha256_hex(&token),
            status: SessionStatus::Active,
            stop_reason: None,
            settings,
            mean: prior.mean().clone(),
            cov: prior.cov().clone(),
            version: 1,
            answers: 0,
            question: None,
            created_ms: now,
            updated_ms: now,
            prior_version: model.prior_version,
        };
        set_next_question(&mut session, &run, &bank);
        self.store.create_session(&session).await?;
        let created = SessionCreated {
            token,
            session: session_view(
                &bank,
                &session,
                (&[], &AnswerLog::new(Vec::new())),
                &prior,
                None,
            ),
        };
        self.runs.put(CachedRun {
            session,
            bank: bank.stamp(),
            state: run.into_state(),
        });
        Ok(created)
    }

    pub async fn get_session(&self, id: &str) -> Result<SessionView, ServiceError> {
        let session = self.session(id).await?;
        let model = self.model(&session.model).await?;
        let bank = self.banks.get(self.store.as_ref(), &model).await?;
        let answers = self.store.session_answers(id).await?;
        let posterior = session_posterior(&bank, &session, &answers);
        let log = answer_log(&bank.model, &answers);
        Ok(session_view(
            &bank,
            &session,
            (&answers, &log),
            &posterior,
            None,
        ))
    }

    /// The question waiting for an answer (the same one until it is answered).
    pub async fn current_question(&self, id: &str) -> Result<CurrentQuestion, ServiceError> {
        let session = self.session(id).await?;
        let model = self.model(&session.model).await?;
        let bank = self.banks.get(self.store.as_ref(), &model).await?;
        let (session, bank) = if session
            .question
            .as_ref()
            .is_some_and(|q| asks_about_deleted_item(q, &bank))
        {
            // An item of the question was deleted from the bank: choose another question.
            until_committed!(self.replace_question(id))?
        } else {
            (session, bank)
        };
        Ok(CurrentQuestion {
            session_id: session.id.clone(),
            status: session.status,
            question: session
                .question
                .as_ref()
                .map(|q| question_view(q, &bank, &session.settings)),
        })
    }

    /// One attempt at replacing a question about a deleted item (none if another request did).
    async fn replace_question(
        &self,
        id: &str,
    ) -> Result<Option<(SessionRecord, Arc<LoadedModel>)>, ServiceError> {
        let (mut update, bank) = self.read_with_bank(id).await?;
        let mut next = update.session().clone();
        let stale = next.status == SessionStatus::Active
            && next
                .question
                .as_ref()
                .is_some_and(|q| asks_about_deleted_item(q, &bank));
        if !stale {
            return Ok(Some((next, bank)));
        }
        let cached = self.runs.take(id);
        let run = self.run(update.as_mut(), &bank, cached).await?;
        next.version += 1;
        next.updated_ms = now_ms();
        set_next_question(&mut next, &run, &bank);
        let commit = SessionCommit {
            session: next,
            answer: None,
            profile: None,
        };
        if !committed(update.commit(&commit).await)? {
            return Ok(None);
        }
        self.runs.put(CachedRun {
            session: commit.session.clone(),
            bank: bank.stamp(),
            state: run.into_state(),
        });
        Ok(Some((commit.session, bank)))
    }

    /// Applies an answer exactly once: the posterior is updated, the answer logged and the next
    /// question chosen in one atomic commit, which succeeds only if no other commit changed the
    /// session since it was read (else the whole answer is computed again from a fresh read). The
    /// cost does not grow with the session: the engine state comes from the run cache (rebuilt
    /// from the log only on a miss), and the Idempotency-Key is checked by the unique index on
    /// (session, key). When this replica committed the session last, an answer to its open
    /// question is computed from the cache without reading the session at all: one round trip to
    /// the database, the conditional commit.
    ///
    /// A retry of an applied answer no longer answers the open question (the session moved on),
    /// so only then is the key looked up, to replay the stored reply; an answer to the open
    /// question whose key was used before collides with the index at commit (409).
    ///
    /// A statement ([`Submission::Statement`]) goes the same way, except that it always reads
    /// the session (a retried statement is told from a new one only by its stored reply).
    pub async fn submit(
        &self,
        id: &str,
        submission: Submission,
        options: SubmitOptions,
    ) -> Result<AnswerAck, ServiceError> {
        submission.check()?;
        check_session_id(id)?;
        let request = AnswerRequest {
            request_hash: submission.request_hash(),
            req: submission,
            options,
        };
        until_committed!(self.answer_once(id, &request))
    }

    /// One attempt at an answer: `None` if another commit overtook it.
    ///
    /// The session's cached run is taken out for the attempt; one the attempt did not use (a
    /// rejected answer, a replay) goes back, so that a client's error or retry does not cost the
    /// next answer a rebuild from the log.
    async fn answer_once(
        &self,
        id: &str,
        request: &AnswerRequest,
    ) -> Result<Option<AnswerAck>, ServiceError> {
        let mut cached = self.runs.take(id);
        let outcome = self.answer_with(id, request, &mut cached).await;
        if let Some(unused) = cached {
            self.runs.put(unused);
        }
        outcome
    }

    /// [`Self::answer_once`] with the session's cached run, if any, which it takes when it uses it.
    async fn answer_with(
        &self,
        id: &str,
        request: &AnswerRequest,
        cached: &mut Option<CachedRun>,
    ) -> Result<Option<AnswerAck>, ServiceError> {
        // This replica committed the session last and the request answers the question it has
        // open: no read. If another replica moved the session (or the bank) since, the commit
        // fails and the next attempt reads it. (A statement always reads: a retried one is told
        // from a new one only by its stored reply.)
        if let Submission::Answer(_) = request.req
            && let Some(entry) = cached.as_ref()
            && let Some(bank) = self.banks.cached(&entry.session.model, entry.bank)
            && bank.stamp() == entry.bank
            && let Ok(answer) = loggable(
                &entry.session,
                &bank,
                &request.req,
                request.options.expected_version,
            )
        {
            let CachedRun {
                session,
                bank: stamp,
                state,
            } = cached.take().expect("checked above");
            metrics::counter!("elicit_run_cache_total", "result" => "hit").increment(1);
            let run = continue_run(&bank, &session, state)?;
            let update = self.store.change_as_last_committed(session, stamp).await?;
            return self.apply_answer(update, &bank, run, answer, request).await;
        }

        let (mut update, bank) = self.read_with_bank(id).await?;
        let AnswerRequest {
            req,
            request_hash,
            options,
        } = request;
        let answers_open_question = update.session().status == SessionStatus::Active
            && matches!(req, Submission::Answer(answer) if update
                .session()
                .question
                .as_ref()
                .is_some_and(|q| q.id == answer.question_id));
        if !answers_open_question
            && let Some(key) = &options.idempotency_key
            && let Some(reply) = update.stored_reply(key.as_str()).await?
        {
            if &reply.request_hash != request_hash {
                return Err(ServiceError::IdempotencyKeyReused);
            }
            metrics::counter!("elicit_idempotent_replays_total").increment(1);
            let VersionOf { version } = serde_json::from_str(&reply.body)
                .map_err(|e| ServiceError::Internal(format!("stored reply: {e}")))?;
            return Ok(Some(AnswerAck {
                body: reply.body,
                version,
                replayed: true,
            }));
        }
        let answer = loggable(update.session(), &bank, req, options.expected_version)?;
        let run = self.run(update.as_mut(), &bank, cached.take()).await?;
        self.apply_answer(update, &bank, run, answer, request).await
    }

    /// Applies a checked answer to the session being changed and commits it: `None` if another
    /// commit overtook it.
    async fn apply_answer(
        &self,
        update: Box<dyn SessionUpdate>,
        bank: &LoadedModel,
        mut run: Elicitation<'_>,
        (response, logged): (Response, LoggedAnswer),
        request: &AnswerRequest,
    ) -> Result<Option<AnswerAck>, ServiceError> {
        let mut next = update.session().clone();
        // A statement leaves the open question open; an answer closes it.
        let (item_a, item_b) = match &response {
            Response::Statement { dimension, .. } => (
                bank.model.spec.dimensions[*dimension].clone(),
                String::new(),
            ),
            _ => {
                let question = next.question.take().expect("checked answerable");
                (question.item_a, question.item_b)
            }
        };
        let started = std::time::Instant::now();
        let direction = answer_direction(bank, &response);
        let log_evidence = run.respond(response)?;
        metrics::histogram!("elicit_update_duration_seconds")
            .record(started.elapsed().as_secs_f64());

        let now = now_ms();
        next.version += 1;
        next.answers += 1;
        next.mean = run.posterior().mean().clone();
        next.cov = run.posterior().cov().clone();
        next.updated_ms = now;
        if next.question.is_none() {
            set_next_question(&mut next, &run, bank);
        }
        let view = answer_view(
            bank,
            &next,
            run.prior(),
            run.posterior(),
            request.options.covariance,
        );
        let body =
            serde_json::to_string(&view).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let commit = SessionCommit {
            profile: Some(profile_of(&next, run.is_unreliable())),
            answer: Some(AnswerCommit {
                row: AnswerRow {
                    seq: next.answers,
                    item_a,
                    item_b,
                    answer: logged,
                    log_evidence,
                    direction,
                    idempotency_key: request
                        .options
                        .idempotency_key
                        .as_ref()
                        .map(|key| key.as_str().to_owned()),
                    request_hash: request.request_hash.clone(),
                    created_ms: now,
                    lapse: run.history().last().map(|r| r.lapse),
                },
                response: body.clone(),
            }),
            session: next,
        };
        let done = match update.commit(&commit).await {
            Err(StoreError::Conflict(_)) if commit_has_key(&commit) => {
                return Err(ServiceError::IdempotencyKeyReused);
            }
            done => committed(done)?,
        };
        if !done {
            return Ok(None);
        }
        let version = commit.session.version;
        self.runs.put(CachedRun {
            session: commit.session,
            bank: bank.stamp(),
            state: run.into_state(),
        });
        metrics::counter!("elicit_answers_applied_total").increment(1);
        Ok(Some(AnswerAck {
            body,
            version,
            replayed: false,
        }))
    }

    /// Finishes a session: EP over its whole answer log gives the final posterior, which becomes
    /// the user's profile. Finishing a finished session returns it unchanged.
    pub async fn finish(&self, id: &str) -> Result<SessionView, ServiceError> {
        check_session_id(id)?;
        until_committed!(self.finish_once(id))
    }

    async fn finish_once(&self, id: &str) -> Result<Option<SessionView>, ServiceError> {
        let (mut update, bank) = self.read_with_bank(id).await?;
        let model = &bank.model;
        let answers = update.answers().await?;
        let mut next = update.session().clone();
        let log = answer_log(model, &answers);
        if next.status == SessionStatus::Finished {
            let posterior = session_posterior(&bank, &next, &answers);
            let view = session_view(&bank, &next, (&answers, &log), &posterior, None);
            return Ok(Some(view));
        }
        // The run this replica cached for this very version took the reliability verdict over
        // every answer: EP continues that verdict's run instead of sweeping from the start.
        let earlier = self
            .runs
            .take(id)
            .filter(|cached| cached.matches(&next, bank.stamp()))
            .and_then(|cached| cached.state.into_reliability_run());
        let fit = log.final_posterior(
            bank.prior_of(next.prior_version),
            model.spec.update_method,
            earlier,
        );
        // Counted when EP ran (a log with rankings is replayed instead).
        if fit.judgement.is_some() {
            let start = if fit.continued { "verdict" } else { "fresh" };
            metrics::counter!("elicit_finish_refinements_total", "model" => next.model.clone(), "start" => start)
                .increment(1);
        }
        let (refined, judgement) = (fit.posterior, fit.judgement);
        next.version += 1;
        next.status = SessionStatus::Finished;
        next.stop_reason = Some(next.stop_reason.unwrap_or(StopReason::Finished));
        next.question = None;
        next.mean = refined.mean().clone();
        next.cov = refined.cov().clone();
        next.updated_ms = now_ms();
        let view = session_view(&bank, &next, (&answers, &log), &refined, judgement);
        let commit = SessionCommit {
            profile: Some(profile_of(&next, view.diagnostics.unreliable)),
            session: next,
            answer: None,
        };
        if !committed(update.commit(&commit).await)? {
            return Ok(None);
        }
        // Counted once per finished session, after the commit (a lost race retries).
        if view.diagnostics.unreliable {
            metrics::counter!("elicit_unreliable_sessions_total").increment(1);
        }
        metrics::histogram!("elicit_session_lapse_rate").record(view.diagnostics.lapse_rate);
        metrics::histogram!("elicit_session_questions").record(view.answers as f64);
        Ok(Some(view))
    }

    /// Reads a session for a change, with its model's bank at the version read (a stale bank is
    /// reloaded first).
    async fn read_with_bank(
        &self,
        id: &str,
    ) -> Result<(Box<dyn SessionUpdate>, Arc<LoadedModel>), ServiceError> {
        for _ in 0..COMMIT_ATTEMPTS {
            let update = self.store.read_for_change(id).await?;
            let (model, stamp) = (update.session().model.clone(), update.bank());
            if let Some(bank) = self.banks.cached(&model, stamp) {
                return Ok((update, bank));
            }
            // On SQLite the update holds the write lock: release it while the bank loads.
            drop(update);
            let record = self.model(&model).await?;
            self.banks.get(self.store.as_ref(), &record).await?;
        }
        Err(ServiceError::Unavailable(
            "the item bank kept changing; retry".into(),
        ))
    }

    /// The engine run of a session being changed: `cached` if it is this very session version
    /// over this bank, else rebuilt from the log.
    async fn run<'b>(
        &self,
        update: &mut dyn SessionUpdate,
        bank: &'b LoadedModel,
        cached: Option<CachedRun>,
    ) -> Result<Elicitation<'b>, ServiceError> {
        let hit = cached.filter(|c| c.matches(update.session(), bank.stamp()));
        metrics::counter!("elicit_run_cache_total", "result" => if hit.is_some() { "hit" } else { "miss" })
            .increment(1);
        match hit {
            Some(cached) => continue_run(bank, update.session(), cached.state),
            None => {
                let answers = update.answers().await?;
                rebuild_run(bank, update.session(), &answers)
            }
        }
    }

    pub async fn profile(&self, user_id: &str, model: &str) -> Result<ProfileView, ServiceError> {
        check_id("user_id", user_id, MAX_ID_LEN)?;
        let record = self.model(model).await?;
        let p = self
            .store
            .get_profile(user_id, model)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("profile of user '{user_id}' for model '{model}'"))
            })?;
        let posterior = Posterior::new(p.mean.clone(), p.cov.clone())?;
        Ok(ProfileView {
            posterior: PosteriorView::new(&record.spec.dimensions, &p.mean, &p.cov),
            summary: summary_of(&record, &posterior)?,
            user_id: p.user_id,
            model: p.model,
            session_id: p.session_id,
            status: p.status,
            version: p.version,
            answers: p.answers,
            updated_ms: p.updated_ms,
            unreliable: p.unreliable,
            prior_version: p.prior_version,
        })
    }

    pub async fn delete_user(&self, user_id: &str, actor: &Actor) -> Result<Erased, ServiceError> {
        check_id("user_id", user_id, MAX_ID_LEN)?;
        let target = self.user_target(user_id).await?;
        let audit = actor.audit(AuditAction::UserErase, target);
        let rows_removed = self.store.delete_user(user_id, &audit).await?;
        Ok(Erased {
            user_id: user_id.to_string(),
            rows_removed,
        })
    }

    /// The session with this id, or NotFound; also used to check session tokens.
    pub async fn session(&self, id: &str) -> Result<SessionRecord, ServiceError> {
        check_session_id(id)?;
        self.store
            .get_session(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("session '{id}'")))
    }
}

/// `Ok(true)` if a commit was applied, `Ok(false)` if another commit overtook it.
pub(super) fn committed(result: Result<(), StoreError>) -> Result<bool, ServiceError> {
    match result {
        Ok(()) => Ok(true),
        Err(StoreError::Changed) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether a commit logs an answer with an idempotency key (the only thing in it that can
/// collide: a commit applies only at the version read, which rules out a taken sequence number).
pub(super) fn commit_has_key(commit: &SessionCommit) -> bool {
    commit
        .answer
        .as_ref()
        .is_some_and(|a| a.row.idempotency_key.is_some())
}
