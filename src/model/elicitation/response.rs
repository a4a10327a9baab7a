//! What a user says to a question (or of their own accord), and a run's record of it.

use super::*;

/// A question and what the user said to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A pair question: a, b, tie or skip, and for a or b optionally how strongly.
    Pair {
        pair: Pair,
        choice: Choice,
        strength: Option<Strength>,
    },
    /// A question showing three or more items, in display order, and the positions (in `shown`)
    /// of the items the user ordered, best first: one for a pick, several for a ranking
    /// ([`AnswerFormat`](super::kway::AnswerFormat)), none for a skip.
    Pick {
        shown: Vec<usize>,
        ranking: Vec<usize>,
    },
    /// The user's own word on one dimension ("I prefer the high end"), not an answer to a
    /// question: evidence as a graded answer to a comparison of two items one feature unit apart
    /// along that dimension alone, x = β·e_d, "a" being the high end ([`statement_direction`]).
    Statement {
        dimension: usize,
        prefer: End,
        strength: Option<Strength>,
    },
}

/// The direction of a statement about `dimension` of `dims`: x = β·e_d.
pub fn statement_direction(dims: usize, dimension: usize, beta: f64) -> DVector<f64> {
    let mut x = DVector::zeros(dims);
    x[dimension] = beta;
    x
}

/// A statement's answer to its comparison: the high end is item "a".
pub fn statement_outcome(prefer: End) -> Outcome {
    match prefer {
        End::High => Outcome::A,
        End::Low => Outcome::B,
    }
}

impl Response {
    /// Kₜ, the answers the question allowed under `noise` (a lapse picks each with probability
    /// 1/Kₜ), as [`Step`]'s constructors count them.
    pub fn outcomes(&self, noise: &NoiseModel) -> usize {
        match self {
            Response::Pair { strength, .. } | Response::Statement { strength, .. } => {
                noise.answer_outcomes(strength.is_some())
            }
            Response::Pick { shown, ranking } => kway::ranking_outcomes(shown.len(), ranking.len()),
        }
    }

    /// A plain (ungraded) pair answer.
    pub fn pair(pair: Pair, choice: Choice) -> Self {
        Response::Pair {
            pair,
            choice,
            strength: None,
        }
    }

    /// The pair and choice of a pair answer, which consistency probes compare; for a pick of k
    /// the first two items shown and a skip, which no probe ever repeats.
    fn as_pair(&self) -> (Pair, Choice) {
        match self {
            Response::Pair { pair, choice, .. } => (*pair, *choice),
            Response::Pick { shown, .. } => (
                Pair {
                    a: shown[0],
                    b: shown[1],
                },
                Choice::Skip,
            ),
            // No question to repeat: a pair no question has, and no choice.
            Response::Statement { .. } => (
                Pair {
                    a: usize::MAX,
                    b: usize::MAX,
                },
                Choice::Skip,
            ),
        }
    }
}

/// One answered question.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRecord {
    pub response: Response,
    /// log p(answer | earlier answers) for informative answers.
    pub log_evidence: Option<f64>,
    /// The lapse rate of the likelihood that this answer updated with.
    pub lapse: f64,
    /// For a consistency probe, the index in the history of the answer it repeats. A probe does
    /// not update the posterior (a repeat is not independent evidence: people remember what they
    /// said); its `log_evidence` is its predictive probability, and its agreement with the
    /// answer it repeats is counted. Set by the run, whatever a caller puts here.
    pub repeats: Option<usize>,
}

/// Index of the earlier answer that an answer to `pair` would repeat (see
/// A ranking names positions of a question of `k` items, each once.
pub(super) fn check_ranking(ranking: &[usize], k: usize) -> Result<(), ModelError> {
    let distinct = ranking
        .iter()
        .enumerate()
        .all(|(x, p)| !ranking[x + 1..].contains(p));
    if !distinct || ranking.iter().any(|&p| p >= k) {
        return Err(ModelError::invalid(
            "ranking",
            "a ranking names items of the question, each once",
        ));
    }
    Ok(())
}

/// [`reliability::repeat_of`]).
pub(super) fn repeated(history: &[AnswerRecord], pair: Pair) -> Option<usize> {
    reliability::repeat_of(
        history.iter().map(|r| {
            let (pair, choice) = r.response.as_pair();
            (pair.a, pair.b, choice, r.repeats)
        }),
        &pair.a,
        &pair.b,
    )
}
