//! Pick one of k: a question shows k items (2 ≤ k ≤ [`MAX_CHOICES`]) and the answer is the one
//! the user prefers (`research/questions.md`).
//!
//! Likelihood, a multinomial logit with the model's lapse rate ε:
//!
//! P(i | S, λ) = (1 − ε)·softmax_S(βλᵀφ)ᵢ + ε/k.
//!
//! It depends on λ only through the k − 1 utility differences z = Dλ, rows of D being
//! β(φᵢ − φ_ref) for the shown items i other than a reference item, so both the update and the
//! information of a set are (k − 1)-dimensional Gaussian integrals. They are done by a
//! tensor-product Gauss–Hermite rule in whitened coordinates: with S = DΣDᵀ = U s² Uᵀ
//! (the numerically non-zero part, rank r), z = Dμ + U s t, t ~ N(0, I_r).
//!
//! The update is assumed-density filtering: the moments (m_t, C_t) of the tilted density
//! p(answer | t) N(t; 0, I) lift back to λ exactly, because the likelihood is flat in every
//! direction D does not see:
//!
//! μ' = μ + B m_t,  Σ' = Σ + B (C_t − I) Bᵀ,  B = ΣDᵀU s⁻¹.
//!
//! It is a rank-r step, applied as r rank-one steps along B's images of the eigenvectors of
//! C_t − I ([`ChoiceStep::pieces`]), so a session's coreset statistics follow it in O(rKJ) as they
//! follow a pairwise answer. k = 2 is the pairwise ADF step (ties aside), computed by it.

use std::sync::OnceLock;

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::{Rng, RngExt};

use super::ModelError;
use super::information::information_table;
use super::likelihood::{NoiseModel, Outcome};
use super::numeric::{GaussHermite, entropy_bits, log_add_exp};
use super::pair::Pair;
use super::pool::{Pool, PoolPair, Position};
use super::posterior::{Posterior, RankOne};
use super::select::{Candidates, Strategy, select};
use super::update::{UpdateMethod, step_for};

mod sets;

pub use sets::{ChosenSet, select_set};

/// Most items a question may show.
pub const MAX_CHOICES: usize = 6;

/// What a question of three or more items asks the user for. A ranking is a chain of picks
/// (Plackett–Luce): the best of the k shown, then the best of the other k − 1, and so on, so
///
/// P(i₁ ≻ i₂ ≻ … ≻ iₘ | S, λ) = Πₜ P(iₜ | S \ {i₁ … iₜ₋₁}, λ),
///
/// each factor the pick-one likelihood P(i | S, λ) (lapse included), and the update is one ADF
/// step per pick on the shrinking set. Questions are chosen by their pick-one information, which
/// measured as good for rankings as the ranking's own mutual information, at a tenth of the cost.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AnswerFormat {
    /// The one the user prefers.
    #[default]
    Pick,
    /// All k items in order of preference.
    Rank,
    /// The first m in order (1 ≤ m < k); the others unordered.
    Top(usize),
}

impl AnswerFormat {
    /// How many items an answer to a question of `k` ≥ 3 items orders, best first.
    pub fn ranked(self, k: usize) -> usize {
        match self {
            AnswerFormat::Pick => 1,
            AnswerFormat::Rank => k,
            AnswerFormat::Top(m) => m.min(k),
        }
    }

    /// A `Top(m)` needs 1 ≤ m < `choices` (m = k − 1 orders everything, as `Rank` does).
    pub fn check(self, choices: usize) -> Result<(), ModelError> {
        match self {
            AnswerFormat::Top(m) if m == 0 || m >= choices.max(2) => Err(ModelError::invalid(
                "answer",
                format!("top m needs 1 ≤ m < choices ({choices})"),
            )),
            _ => Ok(()),
        }
    }
}

