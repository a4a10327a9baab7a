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
use rand::Rng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, StandardNormal};

use super::bank::Bank;
use super::likelihood::NoiseModel;
use super::numeric::sigmoid;
use super::pair::Pair;
use super::pool::PoolPair;
use super::posterior::Posterior;
use super::select::{self, Candidates, Selected};

/// Posterior draws per question.
pub const SAMPLES: usize = 1024;
/// Target pairs at most: the average information over more pairs than this changes little.
pub const TARGET_PAIRS: usize = 100;

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

    /// Up to [`TARGET_PAIRS`] pairs among the target items `items` (bank indices), drawn at
    /// random when there are more: how the user will rank these items against each other is
    /// what the questions aim at.
    pub fn among<R: Rng + ?Sized>(bank: &Bank, items: &[usize], rng: &mut R) -> Self {
        let mut pairs: Vec<(usize, usize)> = items
            .iter()
            .enumerate()
            .flat_map(|(x, &a)| items[x + 1..].iter().map(move |&b| (a, b)))
            .collect();
        pairs.shuffle(rng);
        pairs.truncate(TARGET_PAIRS);
        Self::new(
            pairs
                .iter()
                .map(|&(a, b)| bank.features(a) - bank.features(b))
                .collect(),
        )
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

/// Pairs the Monte Carlo score considers at most: with more unasked pairs, a screen picks these
/// first. (On the simulate task, 780 pairs, screening changes no agreement figure at k = 1…30;
/// on MovieLens users it moves accuracy by at most 0.002, at a tenth of the time.)
pub const SCREENED_PAIRS: usize = 256;

/// The unasked candidate pair with the largest EPIG for `targets`, shown in a random order;
/// `None` when every pair has been asked. Up to [`SCREENED_PAIRS`] unasked pairs every one is
/// scored (O(Q·S·T)); more are first screened by the linear-Gaussian EPIG
/// ([`screen_for_targets`]), so one question costs O(P·J) for the P pairs screened plus a fixed
/// Monte Carlo part.
pub fn select_for_targets<R: Rng + ?Sized>(
    from: &Candidates,
    posterior: &Posterior,
    targets: &Targets,
    rng: &mut R,
) -> Option<Selected> {
    let (bank, noise) = (from.bank, from.noise);
    if from.space.remaining() == 0 || targets.is_empty() {
        return None;
    }
    let unasked = select::unasked_candidates(from);
    let candidates: Vec<Pair> = if unasked.len() <= SCREENED_PAIRS {
        unasked.into_iter().map(|p| from.pool.pair(p)).collect()
    } else {
        screen_for_targets(from, posterior, targets, unasked)
    };
    if candidates.is_empty() {
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
    let pair = candidates[best].in_random_order(rng);
    Some(Selected {
        pair,
        score_bits: score,
    })
}

/// Variance of the logistic answer noise, π²/3: an answer read as f + noise in the screen.
const LOGISTIC_VARIANCE: f64 = std::f64::consts::PI * std::f64::consts::PI / 3.0;

/// The [`SCREENED_PAIRS`] unasked pairs with the largest linear-Gaussian EPIG to first order. With
/// the latent utilities f = βλᵀx jointly Gaussian under the posterior and an answer read as f_q
/// plus noise of the logistic variance v, a question's information about target t is
/// −½log₂(1 − ρₜ²) ≈ ρₜ²/(2 ln 2), ρₜ² = cₜ²/((s_q² + v)s_t²) with cₜ = β²x_qᵀΣxₜ. Summed over
/// the targets, Σₜ cₜ²/s_t² = dᵀMd for the pair's feature difference d = φa − φb and the J × J
/// matrix M = β⁴ΣX_T diag(1/s_t²)X_TᵀΣ; with M = LLᵀ and wᵢ = Lᵀφᵢ it is ‖w_a − w_b‖², so a pair
/// costs O(J) whatever the number of targets. It scans the pool's unasked pairs.
fn screen_for_targets(
    from: &Candidates,
    posterior: &Posterior,
    targets: &Targets,
    unasked: Vec<PoolPair>,
) -> Vec<Pair> {
    let (pool, noise) = (from.pool, from.noise);
    let beta2 = noise.beta * noise.beta;
    let x_t = DMatrix::from_columns(&targets.directions);
    let mut sigma_x = posterior.cov() * &x_t * beta2;
    for (t, mut column) in sigma_x.column_iter_mut().enumerate() {
        let variance = x_t.column(t).dot(&column).max(1e-300);
        column /= variance.sqrt();
    }
    let m = &sigma_x * sigma_x.transpose();
    let eigen = nalgebra::SymmetricEigen::new((&m + m.transpose()) * 0.5);
    let mut factor = eigen.eigenvectors;
    for (c, mut column) in factor.column_iter_mut().enumerate() {
        column *= eigen.eigenvalues[c].max(0.0).sqrt();
    }
    let j = factor.nrows();
    let features = DMatrix::from_fn(pool.len(), j, |p, r| pool.features(p as u32)[r]);
    // Row p is wₚᵀ for the pool's position p.
    let w = features * factor;
    let score = |pair: PoolPair| {
        let (_, s2) = pool.pair_predictive(pair, noise.beta);
        let spread = (w.row(pair.a as usize) - w.row(pair.b as usize)).norm_squared();
        spread / (s2 + LOGISTIC_VARIANCE)
    };
    let mut scored: Vec<(f64, PoolPair)> = unasked.into_iter().map(|p| (score(p), p)).collect();
    let keep = SCREENED_PAIRS.min(scored.len());
    if keep > 0 && keep < scored.len() {
        scored.select_nth_unstable_by(keep - 1, |x, y| y.0.total_cmp(&x.0));
    }
    scored.truncate(keep);
    scored.into_iter().map(|(_, p)| pool.pair(p)).collect()
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
