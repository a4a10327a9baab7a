//! Streaming posterior updates: one rank-one code path, three ways to choose its scalars.
//!
//! Before an answer with direction x: u = Σx, m = xᵀμ, v = xᵀu. Every method returns (c₁, c₂)
//! for μ' = μ + c₁u, Σ' = Σ − c₂uuᵀ, which keeps Σ' SPD iff c₂v < 1; the new belief about f is
//! N(m + c₁v, v(1 − c₂v)).

use serde::{Deserialize, Serialize};

use super::likelihood::{Likelihood, LogisticRatios, MixtureComponent};
use super::numeric::{gauss_hermite_20, log_add_exp};
use super::posterior::{Posterior, Predictive, RankOne};

/// Directions with a predictive variance below this carry no usable information (e.g. two items
/// with identical features); the update leaves the posterior unchanged.
const MIN_VARIANCE: f64 = 1e-12;
/// c₂v is kept below 1 − this, so v' = v(1 − c₂v) > 0 even for an essentially certain answer.
const MAX_SHRINK: f64 = 1.0 - 1e-9;

/// How the rank-one scalars are computed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMethod {
    /// Assumed density filtering: exact moment matching of the tilted density (forward KL).
    #[default]
    Adf,
    /// Recursive variational Gaussian approximation (reverse KL, implicit fixed point).
    Rvga,
    /// Jaakkola–Jordan variational bound with its local parameter iterated.
    Jj,
}

impl UpdateMethod {
    pub const ALL: [UpdateMethod; 3] = [UpdateMethod::Adf, UpdateMethod::Rvga, UpdateMethod::Jj];

    pub fn as_str(self) -> &'static str {
        match self {
            UpdateMethod::Adf => "adf",
            UpdateMethod::Rvga => "rvga",
            UpdateMethod::Jj => "jj",
        }
    }
}

impl std::str::FromStr for UpdateMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "adf" => Ok(Self::Adf),
            "rvga" => Ok(Self::Rvga),
            "jj" => Ok(Self::Jj),
            other => Err(format!("unknown update method '{other}' (adf, rvga, jj)")),
        }
    }
}

/// The result of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateOutcome {
    /// The scalars that were applied.
    pub step: RankOne,
    /// log Z = log p(answer | answers so far) = log E_{N(m,v)}[p(y | f)], the predictive probability
    /// of the observed answer before it was applied (the same for every method).
    pub log_evidence: f64,
    /// The multiplicative change of det Σ, 1 − c₂v (for incremental information accounting).
    pub det_ratio: f64,
}

/// Moments of the tilted density p̃(f) ∝ N(f; m, v)·p(y | f), and log Z (a quadrature's weights
/// are taken relative to the mode's, so nothing overflows).
#[derive(Debug, Clone, Copy)]
pub struct Tilted {
    /// log Z, Z = ∫ N(f; m, v) p(y | f) df.
    pub log_z: f64,
    pub mean: f64,
    pub variance: f64,
}

/// Moments of the tilted density p̃(f) ∝ N(f; m, v)·p(y | f).
///
/// A lapse mixture a + b·g(f) is split exactly: the tilted density is a mixture of the prior
/// N(m, v) (weight a) and g's tilted density (weight b·Z_g), and only g, which is log-concave, is
/// integrated numerically (see [`tilted_by_quadrature`]).
pub fn tilted_moments(mean: f64, variance: f64, lik: &impl Likelihood) -> Tilted {
    let Some((log_a, log_b)) = lik.lapse_mixture() else {
        return tilted_by_quadrature(mean, variance, lik);
    };
    let g = tilted_by_quadrature(mean, variance, &MixtureComponent(lik));
    let (log_wa, log_wg) = (log_a, log_b + g.log_z);
    let log_z = log_add_exp(log_wa, log_wg);
    let (wa, wg) = ((log_wa - log_z).exp(), (log_wg - log_z).exp());
    let tilted_mean = wa * mean + wg * g.mean;
    let variance = wa * (variance + (mean - tilted_mean).powi(2))
        + wg * (g.variance + (g.mean - tilted_mean).powi(2));
    Tilted {
        log_z,
        mean: tilted_mean,
        variance,
    }
}