/// A ranking of `shown` (positions, best first) as its chain of picks: for each pick, the items
/// not yet placed and the position of the pick among them. The last place of a full ranking
/// follows from the others and is no pick.
pub fn picks_of<T: Clone>(shown: &[T], ranking: &[usize]) -> Vec<(Vec<T>, usize)> {
    let mut left: Vec<usize> = (0..shown.len()).collect();
    let mut picks = Vec::with_capacity(ranking.len());
    for &position in ranking.iter().take(shown.len().saturating_sub(1)) {
        let Some(chosen) = left.iter().position(|&p| p == position) else {
            break;
        };
        picks.push((left.iter().map(|&p| shown[p].clone()).collect(), chosen));
        left.remove(chosen);
    }
    picks
}

/// How many different answers of `ranked` items in order a question of `k` can have:
/// k!/(k − m)! with m = min(ranked, k − 1) picks (the last place follows from the others).
pub fn ranking_outcomes(k: usize, ranked: usize) -> usize {
    (k - ranked.min(k - 1) + 1..=k).product()
}

/// Nodes per dimension of the rule for the update's moments, by rank r = k − 1 (one-step KL to a
/// rule half as fine again below 10⁻³ nats, a hundredth of the streaming step's own error
/// against the exact posterior; `tests::rules_are_fine_enough`).
const UPDATE_NODES: [usize; MAX_CHOICES] = [1, 32, 20, 14, 10, 8];
/// Nodes per dimension for the information of a set (mean error below 0.02 bits, worst 0.1,
/// against a rule half as fine again on broad beliefs; `tests::rules_are_fine_enough`).
const INFORMATION_NODES: [usize; MAX_CHOICES] = [1, 24, 14, 10, 8, 7];
/// A coarser rule that screens candidate sets before the best [`SET_RESCORE`] are scored with
/// [`INFORMATION_NODES`].
const SCREEN_NODES: [usize; MAX_CHOICES] = [1, 12, 8, 5, 4, 3];
/// A tensor-product Gauss–Hermite rule for N(0, I_r): E g(t) ≈ Σₙ wₙ g(tₙ).
struct TensorRule {
    rank: usize,
    /// The nodes, one after another (`rank` coordinates each).
    points: Vec<f64>,
    weights: Vec<f64>,
}

impl TensorRule {
    fn new(rank: usize, per_dimension: usize) -> Self {
        let base = GaussHermite::new(per_dimension);
        let count = per_dimension.pow(rank as u32);
        let mut points = Vec::with_capacity(count * rank);
        let mut weights = Vec::with_capacity(count);
        for index in 0..count {
            let mut rest = index;
            let mut weight = 1.0;
            for _ in 0..rank {
                let d = rest % per_dimension;
                rest /= per_dimension;
                points.push(base.nodes[d]);
                weight *= base.weights[d];
            }
            weights.push(weight);
        }
        Self {
            rank,
            points,
            weights,
        }
    }

    fn nodes(&self) -> impl Iterator<Item = (&[f64], f64)> + '_ {
        let rank = self.rank;
        (0..self.weights.len())
            .map(move |n| (&self.points[n * rank..(n + 1) * rank], self.weights[n]))
    }
}

/// The cached rule of rank `rank` from a table of nodes per dimension.
fn rule(
    cache: &'static [OnceLock<TensorRule>; MAX_CHOICES],
    nodes: &[usize; MAX_CHOICES],
    rank: usize,
) -> &'static TensorRule {
    cache[rank].get_or_init(|| TensorRule::new(rank, nodes[rank]))
}

fn update_rule(rank: usize) -> &'static TensorRule {
    static CACHE: [OnceLock<TensorRule>; MAX_CHOICES] = [const { OnceLock::new() }; MAX_CHOICES];
    rule(&CACHE, &UPDATE_NODES, rank)
}

fn information_rule(rank: usize) -> &'static TensorRule {
    static CACHE: [OnceLock<TensorRule>; MAX_CHOICES] = [const { OnceLock::new() }; MAX_CHOICES];
    rule(&CACHE, &INFORMATION_NODES, rank)
}

