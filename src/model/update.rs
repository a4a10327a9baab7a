//! Streaming posterior updates: one rank-one code path, three ways to choose its scalars.
//!
//! Before an answer with direction x: u = Σx, m = xᵀμ, v = xᵀu. Every method returns (c₁, c₂)
//! for μ' = μ + c₁u, Σ' = Σ − c₂uuᵀ, which keeps Σ' SPD iff c₂v < 1; the new belief about f is
//! N(m + c₁v, v(1 − c₂v)).

use serde::{Deserialize, Serialize};

use super::likelihood::{Likelihood, MixtureComponent};
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

/// Moments of the tilted density p̃(f) ∝ N(f; m, v)·p(y | f), computed in log space.
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

/// Points per tilted integral at most (reached only for extreme prior variances).
const MAX_TILTED_POINTS: usize = 4096;

/// Tilted moments by the trapezoidal rule on the Laplace-centred support, in log space.
///
/// Why not a Gauss–Hermite rule on the prior: the tilted density of a logistic answer is skewed
/// (one side decays like the prior, the other like the likelihood), and GH centred anywhere
/// converges slowly and erratically on it (20 nodes: 3·10⁻⁵ error in the mean after one answer).
/// The trapezoidal rule converges geometrically for analytic, fast-decaying integrands: the
/// logistic's poles lie π off the real axis, so a step h ≤ 1 leaves an error ≈ e^{−2π²/h} < 10⁻⁸,
/// and h ≤ s/3 (s the Laplace width) resolves narrow posteriors (s/1.5 did not: 3·10⁻⁷ in the
/// covariance after one answer; `tests/inference.rs` holds it to 10⁻⁸ against a 40,001-point
/// Simpson rule). The support runs until the log density is 30 nats below its mode (a tail of
/// 10⁻¹³). Typically 30–100 points.
fn tilted_by_quadrature(mean: f64, variance: f64, lik: &impl Likelihood) -> Tilted {
    let (centre, spread) = laplace_centre(mean, variance, lik);
    let s = spread.sqrt();
    let log_density = |f: f64| -(f - mean).powi(2) / (2.0 * variance) + lik.log_prob(f);
    let floor = log_density(centre) - 30.0;
    let edge = |direction: f64| {
        let mut step = s;
        let mut f = centre;
        for _ in 0..200 {
            f += direction * step;
            if log_density(f) < floor {
                break;
            }
            step *= 1.25;
        }
        f
    };
    let (lo, hi) = (edge(-1.0), edge(1.0));
    let mut h = (s / 3.0).min(1.0);
    let mut n = ((hi - lo) / h).ceil() as usize + 1;
    if n > MAX_TILTED_POINTS {
        n = MAX_TILTED_POINTS;
        h = (hi - lo) / (n - 1) as f64;
    }
    let mut max = f64::NEG_INFINITY;
    let mut weights: Vec<f64> = (0..n)
        .map(|k| {
            let l = log_density(lo + k as f64 * h);
            max = max.max(l);
            l
        })
        .collect();
    // Each point's weight exp(l − max) is taken once and kept for both moments: the exponentials
    // are most of an integral's cost (EP at a session's finish spends its time here).
    let (mut total, mut first) = (0.0, 0.0);
    for (k, w) in weights.iter_mut().enumerate() {
        *w = (*w - max).exp();
        total += *w;
        first += *w * (lo + k as f64 * h);
    }
    let tilted_mean = first / total;
    let second: f64 = weights
        .iter()
        .enumerate()
        .map(|(k, w)| w * (lo + k as f64 * h - tilted_mean).powi(2))
        .sum();
    Tilted {
        log_z: max + (total * h).ln() - 0.5 * (2.0 * std::f64::consts::PI * variance).ln(),
        mean: tilted_mean,
        variance: second / total,
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
pub fn adf(mean: f64, variance: f64, lik: &impl Likelihood) -> RankOne {
    let t = tilted_moments(mean, variance, lik);
    RankOne {
        c1: (t.mean - mean) / variance,
        c2: (variance - t.variance) / (variance * variance),
    }
}

/// R-VGA (Lambert, Bonnabel & Bach 2022): the fixed point of
/// m' = m + v·a(m', v'), v' = v / (1 + v·b(m', v')), with a = E[ℓ′(f)], b = E[−ℓ″(f)] under
/// N(m', v'); then c₁ = a, c₂ = b / (1 + b·v).
pub fn rvga(mean: f64, variance: f64, lik: &impl Likelihood) -> RankOne {
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
    // Start from the ADF moments: close to the fixed point, so a few iterations suffice.
    let start = tilted_moments(mean, variance, lik);
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
pub fn jaakkola_jordan(mean: f64, variance: f64, lik: &impl Likelihood) -> RankOne {
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
    let step = match method {
        UpdateMethod::Adf => adf(mean, variance, lik),
        UpdateMethod::Rvga => rvga(mean, variance, lik),
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
    let log_evidence = if v < MIN_VARIANCE {
        lik.log_prob(m)
    } else {
        log_predictive(m, v, lik)
    };
    let step = rank_one(method, m, v, lik);
    UpdateOutcome {
        step,
        log_evidence,
        det_ratio: 1.0 - step.c2 * v,
    }
}
