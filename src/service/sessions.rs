//! Onboarding sessions: create, ask, answer, finish; profiles and erasure.

use std::collections::{HashMap, HashSet};

use nalgebra::DVector;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sha2::{Digest, Sha256};

use std::sync::Arc;

use super::audit::Actor;
use super::bank::LoadedBank;
use super::dto::{
    AnswerIn, AnswerKind, AnswerView, CreateSession, CurrentQuestion, DiagnosticsView, Erased,
    ItemRef, PosteriorView, ProfileView, QuestionAnswer, QuestionView, SessionCreated, SessionView,
    StatementIn, StatementView,
};
use super::limits::{MAX_ID_LEN, MAX_QUESTIONS};
use super::runs::CachedRun;
use super::{Service, ServiceError, check_id};
use crate::model::Pair;
use crate::model::elicitation::{
    AnswerRecord, Next, Response, statement_direction, statement_outcome,
};
use crate::model::epig::Targets;
use crate::model::history::{AnswerLog, ReliabilityFit, Step};
use crate::model::kway;
use crate::model::summary::{ProfileSummary, summarise};
use crate::model::{
    Choice, Elicitation, ElicitationConfig, NoiseModel, Posterior, RunState, StopReason,
    StoppingRule, Strategy,
};
use crate::store::{
    AnswerCommit, AnswerRow, AuditAction, LoggedAnswer, ModelRecord, ProfileRecord, QuestionRecord,
    SessionCommit, SessionRecord, SessionSettings, SessionStatus, SessionUpdate, StoreError,
    now_ms,
};

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
struct AnswerRequest {
    req: Submission,
    idempotency_key: Option<String>,
    request_hash: String,
    if_match: Option<i64>,
    covariance: bool,
}