fn screen_rule(rank: usize) -> &'static TensorRule {
    static CACHE: [OnceLock<TensorRule>; MAX_CHOICES] = [const { OnceLock::new() }; MAX_CHOICES];
    rule(&CACHE, &SCREEN_NODES, rank)
}

/// Which rule an integral uses.
#[derive(Clone, Copy)]
enum Nodes {
    /// The cached rule of a table ([`UPDATE_NODES`], [`INFORMATION_NODES`], [`SCREEN_NODES`]).
    Table(fn(usize) -> &'static TensorRule),
    /// This many nodes per dimension (to check a table against a finer rule).
    #[cfg_attr(not(test), allow(dead_code))]
    PerDimension(usize),
}

impl Nodes {
    /// Runs `f` with the rule of rank `rank`.
    fn with<T>(self, rank: usize, f: impl FnOnce(&TensorRule) -> T) -> T {
        match self {
            Nodes::Table(table) => f(table(rank)),
            Nodes::PerDimension(n) => f(&TensorRule::new(rank, n)),
        }
    }
}

/// The belief N(c, S) about the utility differences zᵢ = βλᵀ(φ_{i+1} − φ₀) of a shown set
/// (item 0 is the reference).
#[derive(Debug, Clone)]
pub struct SetBelief {
    pub center: DVector<f64>,
    pub cov: DMatrix<f64>,
}

impl SetBelief {
    /// From a posterior and the shown items' features; also returns ΣDᵀ (J × (k − 1)), which
    /// lifts a step on z back to λ.
    pub fn from_posterior(
        posterior: &Posterior,
        shown: &[DVector<f64>],
        beta: f64,
    ) -> (Self, DMatrix<f64>) {
        let j = posterior.dim();
        let d = DMatrix::from_fn(shown.len() - 1, j, |i, c| {
            beta * (shown[i + 1][c] - shown[0][c])
        });
        let lift = posterior.cov() * d.transpose();
        let cov = &d * &lift;
        let cov = (&cov + cov.transpose()) * 0.5;
        (
            Self {
                center: &d * posterior.mean(),
                cov,
            },
            lift,
        )
    }

    /// From a question's pool of candidates (`set` are positions in it): O(k²J).
    pub fn from_pool(pool: &Pool, set: &[Position], beta: f64) -> Self {
        let (center, cov) = pool.set_predictive(set, beta);
        Self { center, cov }
    }

    /// The number of items shown, k.
    pub fn choices(&self) -> usize {
        self.center.len() + 1
    }

