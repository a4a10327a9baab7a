//! What a client adds to a session's log, parsed and checked against the session and its bank:
//! answers (a choice, a grade, a ranking) and statements, their fingerprints and their directions.

use nalgebra::DVector;
use sha2::{Digest, Sha256};

use crate::model::Choice;
use crate::model::Pair;
use crate::model::elicitation::{Response, statement_direction};
use crate::model::kway;
use crate::service::ServiceError;
use crate::service::bank::LoadedModel;
use crate::service::dto::{AnswerIn, StatementIn};
use crate::service::limits::MAX_ID_LEN;
use crate::service::validate::check_id;
use crate::store::{LoggedAnswer, SessionRecord, SessionStatus};

/// A client's key for one submission, so that a retry of it is applied once: visible ASCII
/// without spaces, 1 to [`MAX_ID_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// `value` as a key, or why it is not one (`field` names where the client sent it).
    pub fn parse(field: &str, value: &str) -> Result<Self, ServiceError> {
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ServiceError::invalid(
                field,
                "must be visible ASCII without spaces",
            ));
        }
        check_id(field, value, MAX_ID_LEN)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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

impl Submission {
    /// The checks a submission's fields need before the session is read: ids' lengths and
    /// characters, a ranking's size.
    pub(super) fn check(&self) -> Result<(), ServiceError> {
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
    pub(super) fn request_hash(&self) -> String {
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
pub(super) fn loggable(
    current: &SessionRecord,
    bank: &LoadedModel,
    submission: &Submission,
    if_match: Option<i64>,
) -> Result<(Response, LoggedAnswer), ServiceError> {
    check_takes_submissions(current, if_match)?;
    match submission {
        Submission::Answer(req) => answerable(current, bank, req),
        Submission::Statement(req) => stated(bank, req),
    }
}

/// The session takes submissions: it is active and, if the client named the version it saw, at
/// that version.
pub(super) fn check_takes_submissions(
    current: &SessionRecord,
    if_match: Option<i64>,
) -> Result<(), ServiceError> {
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
pub(super) fn stated(
    bank: &LoadedModel,
    req: &StatementIn,
) -> Result<(Response, LoggedAnswer), ServiceError> {
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
pub(super) fn answerable(
    current: &SessionRecord,
    bank: &LoadedModel,
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
pub(super) fn pair_choice(req: &AnswerIn, shown: &[&String]) -> Result<Choice, ServiceError> {
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
pub(super) fn ordered(
    req: &AnswerIn,
    shown: &[&String],
    ranked: usize,
) -> Result<Vec<usize>, ServiceError> {
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
pub(super) fn answer_direction(bank: &LoadedModel, response: &Response) -> DVector<f64> {
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