/// What a client adds to a session's answer log.
pub enum Submission {
    /// An answer to the session's open question.
    Answer(AnswerIn),
    /// The user's own word on one dimension: evidence as a graded answer to a comparison of two
    /// items one feature unit apart along that dimension alone ([`Response::Statement`]), with
    /// the model's noise. It is logged, replayed and idempotent like an answer, leaves the open
    /// question as it is, and does not count against `max_questions`. A dimension the guard
    /// keeps at the population's value is refused.
    Statement(StatementIn),
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
struct VersionOf {
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
            super::models::check_probes(probes)?;
        }
        if let Some(checks) = &req.checks {
            super::models::check_checks(checks)?;
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
        super::models::check_questions(settings.strategy, settings.choices, settings.answer)?;
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
            session: session_view(&bank, &session, &[], &prior, None),
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
        Ok(session_view(&bank, &session, &answers, &posterior, None))
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
    ) -> Result<Option<(SessionRecord, Arc<LoadedBank>)>, ServiceError> {
        let (mut update, bank) = self.open(id).await?;
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
        idempotency_key: Option<String>,
        if_match: Option<i64>,
        covariance: bool,
    ) -> Result<AnswerAck, ServiceError> {
        if let Some(key) = &idempotency_key {
            check_id("Idempotency-Key", key, MAX_ID_LEN)?;
        }
        submission.check()?;
        check_session_id(id)?;
        let request = AnswerRequest {
            request_hash: submission.request_hash(),
            req: submission,
            idempotency_key,
            if_match,
            covariance,
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
            && let Ok(answer) = loggable(&entry.session, &bank, &request.req, request.if_match)
        {
            let CachedRun {
                session,
                bank: stamp,
                state,
            } = cached.take().expect("checked above");
            metrics::counter!("elicit_run_cache_total", "result" => "hit").increment(1);
            let run = continue_run(&bank, &session, state)?;
            let update = self.store.resume_session(session, stamp).await?;
            return self.apply_answer(update, &bank, run, answer, request).await;
        }

        let (mut update, bank) = self.open(id).await?;
        let AnswerRequest {
            req,
            idempotency_key,
            request_hash,
            if_match,
            ..
        } = request;
        let answers_open_question = update.session().status == SessionStatus::Active
            && matches!(req, Submission::Answer(answer) if update
                .session()
                .question
                .as_ref()
                .is_some_and(|q| q.id == answer.question_id));
        if !answers_open_question
            && let Some(key) = idempotency_key
            && let Some(reply) = update.stored_reply(key).await?
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
        let answer = loggable(update.session(), &bank, req, *if_match)?;
        let run = self.run(update.as_mut(), &bank, cached.take()).await?;
        self.apply_answer(update, &bank, run, answer, request).await
    }

    /// Applies a checked answer to the session being changed and commits it: `None` if another
    /// commit overtook it.
    async fn apply_answer(
        &self,
        update: Box<dyn SessionUpdate>,
        bank: &LoadedBank,
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
            request.covariance,
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
                    idempotency_key: request.idempotency_key.clone(),
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
        let (mut update, bank) = self.open(id).await?;
        let model = &bank.model;
        let answers = update.answers().await?;
        let mut next = update.session().clone();
        if next.status == SessionStatus::Finished {
            let posterior = session_posterior(&bank, &next, &answers);
            return Ok(Some(session_view(&bank, &next, &answers, &posterior, None)));
        }
        let (refined, reliability_fit) = answer_log(model, &answers)
            .final_posterior(bank.prior_of(next.prior_version), model.spec.update_method);
        next.version += 1;
        next.status = SessionStatus::Finished;
        next.stop_reason = Some(next.stop_reason.unwrap_or(StopReason::Finished));
        next.question = None;
        next.mean = refined.mean().clone();
        next.cov = refined.cov().clone();
        next.updated_ms = now_ms();
        let view = session_view(&bank, &next, &answers, &refined, reliability_fit);
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
    async fn open(
        &self,
        id: &str,
    ) -> Result<(Box<dyn SessionUpdate>, Arc<LoadedBank>), ServiceError> {
        for _ in 0..COMMIT_ATTEMPTS {
            let update = self.store.update_session(id).await?;
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
        bank: &'b LoadedBank,
        cached: Option<CachedRun>,
    ) -> Result<Elicitation<'b>, ServiceError> {
        let hit = cached.filter(|c| c.matches(update.session(), bank.stamp()));
        metrics::counter!("elicit_run_cache_total", "result" => if hit.is_some() { "hit" } else { "miss" })
            .increment(1);
        match hit {
            Some(cached) => continue_run(bank, update.session(), cached.state),
            None => {
                let answers = update.answers().await?;
                resume(bank, update.session(), &answers)
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
fn committed(result: Result<(), StoreError>) -> Result<bool, ServiceError> {
    match result {
        Ok(()) => Ok(true),
        Err(StoreError::Changed) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether a commit logs an answer with an idempotency key (the only thing in it that can
/// collide: a commit applies only at the version read, which rules out a taken sequence number).
fn commit_has_key(commit: &SessionCommit) -> bool {
    commit
        .answer
        .as_ref()
        .is_some_and(|a| a.row.idempotency_key.is_some())
}

/// Session ids are UUIDs: anything else names no session.
fn check_session_id(id: &str) -> Result<(), ServiceError> {
    match uuid::Uuid::parse_str(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(ServiceError::NotFound(format!("session '{id}'"))),
    }
}

impl Submission {
    /// The checks a submission's fields need before the session is read: ids' lengths and
    /// characters, a ranking's size.
    fn check(&self) -> Result<(), ServiceError> {
        match self {
            Submission::Answer(req) => {
                check_id("question_id", &req.question_id, MAX_ID_LEN)?;
                if let Some(choice) = &req.choice {
                    check_id("choice", choice, MAX_ID_LEN)?;
                }
                if let Some(ranking) = &req.ranking {
                    if !(1..=kway::MAX_CHOICES).contains(&ranking.len()) {
                        return Err(ServiceError::invalid(
                            "ranking",
                            format!("lists 1 to {} items", kway::MAX_CHOICES),
                        ));
                    }
                    for item in ranking {
                        check_id("ranking", item, MAX_ID_LEN)?;
                    }
                }
                Ok(())
            }
            Submission::Statement(req) => check_id("dimension", &req.dimension, MAX_ID_LEN),
        }
    }

    /// The fingerprint a retry with the same Idempotency-Key must match. A plain pair answer
    /// keeps the form answers had before strengths, picks and rankings existed, so a retry
    /// across those upgrades still matches.
    fn request_hash(&self) -> String {
        let text = match self {
            Submission::Answer(req) => {
                let choice = req.choice.as_deref().unwrap_or_default();
                let plain = match (choice, req.strength) {
                    ("a", None) => Some(Choice::A),
                    ("b", None) => Some(Choice::B),
                    ("tie", None) => Some(Choice::Tie),
                    ("skip", None) => Some(Choice::Skip),
                    _ => None,
                };
                match (plain, &req.ranking) {
                    (_, Some(ranking)) => format!(
                        "{}\u{1f}{choice}\u{1f}rank\u{1f}{}",
                        req.question_id,
                        ranking.join("\u{1e}")
                    ),
                    (Some(choice), None) => format!("{}\u{1f}{choice:?}", req.question_id),
                    (None, None) => {
                        format!("{}\u{1f}{choice}\u{1f}{:?}", req.question_id, req.strength)
                    }
                }
            }
            Submission::Statement(req) => format!(
                "statement\u{1f}{}\u{1f}{:?}\u{1f}{:?}",
                req.dimension, req.prefer, req.strength
            ),
        };
        hex::encode(Sha256::digest(text))
    }
}

/// What a submission adds to the log, for the engine and for the log ([`answerable`],
/// [`stated`]).
fn loggable(
    current: &SessionRecord,
    bank: &LoadedBank,
    submission: &Submission,
    if_match: Option<i64>,
) -> Result<(Response, LoggedAnswer), ServiceError> {
    check_open(current, if_match)?;
    match submission {
        Submission::Answer(req) => answerable(current, bank, req),
        Submission::Statement(req) => stated(bank, req),
    }
}

/// The session takes submissions: it is active and, if `If-Match` was sent, at that version.
fn check_open(current: &SessionRecord, if_match: Option<i64>) -> Result<(), ServiceError> {
    if let Some(expected) = if_match
        && expected != current.version
    {
        return Err(ServiceError::VersionMismatch {
            expected,
            current: current.version,
        });
    }
    if current.status != SessionStatus::Active {
        return Err(ServiceError::SessionClosed(format!(
            "the session is {}; it asks no more questions",
            current.status.as_str()
        )));
    }
    Ok(())
}

/// A statement names a dimension of the model that the guard does not hold at the population's
/// value.
fn stated(bank: &LoadedBank, req: &StatementIn) -> Result<(Response, LoggedAnswer), ServiceError> {
    let spec = &bank.model.spec;
    let dimension = spec.dimension_index(&req.dimension).ok_or_else(|| {
        ServiceError::invalid(
            "dimension",
            format!(
                "'{}' is not a dimension of model '{}'",
                req.dimension, bank.model.name
            ),
        )
    })?;
    if spec.guard.fixed_dimensions.contains(&req.dimension) {
        return Err(ServiceError::invalid(
            "dimension",
            format!(
                "'{}' is fixed at the population's value (the model's guard): a statement cannot move it",
                req.dimension
            ),
        ));
    }
    Ok((
        Response::Statement {
            dimension,
            prefer: req.prefer,
            strength: req.strength,
        },
        LoggedAnswer::Statement {
            prefer: req.prefer,
            strength: req.strength,
        },
    ))
}

/// What `req` says about the current question, for the engine and for the log: the question's
/// items must still be in the bank. A pair question takes a, b, tie, skip or one of its two item ids (with an optional
/// strength for a or b); a question of three or more takes one of its item ids or skip.
fn answerable(
    current: &SessionRecord,
    bank: &LoadedBank,
    req: &AnswerIn,
) -> Result<(Response, LoggedAnswer), ServiceError> {
    let question = current
        .question
        .as_ref()
        .ok_or_else(|| ServiceError::SessionClosed("the session has no open question".into()))?;
    if req.question_id != question.id {
        return Err(ServiceError::StaleQuestion(format!(
            "question '{}' is not the current question ('{}')",
            req.question_id, question.id
        )));
    }
    let items: Vec<usize> = question
        .items()
        .map(|id| bank.item_index(id))
        .collect::<Option<_>>()
        .ok_or_else(|| ServiceError::StaleQuestion(
            "an item of the current question was deleted from the bank; GET the question again for a new one".into(),
        ))?;
    let shown: Vec<&String> = question.items().collect();
    if items.len() == 2 {
        let pair = Pair {
            a: items[0],
            b: items[1],
        };
        let choice = pair_choice(req, &shown)?;
        return Ok((
            Response::Pair {
                pair,
                choice,
                strength: req.strength,
            },
            LoggedAnswer::Pair {
                choice,
                strength: req.strength,
            },
        ));
    }
    if req.strength.is_some() {
        return Err(ServiceError::invalid(
            "strength",
            "a question of three or more items has no strength; strengths grade pair answers",
        ));
    }
    let ranking = ordered(req, &shown, current.settings.answer.ranked(shown.len()))?;
    Ok((
        Response::Pick {
            shown: items,
            ranking: ranking.clone(),
        },
        LoggedAnswer::Pick {
            items: shown.into_iter().cloned().collect(),
            ranking,
        },
    ))
}

/// A pair question's answer: a, b, tie, skip or one of its two item ids, a strength only for a
/// or b; no ranking.
fn pair_choice(req: &AnswerIn, shown: &[&String]) -> Result<Choice, ServiceError> {
    if req.ranking.is_some() {
        return Err(ServiceError::invalid(
            "ranking",
            "a pair question takes a choice (a, b, tie or skip), not a ranking",
        ));
    }
    let choice = req.choice.as_deref().unwrap_or_default();
    let position = shown.iter().position(|id| *id == choice);
    let choice = match (choice, position) {
        ("a", _) | (_, Some(0)) => Choice::A,
        ("b", _) | (_, Some(1)) => Choice::B,
        ("tie", _) => Choice::Tie,
        ("skip", _) => Choice::Skip,
        _ => {
            return Err(ServiceError::invalid(
                "choice",
                "must be a, b, tie, skip or the id of one of the question's two items",
            ));
        }
    };
    if req.strength.is_some() && !matches!(choice, Choice::A | Choice::B) {
        return Err(ServiceError::invalid(
            "strength",
            "only an answer for a or b has a strength",
        ));
    }
    Ok(choice)
}

/// The positions in `shown` that the answer to a question of three or more items orders, best
/// first: `ranked` of them for a question that asks for a ranking (`ranking`), the one picked
/// for one that asks for a pick (`choice`), none for a skip.
fn ordered(req: &AnswerIn, shown: &[&String], ranked: usize) -> Result<Vec<usize>, ServiceError> {
    let position = |id: &str| shown.iter().position(|item| *item == id);
    match (req.choice.as_deref(), &req.ranking) {
        (Some(_), Some(_)) => Err(ServiceError::invalid(
            "ranking",
            "send a ranking or a choice (skip), not both",
        )),
        (Some("skip"), None) => Ok(Vec::new()),
        (Some(_), None) if ranked > 1 => Err(ServiceError::invalid(
            "choice",
            format!(
                "this question asks for a ranking of {ranked} items: send `ranking` (or `choice` skip)"
            ),
        )),
        (Some(choice), None) => position(choice).map(|p| vec![p]).ok_or_else(|| {
            ServiceError::invalid(
                "choice",
                "must be the id of one of the question's items, or skip",
            )
        }),
        (None, Some(_)) if ranked == 1 => Err(ServiceError::invalid(
            "ranking",
            "this question asks to pick one item: send `choice`",
        )),
        (None, Some(ranking)) => {
            let mut positions = Vec::with_capacity(ranking.len());
            for id in ranking {
                let p = position(id).ok_or_else(|| {
                    ServiceError::invalid(
                        "ranking",
                        format!("'{id}' is not an item of the question"),
                    )
                })?;
                if positions.contains(&p) {
                    return Err(ServiceError::invalid(
                        "ranking",
                        format!("lists '{id}' twice"),
                    ));
                }
                positions.push(p);
            }
            if positions.len() != ranked {
                return Err(ServiceError::invalid(
                    "ranking",
                    format!(
                        "must list {ranked} of the question's {} items, best first",
                        shown.len()
                    ),
                ));
            }
            Ok(positions)
        }
        (None, None) => Err(ServiceError::invalid(
            "choice",
            "an answer needs a choice (or, for a question that asks for an order, a ranking)",
        )),
    }
}

/// What the log keeps of a question's items so that it alone rebuilds the posterior: x = β(φa −
/// φb) for a pair, β·φ of every shown item, stacked, for a pick of k, β·e_d for a statement.
fn answer_direction(bank: &LoadedBank, response: &Response) -> DVector<f64> {
    let beta = bank.model.spec.noise.beta;
    match response {
        Response::Statement { dimension, .. } => {
            statement_direction(bank.bank.dim(), *dimension, beta)
        }
        Response::Pair { pair, .. } => bank.bank.direction(*pair, beta),
        Response::Pick { shown, .. } => {
            let j = bank.bank.dim();
            DVector::from_iterator(
                shown.len() * j,
                shown.iter().flat_map(|&i| {
                    bank.bank
                        .features(i)
                        .iter()
                        .map(|f| f * beta)
                        .collect::<Vec<_>>()
                }),
            )
        }
    }
}

/// A list of items (`field`) must name at least two different items of the bank.
fn check_known_items(field: &str, items: &[String], bank: &LoadedBank) -> Result<(), ServiceError> {
    if items.len() < 2 {
        return Err(ServiceError::invalid(field, "must name at least two items"));
    }
    let mut seen = HashSet::with_capacity(items.len());
    for (i, id) in items.iter().enumerate() {
        if !seen.insert(id) {
            return Err(ServiceError::invalid(
                format!("{field}[{i}]"),
                format!("'{id}' appears twice"),
            ));
        }
        if bank.item_index(id).is_none() {
            return Err(ServiceError::invalid(
                format!("{field}[{i}]"),
                format!("unknown item '{id}'"),
            ));
        }
    }
    Ok(())
}

/// Excluded pairs must name two different known items; at most one per possible pair.
fn check_excluded_pairs(pairs: &[[String; 2]], bank: &LoadedBank) -> Result<(), ServiceError> {
    const MAX_EXCLUDED: usize = 50_000;
    if pairs.len() > MAX_EXCLUDED {
        return Err(ServiceError::invalid(
            "exclude_pairs",
            format!("at most {MAX_EXCLUDED} pairs"),
        ));
    }
    for (i, [a, b]) in pairs.iter().enumerate() {
        if a == b {
            return Err(ServiceError::invalid(
                format!("exclude_pairs[{i}]"),
                "names the same item twice",
            ));
        }
        for id in [a, b] {
            if bank.item_index(id).is_none() {
                return Err(ServiceError::invalid(
                    format!("exclude_pairs[{i}]"),
                    format!("unknown item '{id}'"),
                ));
            }
        }
    }
    Ok(())
}

/// Marks the session's excluded pairs as never to be asked.
fn apply_exclusions(run: &mut Elicitation<'_>, settings: &SessionSettings, bank: &LoadedBank) {
    for [a, b] in &settings.exclude_pairs {
        if let (Some(a), Some(b)) = (bank.item_index(a), bank.item_index(b)) {
            run.exclude(Pair { a, b });
        }
    }
}

fn run_config(model: &ModelRecord, settings: &SessionSettings) -> ElicitationConfig {
    ElicitationConfig {
        noise: model.spec.noise,
        method: model.spec.update_method,
        strategy: settings.strategy,
        stopping: StoppingRule {
            max_questions: settings.max_questions,
            min_information_bits: MIN_INFORMATION_BITS,
            target_sd: None,
        },
        reliability: model.spec.reliability,
        probes: settings.probes.or(model.spec.probes),
        checks: settings.checks.or(model.spec.checks),
        adaptive_lapse: model.spec.lapse_per_user,
        lapse_prior: model.spec.lapse_per_user.unwrap_or_default(),
        choices: settings.choices,
        strength_threshold: model.spec.strength_threshold,
        ..Default::default()
    }
}

/// Bank indices of the items the session's questions aim at: its own targets, else the model's
/// (items deleted since are dropped).
fn target_indices(settings: &SessionSettings, bank: &LoadedBank) -> Vec<usize> {
    settings
        .targets
        .as_ref()
        .unwrap_or(&bank.model.spec.targets)
        .iter()
        .filter_map(|id| bank.item_index(id))
        .collect()
}

/// A run of the `epig` strategy aimed at the session's target pairs (drawn from the session id,
/// so every replica aims at the same ones; a run from the cache keeps its own); other strategies
/// need no targets.
fn aimed<'b>(
    run: Elicitation<'b>,
    session_id: &str,
    settings: &SessionSettings,
    bank: &'b LoadedBank,
) -> Elicitation<'b> {
    if settings.strategy != Strategy::Epig || run.is_aimed() {
        return run;
    }
    let mut rng = question_rng(session_id, -1);
    let targets = Targets::among(&bank.bank, &target_indices(settings, bank), &mut rng);
    run.aim_at(targets)
}

/// Bank indices of the session's allowed items (items deleted since are dropped).
fn allowed_indices(settings: &SessionSettings, bank: &LoadedBank) -> Option<Vec<usize>> {
    settings
        .items
        .as_ref()
        .map(|ids| ids.iter().filter_map(|id| bank.item_index(id)).collect())
}

/// The session's posterior: the stored cache, or, if that is damaged, a replay of the log.
fn session_posterior(
    bank: &LoadedBank,
    session: &SessionRecord,
    answers: &[AnswerRow],
) -> Posterior {
    if let Ok(p) = Posterior::new(session.mean.clone(), session.cov.clone()) {
        return p;
    }
    tracing::warn!(session = %session.id, "stored posterior is not positive definite; rebuilding it from the answer log");
    answer_log(&bank.model, answers).replay(
        bank.prior_of(session.prior_version),
        bank.model.spec.update_method,
    )
}

/// The stored log as the model's answer log ([`AnswerLog`]): each row's stored direction(s) (the
/// bank may have changed since), its likelihood with the lapse rate it was applied with, and its
/// items numbered in order of first appearance (what consistency probes compare).
pub(super) fn answer_log(model: &ModelRecord, answers: &[AnswerRow]) -> AnswerLog {
    let mut numbers: HashMap<&str, usize> = HashMap::new();
    let mut number = |id| -> usize {
        let next = numbers.len();
        *numbers.entry(id).or_insert(next)
    };
    let threshold = model.spec.strength_threshold;
    let steps = answers
        .iter()
        .map(|a| {
            let noise = NoiseModel {
                lapse: a.lapse.unwrap_or(model.spec.noise.lapse),
                ..model.spec.noise
            };
            match &a.answer {
                LoggedAnswer::Pair { choice, strength } => Step::comparison(
                    a.direction.clone(),
                    Some((
                        number(a.item_a.as_str()),
                        number(a.item_b.as_str()),
                        *choice,
                    )),
                    (choice.outcome(), *strength),
                    &noise,
                    threshold,
                    a.log_evidence,
                ),
                LoggedAnswer::Statement { prefer, strength } => Step::comparison(
                    a.direction.clone(),
                    None,
                    (Some(statement_outcome(*prefer)), *strength),
                    &noise,
                    threshold,
                    a.log_evidence,
                ),
                LoggedAnswer::Pick { items, ranking } => {
                    // β·φ of every shown item, stacked.
                    let j = a.direction.len() / items.len().max(1);
                    let shown = (0..items.len())
                        .map(|i| a.direction.rows(i * j, j).into_owned())
                        .collect();
                    Step::ranking(shown, ranking.clone(), &noise, a.log_evidence)
                }
            }
        })
        .collect();
    AnswerLog::new(steps)
}

/// Continues the engine run of `session` from its cached state.
fn continue_run<'b>(
    bank: &'b LoadedBank,
    session: &SessionRecord,
    state: RunState,
) -> Result<Elicitation<'b>, ServiceError> {
    let run = Elicitation::from_state(
        &bank.bank,
        bank.prior_of(session.prior_version).clone(),
        state,
        run_config(&bank.model, &session.settings),
    )?;
    Ok(aimed(run, &session.id, &session.settings, bank))
}

/// Resumes the engine on a stored session.
fn resume<'b>(
    bank: &'b LoadedBank,
    session: &SessionRecord,
    answers: &[AnswerRow],
) -> Result<Elicitation<'b>, ServiceError> {
    let history = answers
        .iter()
        .filter_map(|a| {
            let response = match &a.answer {
                LoggedAnswer::Pair { choice, strength } => Response::Pair {
                    pair: Pair {
                        a: bank.item_index(&a.item_a)?,
                        b: bank.item_index(&a.item_b)?,
                    },
                    choice: *choice,
                    strength: *strength,
                },
                LoggedAnswer::Pick { items, ranking } => Response::Pick {
                    shown: items
                        .iter()
                        .map(|id| bank.item_index(id))
                        .collect::<Option<_>>()?,
                    ranking: ranking.clone(),
                },
                LoggedAnswer::Statement { prefer, strength } => Response::Statement {
                    dimension: bank.model.spec.dimension_index(&a.item_a)?,
                    prefer: *prefer,
                    strength: *strength,
                },
            };
            Some(AnswerRecord {
                response,
                log_evidence: a.log_evidence,
                lapse: a.lapse.unwrap_or(bank.model.spec.noise.lapse),
                repeats: None,
            })
        })
        .collect();
    let allowed = allowed_indices(&session.settings, bank);
    let mut run = Elicitation::resume(
        &bank.bank,
        bank.prior_of(session.prior_version).clone(),
        session_posterior(bank, session, answers),
        history,
        run_config(&bank.model, &session.settings),
        allowed.as_deref(),
    )?;
    run = aimed(run, &session.id, &session.settings, bank);
    apply_exclusions(&mut run, &session.settings, bank);
    Ok(run)
}

/// A question-selection stream that depends only on the session and how far it got, so every
/// replica picks the same next question for the same state (`answers` = −1 is the stream that
/// draws the session's target pairs).
fn question_rng(session_id: &str, answers: i64) -> StdRng {
    let digest = Sha256::digest(format!("{session_id}/{answers}").as_bytes());
    StdRng::seed_from_u64(u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")))
}

/// Chooses the next question (or stops) and records it on the session.
fn set_next_question(session: &mut SessionRecord, run: &Elicitation<'_>, bank: &LoadedBank) {
    let started = std::time::Instant::now();
    let next = run.next(&mut question_rng(&session.id, session.answers));
    metrics::histogram!("elicit_selection_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    match next {
        Next::Ask(q) => ask(session, &[q.pair.a, q.pair.b], q.score_bits, bank),
        Next::AskSet(set) => ask(session, &set.items, set.score_bits, bank),
        Next::Stop(reason) => {
            session.question = None;
            session.status = SessionStatus::Completed;
            session.stop_reason = Some(reason);
        }
    }
}

/// Records the question showing `items` (bank indices, in display order) on the session.
fn ask(session: &mut SessionRecord, items: &[usize], information_bits: f64, bank: &LoadedBank) {
    metrics::counter!("elicit_questions_served_total").increment(1);
    let id = |i: usize| bank.ids[items[i]].clone();
    session.question = Some(QuestionRecord {
        id: (session.answers + 1).to_string(),
        item_a: id(0),
        item_b: id(1),
        more_items: (2..items.len()).map(id).collect(),
        information_bits,
    });
}

fn asks_about_deleted_item(question: &QuestionRecord, bank: &LoadedBank) -> bool {
    question.items().any(|id| bank.item_index(id).is_none())
}

/// The profile's summary in words, against the model's current population prior.
fn summary_of(model: &ModelRecord, posterior: &Posterior) -> Result<ProfileSummary, ServiceError> {
    let population = Posterior::new(model.prior_mean.clone(), model.prior_cov.clone())?;
    Ok(summarise(
        posterior,
        &population,
        &model.spec.labelled_dimensions(),
    ))
}

fn profile_of(session: &SessionRecord, unreliable: bool) -> ProfileRecord {
    ProfileRecord {
        user_id: session.user_id.clone(),
        model: session.model.clone(),
        session_id: session.id.clone(),
        status: session.status,
        mean: session.mean.clone(),
        cov: session.cov.clone(),
        version: 1,
        answers: session.answers,
        updated_ms: session.updated_ms,
        unreliable,
        prior_version: session.prior_version,
    }
}

fn question_view(
    q: &QuestionRecord,
    bank: &LoadedBank,
    settings: &SessionSettings,
) -> QuestionView {
    let item = |id: &str| ItemRef {
        id: id.to_string(),
        payload: bank.item_index(id).and_then(|i| bank.payloads[i].clone()),
    };
    let items: Vec<ItemRef> = q.items().map(|id| item(id)).collect();
    let answer = match (items.len(), settings.answer.ranked(items.len())) {
        (2, _) => QuestionAnswer {
            kind: AnswerKind::Pair,
            top: None,
        },
        (_, 1) => QuestionAnswer {
            kind: AnswerKind::Pick,
            top: None,
        },
        (_, ranked) => QuestionAnswer {
            kind: AnswerKind::Rank,
            top: Some(ranked),
        },
    };
    QuestionView {
        id: q.id.clone(),
        items,
        answer,
        information_bits: q.information_bits,
    }
}

/// The answer response: progress, per-dimension summary, the next question.
fn answer_view(
    bank: &LoadedBank,
    s: &SessionRecord,
    prior: &Posterior,
    posterior: &Posterior,
    covariance: bool,
) -> AnswerView {
    let names = &bank.model.spec.dimensions;
    let summary = PosteriorView::summary(names, posterior.mean(), posterior.cov());
    AnswerView {
        id: s.id.clone(),
        status: s.status,
        version: s.version,
        answers: s.answers,
        max_questions: s.settings.max_questions,
        bits: posterior.bits_since(prior),
        stop_reason: s.stop_reason,
        posterior: if covariance {
            summary.with_covariance(posterior.cov())
        } else {
            summary
        },
        question: s
            .question
            .as_ref()
            .map(|q| question_view(q, bank, &s.settings)),
    }
}

/// The wire view of a session whose (validated or rebuilt) posterior the caller has at hand, so
/// that no path factorises it twice; the prior is the bank's, validated once when it was loaded.
fn session_view(
    bank: &LoadedBank,
    s: &SessionRecord,
    answers: &[AnswerRow],
    posterior: &Posterior,
    reliability_fit: Option<ReliabilityFit>,
) -> SessionView {
    let model = &bank.model;
    let prior = bank.prior_of(s.prior_version);
    let d = answer_log(model, answers).diagnostics(
        (prior, posterior),
        reliability_fit,
        model.spec.lapse_per_user.unwrap_or_default(),
        &model.spec.reliability,
    );
    let r = d.reliability;
    SessionView {
        id: s.id.clone(),
        model: s.model.clone(),
        user_id: s.user_id.clone(),
        status: s.status,
        version: s.version,
        answers: s.answers,
        max_questions: s.settings.max_questions,
        strategy: s.settings.strategy,
        choices: s.settings.choices,
        answer: s.settings.answer,
        targets: s.settings.targets.clone(),
        stop_reason: s.stop_reason,
        posterior: PosteriorView::new(&model.spec.dimensions, posterior.mean(), posterior.cov()),
        summary: summarise(posterior, &bank.prior, &model.spec.labelled_dimensions()),
        statements: answers
            .iter()
            .filter_map(|a| match a.answer {
                LoggedAnswer::Statement { prefer, strength } => Some(StatementView {
                    dimension: a.item_a.clone(),
                    prefer,
                    strength,
                }),
                _ => None,
            })
            .collect(),
        diagnostics: DiagnosticsView {
            bits: d.bits,
            log2_bayes_factor: d.log2_bayes_factor,
            leave_one_out_log2_bayes_factor: r.log2_bayes_factor,
            surprise_bits: d.surprise_bits,
            lapse_rate: r.lapse_rate,
            lapse_sd: r.lapse_sd,
            person_fit_z: r.person_fit_z,
            probes: r.consistency.probes,
            probe_flips: r.consistency.flips,
            unreliable: r.unreliable,
        },
        question: s
            .question
            .as_ref()
            .map(|q| question_view(q, bank, &s.settings)),
        prior_version: s.prior_version,
    }
}
