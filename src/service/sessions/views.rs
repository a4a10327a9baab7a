//! What the API shows of a session, an answer, a question and a profile.

use crate::model::Posterior;
use crate::model::history::{AnswerLog, Judgement};
use crate::model::summary::{ProfileSummary, summarise};
use crate::service::ServiceError;
use crate::service::bank::LoadedModel;
use crate::service::dto::{
    AnswerKind, AnswerView, DiagnosticsView, ItemRef, PosteriorView, QuestionAnswer, QuestionView,
    SessionView, StatementView,
};
use crate::store::{
    AnswerRow, LoggedAnswer, ModelRecord, ProfileRecord, QuestionRecord, SessionRecord,
    SessionSettings,
};

/// The profile's summary in words, against the model's current population prior.
pub(super) fn summary_of(
    model: &ModelRecord,
    posterior: &Posterior,
) -> Result<ProfileSummary, ServiceError> {
    let population = Posterior::new(model.prior_mean.clone(), model.prior_cov.clone())?;
    Ok(summarise(
        posterior,
        &population,
        &model.spec.labelled_dimensions(),
    ))
}

pub(super) fn profile_of(session: &SessionRecord, unreliable: bool) -> ProfileRecord {
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

pub(super) fn question_view(
    q: &QuestionRecord,
    bank: &LoadedModel,
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
pub(super) fn answer_view(
    bank: &LoadedModel,
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

/// The wire view of a session whose (validated or rebuilt) posterior and answer log (`answers`,
/// and as the model's [`AnswerLog`]) the caller has at hand, so that no path factorises or
/// converts them twice; the prior is the bank's, validated once when it was loaded.
pub(super) fn session_view(
    bank: &LoadedModel,
    s: &SessionRecord,
    (answers, log): (&[AnswerRow], &AnswerLog),
    posterior: &Posterior,
    judgement: Option<Judgement>,
) -> SessionView {
    let model = &bank.model;
    let prior = bank.prior_of(s.prior_version);
    let d = log.diagnostics(
        (prior, posterior),
        judgement,
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