/// Points per tilted integral at most; a support that needs more is covered with a coarser step
/// (reached only for extreme prior variances).
const MAX_TILTED_POINTS: usize = 4096;

/// The trapezoidal rule's step at most (see [`tilted_by_quadrature`]).
const MAX_STEP: f64 = 0.7;

/// Times the step may grow (1.5-fold) to cover a support in [`MAX_TILTED_POINTS`].
const MAX_COARSENINGS: usize = 40;

/// Tilted moments by the trapezoidal rule on a grid through the Laplace centre.
///
/// Why not a Gauss–Hermite rule on the prior: the tilted density of a logistic answer is skewed
/// (one side decays like the prior, the other like the likelihood), and GH centred anywhere
/// converges slowly and erratically on it (20 nodes: 3·10⁻⁵ error in the mean after one answer).
/// The trapezoidal rule converges geometrically for analytic, fast-decaying integrands: the
/// logistic's poles lie π off the real axis, so the error falls like e^{−2π²/h}. The step is
/// h ≤ s/2 (s the Laplace width), which resolves narrow posteriors, and h ≤ [`MAX_STEP`] = 0.7,
/// which the poles need when the belief is vague. Worst errors over
/// `tilted_moments_match_a_dense_rule_across_scales` (`tests/inference.rs`: log Z, mean and
/// variance against a 200,001-point Simpson rule, every answer kind, v from 10⁻⁶ to 10⁴): with
/// h ≤ s/3, a cap of 1 left 4·10⁻⁸ in log Z for a graded answer (two logistic terms) under v = 100,
/// 0.8 left 2·10⁻¹⁰, 0.7 leaves 3·10⁻¹²; with the cap at 0.7, s/1 leaves 10⁻⁸, s/1.5 7·10⁻¹¹,
/// s/2 7·10⁻¹². The grid walks out from the centre, a side at a time, and
/// stops at its first point 30 nats below the mode (a tail of 10⁻¹³), so every density it
/// evaluates is a point of the rule: no search for the support's ends beforehand (it cost ~13
/// evaluations of its own and overshot the floor by up to a quarter of the distance).
///
/// Each point's weight, the density over the centre's, is the prior's ratio (one exponential)
/// times the likelihood's: for a product of logistic terms (every pair answer's g) from the
/// terms' recurrences ([`Likelihood::core_ratios`]), else exp(ℓ(f) − ℓ(centre)). Walking
/// with logarithms cost an exponential and a logarithm a term a point, then an exponential for the
/// weight: three times the work, in EP's and the answers' hottest loop.
fn tilted_by_quadrature(mean: f64, variance: f64, lik: &impl Likelihood) -> Tilted {
    let (centre, spread) = laplace_centre(mean, variance, lik);
    let log_lik = lik.log_prob(centre);
    let peak = -(centre - mean).powi(2) / (2.0 * variance) + log_lik;
    // A density that is not finite at its mode has no floor to reach (every caller skips NaN
    // moments).
    if !peak.is_finite() {
        return Tilted {
            log_z: f64::NAN,
            mean: f64::NAN,
            variance: f64::NAN,
        };
    }
    // `core_ratios` are g's: the likelihood's own only when it has no lapse mixture.
    let mixture = lik.lapse_mixture().is_some();
    let side = |step: f64| Side {
        prior: PriorRatios::new(centre - mean, variance, step),
        likelihood: (if mixture {
            None
        } else {
            lik.core_ratios(centre, step)
        })
        .map_or(
            LikelihoodRatios::Logs {
                lik,
                centre,
                step,
                log_at_centre: log_lik,
                k: 0.0,
            },
            LikelihoodRatios::Logistic,
        ),
    };
    let mut h = (spread.sqrt() / 2.0).min(MAX_STEP);
    let mut grid = Grid::walk(side(-h), side(h));
    for _ in 0..MAX_COARSENINGS {
        if grid.complete {
            break;
        }
        h *= 1.5;
        grid = Grid::walk(side(-h), side(h));
    }
    grid.moments(centre, h, peak, variance)
}

