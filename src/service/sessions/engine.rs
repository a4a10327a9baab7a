//! The engine behind a session: its settings checked against the bank and turned into a run's
//! configuration, the run rebuilt from the log or continued from the cache, the stored log read as the model's answer log,
//! and the next question chosen and recorded.

use std::collections::HashMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};

use crate::model::Pair;
use crate::model::elicitation::{AnswerRecord, Next, Response, statement_outcome};
use crate::model::epig::Targets;
use crate::model::history::{AnswerLog, Step};
use crate::model::{
    Elicitation, ElicitationConfig, NoiseModel, Posterior, RunState, StoppingRule, Strategy,
};
use crate::service::ServiceError;
use crate::service::bank::LoadedModel;
use crate::store::{
    AnswerRow, LoggedAnswer, ModelRecord, QuestionRecord, SessionRecord, SessionSettings,
    SessionStatus,
};

use super::MIN_INFORMATION_BITS;

/// Marks the session's excluded pairs as never to be asked.
pub(super) fn apply_exclusions(
    run: &mut Elicitation<'_>,
    settings: &SessionSettings,
    bank: &LoadedModel,
) {
    for [a, b] in &settings.exclude_pairs {
        if let (Some(a), Some(b)) = (bank.item_index(a), bank.item_index(b)) {
            run.exclude(Pair { a, b });
        }
    }
}

pub(super) fn run_config(model: &ModelRecord, settings: &SessionSettings) -> ElicitationConfig {
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
pub(super) fn target_indices(settings: &SessionSettings, bank: &LoadedModel) -> Vec<usize> {
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
pub(super) fn aimed<'b>(
    run: Elicitation<'b>,
    session_id: &str,
    settings: &SessionSettings,
    bank: &'b LoadedModel,
) -> Elicitation<'b> {
    if settings.strategy != Strategy::Epig || run.is_aimed() {
        return run;
    }
    let mut rng = question_rng(session_id, -1);
    let targets = Targets::among(&bank.bank, &target_indices(settings, bank), &mut rng);
    run.aim_at(targets)
}

/// Bank indices of the session's allowed items (items deleted since are dropped).
pub(super) fn allowed_indices(
    settings: &SessionSettings,
    bank: &LoadedModel,
) -> Option<Vec<usize>> {
    settings
        .items
        .as_ref()
        .map(|ids| ids.iter().filter_map(|id| bank.item_index(id)).collect())
}

/// The session's posterior: the stored cache, or, if that is damaged, a replay of the log.
pub(super) fn session_posterior(
    bank: &LoadedModel,
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
pub(in crate::service) fn answer_log(model: &ModelRecord, answers: &[AnswerRow]) -> AnswerLog {
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
pub(super) fn continue_run<'b>(
    bank: &'b LoadedModel,
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

/// Rebuilds the engine run of a stored session from its answer log (a run-cache miss).
pub(super) fn rebuild_run<'b>(
    bank: &'b LoadedModel,
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
pub(super) fn question_rng(session_id: &str, answers: i64) -> StdRng {
    let digest = Sha256::digest(format!("{session_id}/{answers}").as_bytes());
    StdRng::seed_from_u64(u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")))
}

/// Chooses the next question (or stops) and records it on the session.
pub(super) fn set_next_question(
    session: &mut SessionRecord,
    run: &Elicitation<'_>,
    bank: &LoadedModel,
) {
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
pub(super) fn ask(
    session: &mut SessionRecord,
    items: &[usize],
    information_bits: f64,
    bank: &LoadedModel,
) {
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

pub(super) fn asks_about_deleted_item(question: &QuestionRecord, bank: &LoadedModel) -> bool {
    question.items().any(|id| bank.item_index(id).is_none())
}