    /// z = c + A t with A = U s over the numerically non-zero eigen-directions of S (t ~ N(0, I_r));
    /// returns A and U s⁻¹ (which turns ΣDᵀ into the lift B = ΣDᵀ U s⁻¹).
    fn whiten(&self) -> (DMatrix<f64>, DMatrix<f64>) {
        let r = self.center.len();
        if r == 0 {
            return (DMatrix::zeros(0, 0), DMatrix::zeros(0, 0));
        }
        let eigen = SymmetricEigen::new(self.cov.clone());
        let largest = eigen.eigenvalues.max().max(f64::MIN_POSITIVE);
        let kept: Vec<usize> = (0..r)
            .filter(|&i| eigen.eigenvalues[i] > 1e-10 * largest)
            .collect();
        let axes = DMatrix::from_fn(r, kept.len(), |row, c| {
            eigen.eigenvectors[(row, kept[c])] * eigen.eigenvalues[kept[c]].sqrt()
        });
        let inverse = DMatrix::from_fn(r, kept.len(), |row, c| {
            eigen.eigenvectors[(row, kept[c])] / eigen.eigenvalues[kept[c]].sqrt()
        });
        (axes, inverse)
    }
}

/// log P(answer | z) for every answer (the shown items, reference first) at utilities (0, z).
fn log_choice_probabilities(z: &[f64], lapse: f64, out: &mut [f64]) {
    let k = z.len() + 1;
    out[0] = 0.0;
    out[1..].copy_from_slice(z);
    let top = out.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let norm = top + out.iter().map(|u| (u - top).exp()).sum::<f64>().ln();
    for u in out.iter_mut() {
        let log_softmax = *u - norm;
        *u = if lapse > 0.0 {
            ((1.0 - lapse) * log_softmax.exp() + lapse / k as f64).ln()
        } else {
            log_softmax
        };
    }
}

/// One answer's step: log P(answer | earlier answers) and the rank-one pieces (uₖ, c₁, c₂) whose
/// sequence μ += c₁u, Σ −= c₂uuᵀ is the ADF update.
#[derive(Debug, Clone)]
pub struct ChoiceStep {
    pub log_evidence: f64,
    pub pieces: Vec<(DVector<f64>, RankOne)>,
}

impl ChoiceStep {
    /// Applies the step to a posterior.
    pub fn apply(&self, posterior: &mut Posterior) {
        for (u, step) in &self.pieces {
            posterior.apply_along(u, *step);
        }
    }
}

/// Checks a shown set: 2…[`MAX_CHOICES`] items of the posterior's dimension, finite features.
fn validate_shown(shown: &[DVector<f64>], dim: usize) -> Result<(), ModelError> {
    if !(2..=MAX_CHOICES).contains(&shown.len()) {
        return Err(ModelError::invalid(
            "items",
            format!(
                "a question shows 2 to {MAX_CHOICES} items, got {}",
                shown.len()
            ),
        ));
    }
    if shown.iter().any(|f| f.len() != dim) {
        return Err(ModelError::invalid(
            "items",
            format!("every shown item needs {dim} features"),
        ));
    }
    if shown.iter().any(|f| f.iter().any(|v| !v.is_finite())) {
        return Err(ModelError::invalid(
            "items",
            "features must be finite numbers",
        ));
    }
    Ok(())
}

/// The mode t* of g(t) = log softmax(0, c + At)_chosen − ½|t|² (the lapse-free part, which is
/// concave) by damped Newton, and the lower Cholesky factor C of the inverse of −∇²g there: the
/// Laplace approximation N(t*, CCᵀ) of the tilted density, on which the quadrature is placed.
/// A rule centred on the prior instead misses the skewed tilted density of a confident answer
/// (32 nodes: errors of 10⁻² in the mean at a predictive sd of 10).
fn laplace_frame(
    center: &DVector<f64>,
    axes: &DMatrix<f64>,
    chosen: usize,
) -> (DVector<f64>, DMatrix<f64>) {
    let r = axes.ncols();
    let k = center.len() + 1;
    let mut logs = vec![0.0; k];
    // g(t), and the softmax probabilities at t.
    let evaluate = |t: &DVector<f64>, logs: &mut [f64]| {
        let z: Vec<f64> = (center + axes * t).iter().copied().collect();
        log_choice_probabilities(&z, 0.0, logs);
        logs[chosen] - 0.5 * t.norm_squared()
    };
    let mut t = DVector::zeros(r);
    let mut value = evaluate(&t, &mut logs);
    let mut precision = DMatrix::identity(r, r);
    for _ in 0..100 {
        // ∇g = Aᵀ(e_chosen − p)_z − t, −∇²g = I + Aᵀ(diag p − ppᵀ)_z A over the z coordinates.
        let p: Vec<f64> = logs.iter().map(|l| l.exp()).collect();
        let residual = DVector::from_fn(k - 1, |i, _| {
            f64::from(u8::from(chosen == i + 1)) - p[i + 1]
        });
        let curvature = DMatrix::from_fn(k - 1, k - 1, |i, j| {
            f64::from(u8::from(i == j)) * p[i + 1] - p[i + 1] * p[j + 1]
        });
        precision = DMatrix::identity(r, r) + axes.transpose() * curvature * axes;
        let gradient = axes.transpose() * residual - &t;
        let Some(chol) = precision.clone().cholesky() else {
            break;
        };
        let step = chol.solve(&gradient);
        let mut scale = 1.0;
        let mut improved = false;
        for _ in 0..40 {
            let candidate = &t + &step * scale;
            let candidate_value = evaluate(&candidate, &mut logs);
            if candidate_value >= value {
                t = candidate;
                value = candidate_value;
                improved = true;
                break;
            }
            scale *= 0.5;
        }
        if !improved {
            evaluate(&t, &mut logs);
        }
        if !improved || step.norm() * scale < 1e-10 * (1.0 + t.norm()) {
            break;
        }
    }
    let frame = precision
        .cholesky()
        .and_then(|c| c.inverse().cholesky())
        .map_or_else(|| DMatrix::identity(r, r), |c| c.l());
    (t, frame)
}

/// The rule's nodes placed on the Laplace frame t = t* + Cξ, with their log importance weights
/// ln w + ln p(chosen | t) − ½|t|² + ½|ξ|² (points one after another, r coordinates each).
fn tilted_nodes(
    rule: &TensorRule,
    belief: &SetBelief,
    axes: &DMatrix<f64>,
    (centre, frame): (&DVector<f64>, &DMatrix<f64>),
    chosen: usize,
    lapse: f64,
) -> (Vec<f64>, Vec<f64>) {
    let r = axes.ncols();
    let k = belief.choices();
    let mut points = Vec::with_capacity(rule.points.len());
    let mut log_weights = Vec::with_capacity(rule.weights.len());
    let mut t = vec![0.0; r];
    let mut z = vec![0.0; k - 1];
    let mut logs = vec![0.0; k];
    for (xi, w) in rule.nodes() {
        // t = t* + Cξ with C lower triangular.
        for (a, ta) in t.iter_mut().enumerate() {
            *ta = centre[a] + (0..=a).map(|b| frame[(a, b)] * xi[b]).sum::<f64>();
        }
        for (i, zi) in z.iter_mut().enumerate() {
            *zi = belief.center[i] + (0..r).map(|c| axes[(i, c)] * t[c]).sum::<f64>();
        }
        log_choice_probabilities(&z, lapse, &mut logs);
        let squares = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
        log_weights.push(w.ln() + logs[chosen] - 0.5 * squares(&t) + 0.5 * squares(xi));
        points.extend_from_slice(&t);
    }
    (points, log_weights)
}

/// The ADF step for the answer "`chosen` is the best of `shown`" (see the module docs).
pub fn choice_step(
    posterior: &Posterior,
    shown: &[DVector<f64>],
    chosen: usize,
    noise: &NoiseModel,
) -> Result<ChoiceStep, ModelError> {
    validate_shown(shown, posterior.dim())?;
    if chosen >= shown.len() {
        return Err(ModelError::invalid(
            "choice",
            format!("item {chosen} is not among the {} shown", shown.len()),
        ));
    }
    if shown.len() == 2 {
        // A pair: the pairwise step, whose 1-D quadrature is exact to 10⁻⁸ (update.rs), where a
        // Gauss–Hermite rule is off by 10⁻³ on a confident answer.
        let x = (&shown[0] - &shown[1]) * noise.beta;
        let outcome = if chosen == 0 { Outcome::A } else { Outcome::B };
        let lik = NoiseModel {
            tie_threshold: 0.0,
            ..*noise
        }
        .likelihood(outcome)?;
        let predictive = posterior.predictive(&x);
        let outcome = step_for(&predictive, &lik, UpdateMethod::Adf);
        return Ok(ChoiceStep {
            log_evidence: outcome.log_evidence,
            pieces: vec![(predictive.u, outcome.step)],
        });
    }
    set_step(posterior, shown, chosen, noise, Nodes::Table(update_rule))
}

/// The ADF step for k ≥ 3 by the rule `nodes`.
fn set_step(
    posterior: &Posterior,
    shown: &[DVector<f64>],
    chosen: usize,
    noise: &NoiseModel,
    nodes: Nodes,
) -> Result<ChoiceStep, ModelError> {
    let (belief, lift) = SetBelief::from_posterior(posterior, shown, noise.beta);
    let (axes, to_white) = belief.whiten();
    let r = axes.ncols();
    let k = shown.len();
    let (centre, frame) = laplace_frame(&belief.center, &axes, chosen);
    let log_det_frame: f64 = frame.diagonal().iter().map(|d| d.ln()).sum();
    // Tilted moments of t: Z = E p, m_t = E[p t]/Z, C_t = E[p ttᵀ]/Z − m_t m_tᵀ, by the rule
    // placed on the Laplace approximation t = t* + Cξ (importance weights φ(t)/φ(ξ)·|C|), with
    // log weights shifted by their largest value so that tiny predictives stay exact.
    // The lapse-free part by the rule on the Laplace frame; the lapse part ε/k is flat, so its
    // tilted density is the prior N(0, I) itself and mixes in exactly (as in the pairwise step):
    // a rule centred on the lapse-free mode would miss the prior mass far from it.
    let (points, log_weights) = nodes.with(r, |rule| {
        tilted_nodes(rule, &belief, &axes, (&centre, &frame), chosen, 0.0)
    });
    let top = log_weights
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max);
    let mut mass = 0.0;
    let mut first = DVector::zeros(r);
    let mut second = DMatrix::<f64>::zeros(r, r);
    for (t, log_weight) in points.chunks_exact(r.max(1)).zip(&log_weights) {
        let p = (log_weight - top).exp();
        mass += p;
        for a in 0..r {
            first[a] += p * t[a];
            for b in 0..=a {
                second[(a, b)] += p * t[a] * t[b];
            }
        }
    }
    if r == 0 {
        mass = (log_weights[0] - top).exp();
    }
    let second = DMatrix::from_fn(r, r, |a, b| second[(a.max(b), a.min(b))] / mass);
    let mean = first / mass;
    // Mixture weights of the two parts, (1 − ε)Z₀ and ε/k, normalised in log space.
    let log_free = (-noise.lapse).ln_1p() + mass.ln() + top + log_det_frame;
    let log_flat = if noise.lapse > 0.0 {
        (noise.lapse / k as f64).ln()
    } else {
        f64::NEG_INFINITY
    };
    let log_evidence = log_add_exp(log_free, log_flat);
    let (w_free, w_flat) = (
        (log_free - log_evidence).exp(),
        (log_flat - log_evidence).exp(),
    );
    let mean = mean * w_free;
    let second = second * w_free + DMatrix::identity(r, r) * w_flat;
    let core = second - &mean * mean.transpose() - DMatrix::identity(r, r);
    if r == 0 {
        return Ok(ChoiceStep {
            log_evidence,
            pieces: Vec::new(),
        });
    }
    let lift = lift * to_white;
    let eigen = SymmetricEigen::new(core);
    let pieces = (0..r)
        .map(|c| {
            let v = eigen.eigenvectors.column(c);
            // C_t ⪰ 0 makes every eigenvalue of C_t − I at least −1, and uₖ has unit Σ⁻¹-norm,
            // so Σ − c₂uuᵀ with c₂ < 1 stays positive definite; the clamp guards round-off.
            let c2 = (-eigen.eigenvalues[c]).min(1.0 - 1e-9);
            (
                &lift * v,
                RankOne {
                    c1: v.dot(&mean),
                    c2,
                },
            )
        })
        .collect();
    Ok(ChoiceStep {
        log_evidence,
        pieces,
    })
}