/// The prior's ratio N(c + k·t; m, v)/N(c; m, v) = exp(−k·t·(2(c − m) + k·t)/(2v)) along a grid
/// side of step t from the centre c, k = 1, 2, ….
struct PriorRatios {
    /// (c − m)/v.
    pull: f64,
    /// 1/(2v).
    curvature: f64,
    step: f64,
    k: f64,
}

impl PriorRatios {
    fn new(offset: f64, variance: f64, step: f64) -> Self {
        Self {
            pull: offset / variance,
            curvature: 0.5 / variance,
            step,
            k: 0.0,
        }
    }

    fn next(&mut self) -> f64 {
        self.k += 1.0;
        let t = self.k * self.step;
        (-t * (self.pull + self.curvature * t)).exp()
    }
}

/// The likelihood's ratio g(c + k·t)/g(c) along a grid side, k = 1, 2, ….
enum LikelihoodRatios<'a, L> {
    /// A product of logistic terms, from their recurrences.
    Logistic(LogisticRatios),
    /// Any likelihood: exp(log g(c + k·t) − log g(c)).
    Logs {
        lik: &'a L,
        centre: f64,
        step: f64,
        log_at_centre: f64,
        k: f64,
    },
}

impl<L: Likelihood> LikelihoodRatios<'_, L> {
    fn next(&mut self) -> f64 {
        match self {
            Self::Logistic(ratios) => ratios.next().unwrap_or(0.0),
            Self::Logs {
                lik,
                centre,
                step,
                log_at_centre,
                k,
            } => {
                *k += 1.0;
                (lik.log_prob(*centre + *k * *step) - *log_at_centre).exp()
            }
        }
    }
}

/// One side of a grid: the density's ratio to the centre's at each point out from it.
struct Side<'a, L> {
    prior: PriorRatios,
    likelihood: LikelihoodRatios<'a, L>,
}

impl<L: Likelihood> Side<'_, L> {
    fn next(&mut self) -> f64 {
        self.prior.next() * self.likelihood.next()
    }
}

/// The density's ratios to the centre's at the grid points centre + k·h, each side walked until
/// its first point 30 nats below the centre.
struct Grid {
    /// At k = −1, −2, …
    left: Vec<f64>,
    /// At k = 1, 2, …
    right: Vec<f64>,
    /// Both sides reached the floor within [`MAX_TILTED_POINTS`] points in all.
    complete: bool,
}

impl Grid {
    fn walk<L: Likelihood>(mut left_side: Side<L>, mut right_side: Side<L>) -> Self {
        // e⁻³⁰: the floor, 30 nats below the centre.
        const FLOOR: f64 = 9.357_622_968_840_175e-14;
        let mut budget = MAX_TILTED_POINTS - 1;
        let mut side = |walk: &mut Side<L>, values: &mut Vec<f64>| -> bool {
            while budget > 0 {
                budget -= 1;
                let w = walk.next();
                values.push(w);
                // A NaN ends the side too (its moments come out NaN).
                if w < FLOOR || w.is_nan() {
                    return true;
                }
            }
            false
        };
        let (mut left, mut right) = (Vec::with_capacity(64), Vec::with_capacity(64));
        let reached_left = side(&mut left_side, &mut left);
        let reached_right = side(&mut right_side, &mut right);
        Self {
            left,
            right,
            complete: reached_left && reached_right,
        }
    }

    /// (offset from the centre, weight) of a side's points, `step` apart.
    fn side(values: &[f64], step: f64) -> impl Iterator<Item = (f64, f64)> + '_ {
        (values.iter().enumerate()).map(move |(k, &w)| ((k + 1) as f64 * step, w))
    }

    /// The trapezoidal rule's moments (the end points' weights are below e⁻³⁰ of the centre's,
    /// so every point counts whole), with offsets from the centre for their round-off; `peak` is
    /// the log density at the centre.
    fn moments(&self, centre: f64, h: f64, peak: f64, variance: f64) -> Tilted {
        let points = || {
            std::iter::once((0.0, 1.0))
                .chain(Self::side(&self.left, -h))
                .chain(Self::side(&self.right, h))
        };
        let (total, first) = points().fold((0.0, 0.0), |(z, m), (t, w)| (z + w, m + w * t));
        let offset = first / total;
        let second: f64 = points().map(|(t, w)| w * (t - offset).powi(2)).sum();
        Tilted {
            log_z: peak + (total * h).ln() - 0.5 * (2.0 * std::f64::consts::PI * variance).ln(),
            mean: centre + offset,
            variance: second / total,
        }
    }
}

