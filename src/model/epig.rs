//! Questions aimed at targets: expected predictive information gain (EPIG; Bickford Smith et al.
//! 2023), for a session whose answers matter only through how it will rank some target items
//! (the candidates a gateway will score), not through λ itself.
//!
//! For a pair question q and target pairs t₁ … t_T (x = β(φa − φb) each),
//!
//! EPIG(q) = (1/T) Σₜ I(y_q; y_t) = (1/T) Σₜ Σ_{y_q, y_t} P(y_q, y_t) log₂ P(y_q, y_t)/(P(y_q)P(y_t)),
//!
//! where the answers are independent given λ, so P(y_q = 1, y_t = 1) = E_λ[p_q(λ) p_t(λ)], with
//! p(λ) = ε/2 + (1 − ε)σ(λᵀx). The expectations are Monte Carlo averages over S posterior draws;
//! for all candidates at once they are one matrix product (Q × S)(S × T). BALD asks about λ in
//! every direction; EPIG only about the directions the targets' comparisons depend on, which
//! pays when the targets differ from the bank (research/questions.md).

use nalgebra::{DMatrix, DVector};
use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

use super::likelihood::NoiseModel;
use super::numeric::sigmoid;
use super::posterior::Posterior;
use super::select::{Bank, CandidateSpace, Pair, Selected, Strategy};
use serde::Serialize;

/// Posterior draws per question.
pub const SAMPLES: usize = 1024;

/// The directions x = β(φa − φb) of the target pairs.
#[derive(Debug, Clone)]
pub struct Targets {
    directions: Vec<DVector<f64>>,
}

impl Targets {
    /// Targets from the pairs' feature differences φa − φb (β applied at selection time).
    pub fn new(differences: Vec<DVector<f64>>) -> Self {
        Self {
            directions: differences,
        }
    }

    pub fn len(&self) -> usize {
        self.directions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.directions.is_empty()
    }
}

/// P(answer = a) for each draw (rows) and direction (columns): ε/2 + (1 − ε)σ(βλᵀx).
fn answer_probabilities(
    draws: &DMatrix<f64>,
    directions: &DMatrix<f64>,
    noise: &NoiseModel,
) -> DMatrix<f64> {
    let mut p = draws.transpose() * directions * noise.beta;
    p.apply(|f| *f = noise.lapse / 2.0 + (1.0 - noise.lapse) * sigmoid(*f));
    p
}

/// S draws from the posterior as the columns of a J × S matrix.
fn draw<R: Rng + ?Sized>(posterior: &Posterior, samples: usize, rng: &mut R) -> DMatrix<f64> {
    let j = posterior.dim();
    let chol = posterior
        .cov()
        .clone()
        .cholesky()
        .expect("a posterior covariance is positive definite");
    let normals = DMatrix::from_fn(j, samples, |_, _| StandardNormal.sample(rng));
    let mut draws = chol.l() * normals;
    for mut column in draws.column_iter_mut() {
        column += posterior.mean();
    }
    draws
}

/// Mutual information in bits of two binary answers from P(1,1) = a, P(y_q=1) = b, P(y_t=1) = c.
fn pair_information(a: f64, b: f64, c: f64) -> f64 {
    let cells = [
        (a, b, c),
        (b - a, b, 1.0 - c),
        (c - a, 1.0 - b, c),
        (1.0 - b - c + a, 1.0 - b, 1.0 - c),
    ];
    cells
        .iter()
        .filter(|(joint, _, _)| *joint > 0.0)
        .map(|&(joint, q, t)| joint * (joint / (q * t)).log2())
        .sum::<f64>()
        .max(0.0)
}

/// The unasked candidate pair with the largest EPIG for `targets`, shown in a random order;
/// `None` when every pair has been asked. Scores every candidate: O(Q·S·T), meant for banks of
/// up to a few thousand pairs.
pub fn select_for_targets<R: Rng + ?Sized>(
    bank: &Bank,
    space: &CandidateSpace,
    posterior: &Posterior,
    noise: &NoiseModel,
    targets: &Targets,
    rng: &mut R,
) -> Option<Selected> {
    let candidates: Vec<Pair> = space.unasked_pairs().collect();
    if candidates.is_empty() || targets.is_empty() {
        return None;
    }
    let draws = draw(posterior, SAMPLES, rng);
    let columns = |xs: &[DVector<f64>]| DMatrix::from_columns(xs);
    let questions: Vec<DVector<f64>> = candidates.iter().map(|&p| bank.direction(p, 1.0)).collect();
    let p_questions = answer_probabilities(&draws, &columns(&questions), noise);
    let p_targets = answer_probabilities(&draws, &columns(&targets.directions), noise);
    let s = SAMPLES as f64;
    // E[p_q p_t] for every (question, target) pair, and the marginals.
    let joint = p_questions.transpose() * &p_targets / s;
    let marginal_q = p_questions.row_mean();
    let marginal_t = p_targets.row_mean();
    let (best, score) = (0..candidates.len())
        .map(|q| {
            let total: f64 = (0..targets.len())
                .map(|t| pair_information(joint[(q, t)], marginal_q[q], marginal_t[t]))
                .sum();
            (q, total / targets.len() as f64)
        })
        .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)))?;
    let pair = candidates[best];
    let pair = if rng.random_bool(0.5) {
        pair
    } else {
        Pair {
            a: pair.b,
            b: pair.a,
        }
    };
    Some(Selected {
        pair,
        score_bits: score,
    })
}

/// How questions are chosen (`--strategy` of `elicit simulate` and `elicit eval`): one of the
/// engine's strategies, or `epig`, pairs aimed at target items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Questioning {
    Engine(Strategy),
    /// Expected predictive information gain about target pairs ([`select_for_targets`]).
    Epig,
}

impl Questioning {
    pub fn as_str(self) -> &'static str {
        match self {
            Questioning::Engine(strategy) => strategy.as_str(),
            Questioning::Epig => "epig",
        }
    }

    /// The engine's strategy for the loops that use one (EPIG has its own loop; BALD picks the
    /// first pair of a set).
    pub fn engine(self) -> Strategy {
        match self {
            Questioning::Engine(strategy) => strategy,
            Questioning::Epig => Strategy::Bald,
        }
    }
}

impl From<Strategy> for Questioning {
    fn from(strategy: Strategy) -> Self {
        Questioning::Engine(strategy)
    }
}

impl std::str::FromStr for Questioning {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "epig" {
            return Ok(Questioning::Epig);
        }
        s.parse::<Strategy>()
            .map(Questioning::Engine)
            .map_err(|_| format!("unknown strategy '{s}' (bald, dopt, random, epig)"))
    }
}

impl Serialize for Questioning {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn information_of_two_answers() {
        // Independent answers share nothing; identical fair answers share one bit.
        assert!(pair_information(0.25, 0.5, 0.5).abs() < 1e-12);
        assert!((pair_information(0.5, 0.5, 0.5) - 1.0).abs() < 1e-12);
        assert!(pair_information(0.3, 0.4, 0.6) > 0.0);
    }
}