/// The expected information gain of a shown set in bits, I(y; λ) = H[E p(y|λ)] − E H[p(y|λ)],
/// over the k answers (skips carry no information).
pub fn information_bits(belief: &SetBelief, noise: &NoiseModel) -> f64 {
    information_with(belief, noise, Nodes::Table(information_rule))
}

/// [`information_bits`] by the rule `nodes`.
fn information_with(belief: &SetBelief, noise: &NoiseModel, nodes: Nodes) -> f64 {
    let (axes, _) = belief.whiten();
    nodes.with(axes.ncols(), |rule| {
        information_by_rule(belief, &axes, noise, rule)
    })
}

fn information_by_rule(
    belief: &SetBelief,
    axes: &DMatrix<f64>,
    noise: &NoiseModel,
    rule: &TensorRule,
) -> f64 {
    let k = belief.choices();
    let floor = noise.lapse / k as f64;
    // Utilities (0, z) at a node; axes are read row by row from a contiguous copy.
    let rows: Vec<Vec<f64>> = (0..k - 1)
        .map(|i| axes.row(i).iter().copied().collect())
        .collect();
    let mut p = vec![0.0; k];
    let mut average = vec![0.0; k];
    let mut expected_entropy = 0.0;
    for (t, w) in rule.nodes() {
        // P(i) = (1 − ε)·softmax(0, z)ᵢ + ε/k: k exponentials and k logarithms a node.
        p[0] = 0.0;
        for (i, row) in rows.iter().enumerate() {
            p[i + 1] = belief.center[i] + row.iter().zip(t).map(|(a, x)| a * x).sum::<f64>();
        }
        let top = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for u in p.iter_mut() {
            *u = (*u - top).exp();
            total += *u;
        }
        let keep = (1.0 - noise.lapse) / total;
        let mut entropy = 0.0;
        for (a, u) in average.iter_mut().zip(p.iter_mut()) {
            *u = keep * *u + floor;
            *a += w * *u;
            if *u > 0.0 {
                entropy -= *u * u.ln();
            }
        }
        expected_entropy += w * entropy / std::f64::consts::LN_2;
    }
    (entropy_bits(&average) - expected_entropy).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, StandardNormal};

    fn gauss(rng: &mut StdRng) -> f64 {
        StandardNormal.sample(rng)
    }

    #[test]
    fn rules_are_fine_enough() {
        let mut rng = StdRng::seed_from_u64(11);
        let noise = NoiseModel {
            beta: 1.0,
            lapse: 0.05,
            tie_threshold: 0.0,
        };
        let j = 5;
        let trials = 20;
        for k in 3..=MAX_CHOICES {
            let r = k - 1;
            let (mut worst_kl, mut worst_bits, mut total_bits) = (0.0f64, 0.0f64, 0.0);
            for _ in 0..trials {
                // Broad beliefs: utility differences with sd ≈ 2.5.
                let a = DMatrix::from_fn(j, j, |_, _| gauss(&mut rng));
                let cov = &a * a.transpose() / j as f64 + DMatrix::identity(j, j) * 0.1;
                let mean = DVector::from_fn(j, |_, _| gauss(&mut rng));
                let posterior = Posterior::new(mean, cov).unwrap();
                let shown: Vec<DVector<f64>> = (0..k)
                    .map(|_| DVector::from_fn(j, |_, _| 1.5 * gauss(&mut rng)))
                    .collect();
                let apply = |nodes| {
                    let mut q = posterior.clone();
                    set_step(&posterior, &shown, k - 1, &noise, nodes)
                        .unwrap()
                        .apply(&mut q);
                    q
                };
                let fine = apply(Nodes::PerDimension(UPDATE_NODES[r] * 3 / 2));
                let kl_bits = fine.kl_bits(&apply(Nodes::Table(update_rule))).unwrap();
                worst_kl = worst_kl.max(kl_bits * std::f64::consts::LN_2);
                let (belief, _) = SetBelief::from_posterior(&posterior, &shown, noise.beta);
                let reference = Nodes::PerDimension(INFORMATION_NODES[r] * 3 / 2);
                let bits = (information_bits(&belief, &noise)
                    - information_with(&belief, &noise, reference))
                .abs();
                worst_bits = worst_bits.max(bits);
                total_bits += bits;
            }
            let mean_bits = total_bits / trials as f64;
            assert!(worst_kl < 1e-3, "k={k}: one-step KL {worst_kl}");
            assert!(
                mean_bits < 0.02,
                "k={k}: information off by {mean_bits} bits on average"
            );
            assert!(
                worst_bits < 0.1,
                "k={k}: information off by {worst_bits} bits"
            );
        }
    }
}