/// The mode of log N(f; m, v) + ℓ(f) by safeguarded Newton, and the inverse curvature there
/// (kept within [10⁻⁶v, v]: a non-log-concave lapse likelihood can flatten the log density).
fn laplace_centre(mean: f64, variance: f64, lik: &impl Likelihood) -> (f64, f64) {
    let sd = variance.sqrt();
    let mut f = mean;
    for _ in 0..60 {
        let (d1, d2) = lik.log_prob_derivatives(f);
        let gradient = -(f - mean) / variance + d1;
        let curvature = (1.0 / variance - d2).max(1.0 / variance);
        let step = (gradient / curvature).clamp(-3.0 * sd, 3.0 * sd);
        f += step;
        if step.abs() <= 1e-12 * (1.0 + f.abs()) {
            break;
        }
    }
    let (_, d2) = lik.log_prob_derivatives(f);
    let spread = (1.0 / (1.0 / variance - d2)).clamp(1e-6 * variance, variance);
    (f, if spread.is_finite() { spread } else { variance })
}

/// log p(y | answers so far) = log E_{N(m,v)}[p(y | f)].
pub fn log_predictive(mean: f64, variance: f64, lik: &impl Likelihood) -> f64 {
    tilted_moments(mean, variance, lik).log_z
}

/// ADF / moment matching (exact 1-D moments by quadrature): c₁ = (m̃ − m)/v, c₂ = (v − ṽ)/v², so the new belief about f has
/// exactly the tilted mean m̃ and variance ṽ.
/// `t`: the tilted moments of N(`mean`, `variance`).
fn adf(mean: f64, variance: f64, t: &Tilted) -> RankOne {
    RankOne {
        c1: (t.mean - mean) / variance,
        c2: (variance - t.variance) / (variance * variance),
    }
}

/// R-VGA (Lambert, Bonnabel & Bach 2022): the fixed point of
/// m' = m + v·a(m', v'), v' = v / (1 + v·b(m', v')), with a = E[ℓ′(f)], b = E[−ℓ″(f)] under
/// N(m', v'); then c₁ = a, c₂ = b / (1 + b·v). Started from `start`, the tilted moments of
/// N(`mean`, `variance`) (ADF's answer, close to the fixed point).
fn rvga(mean: f64, variance: f64, lik: &impl Likelihood, start: &Tilted) -> RankOne {
    let rule = gauss_hermite_20();
    let expectations = |m: f64, v: f64| {
        let (mut a, mut b) = (0.0, 0.0);
        for (f, w) in rule.points(m, v) {
            let (d1, d2) = lik.log_prob_derivatives(f);
            a += w * d1;
            b -= w * d2;
        }
        // 1 + b·v must stay positive for Σ' to be SPD (b < 0 only for non-log-concave lapses).
        (a, b.max(-(1.0 - 1e-6) / variance))
    };
    let (mut m_new, mut v_new) = (start.mean, start.variance);
    for _ in 0..100 {
        let (a, b) = expectations(m_new, v_new);
        // Newton on g(m') = m' − m − v·a(m'), g′ = 1 + v·b (a plain fixed-point step if b < 0).
        let step = (m_new - mean - variance * a) / (1.0 + variance * b).max(1.0);
        let (m_next, v_next) = (m_new - step, variance / (1.0 + b * variance));
        let done = converged((m_new, v_new), (m_next, v_next));
        (m_new, v_new) = (m_next, v_next);
        if done {
            break;
        }
    }
    let (a, b) = expectations(m_new, v_new);
    RankOne {
        c1: a,
        c2: b / (1.0 + b * variance),
    }
}

/// Jaakkola–Jordan: replace p(y | f) by its Gaussian lower bound exp(−τf²/2 + νf) at the current
/// belief and iterate the bound's local parameter (EM on the bound): v' = v/(1 + τv),
/// m' = v'(m/v + ν); then c₁ = (m' − m)/v, c₂ = τ/(1 + τv). Ignores a lapse rate (no bound exists).
fn jaakkola_jordan(mean: f64, variance: f64, lik: &impl Likelihood) -> RankOne {
    let (mut m_new, mut v_new) = (mean, variance);
    let mut tau = 0.0;
    for _ in 0..200 {
        let (t, nu) = lik.gaussian_bound(m_new, v_new);
        tau = t;
        let v_next = variance / (1.0 + tau * variance);
        let m_next = v_next * (mean / variance + nu);
        let done = converged((m_new, v_new), (m_next, v_next));
        (m_new, v_new) = (m_next, v_next);
        if done {
            break;
        }
    }
    RankOne {
        c1: (m_new - mean) / variance,
        c2: tau / (1.0 + tau * variance),
    }
}

/// Whether a fixed-point iteration on the new belief (m', v') about f has settled.
fn converged((m_old, v_old): (f64, f64), (m_new, v_new): (f64, f64)) -> bool {
    (m_new - m_old).abs() <= 1e-12 * (1.0 + m_old.abs()) && (v_new - v_old).abs() <= 1e-12 * v_old
}

/// The rank-one scalars of `method` for the belief N(m, v) and an observation, with c₂v clamped
/// below 1 and directions of (numerically) zero variance left alone.
pub fn rank_one(method: UpdateMethod, mean: f64, variance: f64, lik: &impl Likelihood) -> RankOne {
    if variance < MIN_VARIANCE {
        return RankOne::NONE;
    }
    rank_one_from(method, mean, variance, lik, None)
}

/// [`rank_one`] for a variance of at least [`MIN_VARIANCE`], with the tilted moments if already
/// taken (ADF and R-VGA need them; Jaakkola–Jordan does without).
fn rank_one_from(
    method: UpdateMethod,
    mean: f64,
    variance: f64,
    lik: &impl Likelihood,
    tilted: Option<Tilted>,
) -> RankOne {
    let tilted = || tilted.unwrap_or_else(|| tilted_moments(mean, variance, lik));
    let step = match method {
        UpdateMethod::Adf => adf(mean, variance, &tilted()),
        UpdateMethod::Rvga => rvga(mean, variance, lik, &tilted()),
        UpdateMethod::Jj => jaakkola_jordan(mean, variance, lik),
    };
    if !(step.c1.is_finite() && step.c2.is_finite()) {
        return RankOne::NONE;
    }
    RankOne {
        c1: step.c1,
        c2: step.c2.min(MAX_SHRINK / variance),
    }
}

impl Posterior {
    /// Updates the posterior with one observation of f = λᵀx. O(J²).
    pub fn update(
        &mut self,
        x: &nalgebra::DVector<f64>,
        lik: &impl Likelihood,
        method: UpdateMethod,
    ) -> UpdateOutcome {
        let predictive = self.predictive(x);
        self.update_along(&predictive, lik, method)
    }

    /// As [`Posterior::update`], for a predictive already computed.
    pub fn update_along(
        &mut self,
        predictive: &Predictive,
        lik: &impl Likelihood,
        method: UpdateMethod,
    ) -> UpdateOutcome {
        let outcome = step_for(predictive, lik, method);
        self.apply(predictive, outcome.step);
        outcome
    }
}

/// The step an answer with likelihood `lik` along `predictive` would make, without making it.
pub fn step_for(
    predictive: &Predictive,
    lik: &impl Likelihood,
    method: UpdateMethod,
) -> UpdateOutcome {
    let (m, v) = (predictive.mean, predictive.variance);
    if v < MIN_VARIANCE {
        return UpdateOutcome {
            step: RankOne::NONE,
            log_evidence: lik.log_prob(m),
            det_ratio: 1.0,
        };
    }
    // One tilted integral gives both the evidence and, for ADF and R-VGA, the step.
    let tilted = tilted_moments(m, v, lik);
    let step = rank_one_from(method, m, v, lik, Some(tilted));
    UpdateOutcome {
        step,
        log_evidence: tilted.log_z,
        det_ratio: 1.0 - step.c2 * v,
    }
}
