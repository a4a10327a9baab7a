//! The answer model: how likely each answer to a comparison is, given the latent utility
//! difference f = λᵀx with x = β(φa − φb).
//!
//! Every likelihood here depends on λ only through the scalar f, which is why every posterior
//! update in [`crate::model::update`] is rank one.

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::numeric::{
    exp_of_minus_abs, expected_sigmoid, log_add_exp, log_sigmoid, logistic_parts, sigmoid,
    sigmoid_pair,
};

/// What the user said about a question "a or b?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// a is preferred.
    A,
    /// b is preferred.
    B,
    /// Neither is preferred (needs a model with a tie threshold η > 0).
    Tie,
    /// No answer; carries no information about λ.
    Skip,
}

impl Choice {
    /// The informative outcome of this choice, `None` for a skip.
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            Choice::A => Some(Outcome::A),
            Choice::B => Some(Outcome::B),
            Choice::Tie => Some(Outcome::Tie),
            Choice::Skip => None,
        }
    }
}

/// An informative answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    A,
    B,
    Tie,
}

/// How strongly a graded answer prefers its side ("slightly" or "clearly" better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strength {
    Slightly,
    Clearly,
}

/// Answer-noise parameters of a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseModel {
    /// Scale β: x = β(φa − φb). Larger means more deterministic answers.
    pub beta: f64,
    /// Lapse rate ε ∈ [0, 1): the probability that an answer is given uniformly at random.
    pub lapse: f64,
    /// Rao–Kupper tie threshold η ≥ 0; 0 disables ties.
    pub tie_threshold: f64,
}

impl Default for NoiseModel {
    fn default() -> Self {
        Self {
            beta: 1.0,
            lapse: 0.0,
            tie_threshold: 0.0,
        }
    }
}

impl NoiseModel {
    /// Checks the ranges: β > 0 finite, 0 ≤ ε < 1, 0 ≤ η finite.
    pub fn validate(&self) -> Result<(), ModelError> {
        if !(self.beta.is_finite() && self.beta > 0.0 && self.beta <= 1e6) {
            return Err(ModelError::invalid(
                "noise.beta",
                "must be a finite number in (0, 1e6]",
            ));
        }
        if !(self.lapse.is_finite() && (0.0..1.0).contains(&self.lapse)) {
            return Err(ModelError::invalid("noise.lapse", "must be in [0, 1)"));
        }
        if !(self.tie_threshold.is_finite() && (0.0..=50.0).contains(&self.tie_threshold)) {
            return Err(ModelError::invalid(
                "noise.tie_threshold",
                "must be in [0, 50]",
            ));
        }
        Ok(())
    }

    /// Whether `tie` is an answer this model can explain.
    pub fn ties_enabled(&self) -> bool {
        self.tie_threshold > 0.0
    }

    /// The outcomes a user can give under this model.
    pub fn outcomes(&self) -> &'static [Outcome] {
        if self.ties_enabled() {
            &[Outcome::A, Outcome::B, Outcome::Tie]
        } else {
            &[Outcome::A, Outcome::B]
        }
    }

    /// The likelihood of a pair answer: plain, or graded with strength threshold `threshold`
    /// ([`NoiseModel::graded_likelihood`]); a tie has no strength.
    pub fn answer_likelihood(
        &self,
        outcome: Outcome,
        strength: Option<Strength>,
        threshold: f64,
    ) -> Result<PairLikelihood, ModelError> {
        match (strength, outcome) {
            (None, _) => self.likelihood(outcome),
            (Some(_), Outcome::Tie) => Err(ModelError::invalid(
                "strength",
                "a tie has no strength; grade an answer for a or b",
            )),
            (Some(strength), _) => self.graded_likelihood(outcome, strength, threshold),
        }
    }

    /// The answers a pair question allows, among which a lapse picks uniformly: a, b (and a tie
    /// when ties are enabled), each side split in two when the answer is graded.
    pub fn answer_outcomes(&self, graded: bool) -> usize {
        self.outcomes().len() + if graded { 2 } else { 0 }
    }

    /// The likelihood of `outcome` as a function of f; an error for a tie when ties are disabled.
    pub fn likelihood(&self, outcome: Outcome) -> Result<PairLikelihood, ModelError> {
        if outcome == Outcome::Tie && !self.ties_enabled() {
            return Err(ModelError::TiesDisabled);
        }
        Ok(PairLikelihood::new(*self, outcome))
    }

    /// The likelihood of a graded answer, an ordered logit: the preferred side's mass σ(±f − η)
    /// is split at a strength threshold θ > 0 into "clearly", σ(±f − η − θ), and "slightly",
    /// σ(±f − η) − σ(±f − η − θ) = σ(±f − η)·σ(θ + η ∓ f)·(1 − e^{−θ}) (a product of two logistic
    /// terms, like a tie). A lapse answers uniformly over the K = 4 graded outcomes (5 with ties).
    pub fn graded_likelihood(
        &self,
        outcome: Outcome,
        strength: Strength,
        threshold: f64,
    ) -> Result<PairLikelihood, ModelError> {
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(ModelError::invalid(
                "strength_threshold",
                "must be positive and finite",
            ));
        }
        let sign = match outcome {
            Outcome::A => 1.0,
            Outcome::B => -1.0,
            Outcome::Tie => {
                return Err(ModelError::invalid("strength", "a tie has no strength"));
            }
        };
        let eta = self.tie_threshold;
        let t = |sign: f64, offset: f64| LogisticTerm { sign, offset };
        let (terms, n_terms, log_const) = match strength {
            Strength::Clearly => ([t(sign, -eta - threshold), t(0.0, 0.0)], 1, 0.0),
            Strength::Slightly => (
                [t(sign, -eta), t(-sign, threshold + eta)],
                2,
                (-(-threshold).exp_m1()).ln(),
            ),
        };
        Ok(PairLikelihood::from_terms(
            *self,
            (terms, n_terms, log_const),
            self.outcomes().len() + 2,
        ))
    }

    /// P(outcome | f) for each outcome of [`Self::outcomes`], in that order.
    pub fn outcome_probabilities(&self, f: f64, out: &mut [f64; 3]) -> usize {
        let outcomes = self.outcomes();
        for (slot, &o) in out.iter_mut().zip(outcomes) {
            *slot = PairLikelihood::new(*self, o).log_prob(f).exp();
        }
        outcomes.len()
    }

    /// P(a) = E p(a | f) for a belief f ~ N(m, s²): with [`PairLikelihood`]'s p(a | f) =
    /// ε/K + (1 − ε)·σ(f − η), it is ε/K + (1 − ε)·E σ(f − η), exact at any s²
    /// ([`expected_sigmoid`]).
    pub fn expected_strict_preference(&self, m: f64, s2: f64) -> f64 {
        let outcomes = self.outcomes().len() as f64;
        self.lapse / outcomes + (1.0 - self.lapse) * expected_sigmoid(m - self.tie_threshold, s2)
    }
}

/// A likelihood of one observation as a function of the scalar f; what every update method needs.
pub trait Likelihood {
    /// log p(y | f).
    fn log_prob(&self, f: f64) -> f64;
    /// (ℓ′(f), ℓ″(f)) for ℓ = log p(y | f).
    fn log_prob_derivatives(&self, f: f64) -> (f64, f64);
    /// A Gaussian site exp(−τf²/2 + νf) that lower-bounds p(y | f) up to a constant and touches it
    /// where the current belief N(mean, variance) about f puts its mass (Jaakkola–Jordan for the
    /// logistic terms); returns (τ, ν).
    fn gaussian_bound(&self, mean: f64, variance: f64) -> (f64, f64);
    /// For a lapse mixture p(y|f) = a + b·g(f): (log a, log b). `None` for other likelihoods.
    fn lapse_mixture(&self) -> Option<(f64, f64)> {
        None
    }
    /// log g(f) and its first two derivatives, for the g of [`Likelihood::lapse_mixture`].
    fn mixture_component(&self, f: f64) -> (f64, f64, f64) {
        let (d1, d2) = self.log_prob_derivatives(f);
        (self.log_prob(f), d1, d2)
    }
    /// (log g)′ and (log g)″ alone (equal, to the bit, to [`Likelihood::mixture_component`]'s
    /// last two): what Newton's steps to the mode of g's tilted density need.
    fn mixture_derivatives(&self, f: f64) -> (f64, f64) {
        let (_, d1, d2) = self.mixture_component(f);
        (d1, d2)
    }
    /// g(f + k·step)/g(f), k = 1, 2, …, for g the likelihood's lapse-free part (the g of
    /// [`Likelihood::lapse_mixture`], or the likelihood itself when it has none), when g can give
    /// them without a logarithm at every point ([`LogisticRatios`]); `None` otherwise.
    fn core_ratios(&self, _f: f64, _step: f64) -> Option<LogisticRatios> {
        None
    }
    /// log g(f) alone: what a quadrature point of g's tilted moments needs, without the
    /// derivatives' exponentials (equal, to the bit, to [`Likelihood::mixture_component`]'s first).
    fn mixture_log_component(&self, f: f64) -> f64 {
        self.mixture_component(f).0
    }
}

/// The component g of a lapse mixture as a likelihood of its own (log-concave for every answer
/// model here, which is what the quadrature of [`crate::model::update::tilted_moments`] wants).
#[derive(Debug, Clone, Copy)]
pub struct MixtureComponent<'a, L: ?Sized>(pub &'a L);

impl<L: Likelihood + ?Sized> Likelihood for MixtureComponent<'_, L> {
    fn log_prob(&self, f: f64) -> f64 {
        self.0.mixture_log_component(f)
    }
    fn log_prob_derivatives(&self, f: f64) -> (f64, f64) {
        self.0.mixture_derivatives(f)
    }
    fn gaussian_bound(&self, mean: f64, variance: f64) -> (f64, f64) {
        self.0.gaussian_bound(mean, variance)
    }
    fn core_ratios(&self, f: f64, step: f64) -> Option<LogisticRatios> {
        self.0.core_ratios(f, step)
    }
}

/// A logistic factor σ(s·f + o), s = ±1.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LogisticTerm {
    sign: f64,
    offset: f64,
}

impl LogisticTerm {
    fn arg(&self, f: f64) -> f64 {
        self.sign * f + self.offset
    }
}

/// The ratios g(f + k·t)/g(f), k = 1, 2, …, of a product of logistic terms along a grid of step
/// t, at a division a term a point.
///
/// A term's σ(a + k·s·t)/σ(a) is (1 + e^{−a})/(1 + e^{−a}ρᵏ), ρ = e^{−s·t}; it is kept as
/// n/(c + d·ρᵏ) with n, c, d built from whichever of e^{−a}, e^{a} is at most 1 (so neither
/// overflows), and ρᵏ by one multiplication a step (relative error k·2⁻⁵³). Where ρᵏ overflows
/// the ratio is 0, as it should be. A quadrature of the tilted density then pays one exponential
/// a point (the prior's) instead of three.
#[derive(Debug, Clone)]
pub struct LogisticRatios {
    terms: [TermRatios; 2],
    n_terms: usize,
}

/// One term of [`LogisticRatios`]: the ratio at step k is `numerator / (offset + scale·ρᵏ)`.
#[derive(Debug, Clone, Copy, Default)]
struct TermRatios {
    numerator: f64,
    offset: f64,
    scale: f64,
    rho: f64,
    rho_k: f64,
}

impl TermRatios {
    /// σ(a + k·slope)/σ(a) for k = 1, 2, …; `None` for |a| > 700, where e^{−|a|} leaves the
    /// normal range (the caller evaluates logarithms instead).
    fn new(a: f64, slope: f64) -> Option<Self> {
        if !(-700.0..=700.0).contains(&a) {
            return None;
        }
        let e = exp_of_minus_abs(a);
        let (offset, scale) = if a >= 0.0 { (1.0, e) } else { (e, 1.0) };
        Some(Self {
            numerator: 1.0 + e,
            offset,
            scale,
            rho: (-slope).exp(),
            rho_k: 1.0,
        })
    }
}

impl Iterator for LogisticRatios {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        let mut ratio = 1.0;
        for term in &mut self.terms[..self.n_terms] {
            term.rho_k *= term.rho;
            ratio *= term.numerator / (term.offset + term.scale * term.rho_k);
        }
        Some(ratio)
    }
}

/// The Bradley–Terry / Rao–Kupper likelihood with a lapse rate:
/// p(y | f) = ε/K + (1 − ε)·g_y(f), with K the number of possible outcomes and
/// g_A = σ(f − η), g_B = σ(−f − η), g_tie = σ(f + η) − σ(f − η) = σ(f + η)·σ(η − f)·(1 − e^{−2η}).
///
/// Each g_y is a product of logistic terms (times a constant), so log g_y, its derivatives and its
/// Jaakkola–Jordan bound are sums over those terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairLikelihood {
    terms: [LogisticTerm; 2],
    n_terms: usize,
    log_const: f64,
    /// log(ε/K) and log(1 − ε) when ε > 0.
    lapse: Option<(f64, f64)>,
}

impl PairLikelihood {
    fn new(noise: NoiseModel, outcome: Outcome) -> Self {
        let eta = noise.tie_threshold;
        let t = |sign: f64, offset: f64| LogisticTerm { sign, offset };
        let (terms, n_terms, log_const) = match outcome {
            Outcome::A => ([t(1.0, -eta), t(0.0, 0.0)], 1, 0.0),
            Outcome::B => ([t(-1.0, -eta), t(0.0, 0.0)], 1, 0.0),
            Outcome::Tie => (
                [t(1.0, eta), t(-1.0, eta)],
                2,
                (-(-2.0 * eta).exp_m1()).ln(),
            ),
        };
        Self::from_terms(noise, (terms, n_terms, log_const), noise.outcomes().len())
    }

    /// g(f) = exp(log_const)·Π σ(terms), mixed with a lapse floor ε/K over K outcomes.
    fn from_terms(
        noise: NoiseModel,
        (terms, n_terms, log_const): ([LogisticTerm; 2], usize, f64),
        outcomes: usize,
    ) -> Self {
        let lapse = (noise.lapse > 0.0)
            .then(|| ((noise.lapse / outcomes as f64).ln(), (-noise.lapse).ln_1p()));
        Self {
            terms,
            n_terms,
            log_const,
            lapse,
        }
    }

    fn terms(&self) -> &[LogisticTerm] {
        &self.terms[..self.n_terms]
    }

    /// log g of the lapse-free part: [`PairLikelihood::core`]'s first value, summed in the same
    /// order, without the derivatives. A tilted integral evaluates it at every quadrature point,
    /// and the derivatives' three exponentials a term made most of that integral's cost.
    fn log_core(&self, f: f64) -> f64 {
        self.terms()
            .iter()
            .fold(self.log_const, |acc, term| acc + log_sigmoid(term.arg(f)))
    }

    /// (log g, (log g)′, (log g)″) of the lapse-free part: per term log σ(a), s·σ(−a) and
    /// −σ(a)σ(−a), from one exponential.
    fn core(&self, f: f64) -> (f64, f64, f64) {
        self.terms()
            .iter()
            .fold((self.log_const, 0.0, 0.0), |acc, term| {
                let (log, up, down) = logistic_parts(term.arg(f));
                (acc.0 + log, acc.1 + term.sign * down, acc.2 - up * down)
            })
    }

    /// [`PairLikelihood::core`]'s two derivatives alone, equal to its to the bit: what the Newton
    /// steps to a tilted density's mode need, without the log's ln(1 + e).
    fn core_derivatives(&self, f: f64) -> (f64, f64) {
        self.terms().iter().fold((0.0, 0.0), |acc, term| {
            let (up, down) = sigmoid_pair(term.arg(f));
            (acc.0 + term.sign * down, acc.1 - up * down)
        })
    }
}

impl Likelihood for PairLikelihood {
    fn log_prob(&self, f: f64) -> f64 {
        let log_g = self.log_core(f);
        match self.lapse {
            None => log_g,
            Some((log_floor, log_keep)) => log_add_exp(log_floor, log_keep + log_g),
        }
    }

    fn log_prob_derivatives(&self, f: f64) -> (f64, f64) {
        let Some((log_floor, log_keep)) = self.lapse else {
            return self.core_derivatives(f);
        };
        // p = ε/K + (1−ε)g; with r = (1−ε)g/p: ℓ′ = r·(log g)′, ℓ″ = r·((log g)″ + (log g)′²) − ℓ′².
        let (log_g, d1, d2) = self.core(f);
        let log_p = log_add_exp(log_floor, log_keep + log_g);
        let r = (log_keep + log_g - log_p).exp();
        let l1 = r * d1;
        (l1, r * (d2 + d1 * d1) - l1 * l1)
    }

    fn gaussian_bound(&self, mean: f64, variance: f64) -> (f64, f64) {
        // Jaakkola–Jordan: log σ(t) ≥ log σ(ξ) + (t − ξ)/2 − λ(ξ)(t² − ξ²), λ(ξ) = (σ(ξ) − ½)/(2ξ),
        // with ξ² = E[t²] under the current belief. For t = s·f + o this contributes precision
        // 2λ and linear coefficient s/2 − 2λ·s·o. The lapse mixture has no such bound: JJ ignores it.
        self.terms().iter().fold((0.0, 0.0), |(tau, nu), term| {
            let mean_t = term.sign * mean + term.offset;
            let xi = (variance + mean_t * mean_t).sqrt();
            let lambda = if xi < 1e-6 {
                0.125
            } else {
                (sigmoid(xi) - 0.5) / (2.0 * xi)
            };
            (
                tau + 2.0 * lambda,
                nu + term.sign * 0.5 - 2.0 * lambda * term.sign * term.offset,
            )
        })
    }

    fn lapse_mixture(&self) -> Option<(f64, f64)> {
        self.lapse
    }

    fn mixture_component(&self, f: f64) -> (f64, f64, f64) {
        self.core(f)
    }

    fn mixture_derivatives(&self, f: f64) -> (f64, f64) {
        self.core_derivatives(f)
    }

    fn core_ratios(&self, f: f64, step: f64) -> Option<LogisticRatios> {
        let mut terms = [TermRatios::default(); 2];
        for (slot, term) in terms.iter_mut().zip(self.terms()) {
            *slot = TermRatios::new(term.arg(f), term.sign * step)?;
        }
        Some(LogisticRatios {
            terms,
            n_terms: self.n_terms,
        })
    }

    fn mixture_log_component(&self, f: f64) -> f64 {
        self.log_core(f)
    }
}

/// A linear-Gaussian observation y = f + noise, noise ~ N(0, σ²). Not an answer type of the
/// service: the conjugate case in which every update method must equal the Kalman filter.
#[derive(Debug, Clone, Copy)]
pub struct GaussianObservation {
    pub value: f64,
    pub noise_variance: f64,
}

impl Likelihood for GaussianObservation {
    fn log_prob(&self, f: f64) -> f64 {
        let r = self.value - f;
        -0.5 * r * r / self.noise_variance
            - 0.5 * (2.0 * std::f64::consts::PI * self.noise_variance).ln()
    }

    fn log_prob_derivatives(&self, f: f64) -> (f64, f64) {
        (
            (self.value - f) / self.noise_variance,
            -1.0 / self.noise_variance,
        )
    }

    fn gaussian_bound(&self, _mean: f64, _variance: f64) -> (f64, f64) {
        (1.0 / self.noise_variance, self.value / self.noise_variance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(lapse: f64, tie: f64) -> NoiseModel {
        NoiseModel {
            beta: 1.0,
            lapse,
            tie_threshold: tie,
        }
    }

    #[test]
    fn outcome_probabilities_sum_to_one() {
        for model in [
            noise(0.0, 0.0),
            noise(0.1, 0.0),
            noise(0.0, 0.7),
            noise(0.2, 1.3),
        ] {
            for f in [-30.0, -2.0, 0.0, 0.4, 5.0, 40.0] {
                let mut p = [0.0; 3];
                let n = model.outcome_probabilities(f, &mut p);
                let total: f64 = p[..n].iter().sum();
                assert!((total - 1.0).abs() < 1e-12, "{model:?} f={f}: {total}");
            }
        }
    }

    /// Every answer kind a model allows: a, b and (with ties) the tie, and the graded a and b.
    fn every_answer(model: NoiseModel) -> Vec<PairLikelihood> {
        let mut likelihoods: Vec<PairLikelihood> = [Outcome::A, Outcome::B, Outcome::Tie]
            .iter()
            .filter_map(|&o| model.likelihood(o).ok())
            .collect();
        for o in [Outcome::A, Outcome::B] {
            for s in [Strength::Slightly, Strength::Clearly] {
                likelihoods.extend(model.graded_likelihood(o, s, 1.4).ok());
            }
        }
        likelihoods
    }

    /// The log-only path (`log_core`) and the derivatives-only path (`core_derivatives`) are
    /// `core`'s values to the bit, for every answer with and without a lapse; so are the mixture
    /// component's.
    #[test]
    fn the_log_alone_equals_the_log_with_its_derivatives() {
        for model in [noise(0.0, 0.0), noise(0.1, 0.0), noise(0.2, 0.8)] {
            for lik in &every_answer(model) {
                for f in [-700.0, -30.0, -2.0, -1e-9, 0.0, 0.4, 5.0, 40.0, 700.0] {
                    let (log_g, d1, d2) = lik.core(f);
                    assert_eq!(lik.log_core(f).to_bits(), log_g.to_bits(), "{lik:?} f={f}");
                    let (e1, e2) = lik.core_derivatives(f);
                    assert_eq!((e1.to_bits(), e2.to_bits()), (d1.to_bits(), d2.to_bits()));
                    assert_eq!(
                        lik.mixture_log_component(f).to_bits(),
                        lik.mixture_component(f).0.to_bits()
                    );
                    assert_eq!(lik.mixture_derivatives(f), (d1, d2));
                }
            }
        }
    }

    /// The recurrences of `core_ratios` give g(f + k·t)/g(f) as the logs do, to the logs' own
    /// round-off over 400 steps, on both sides, for every answer kind, from deep in either tail to the
    /// middle; past |a| = 700 there are none (the quadrature takes logs there).
    #[test]
    fn ratios_along_a_grid_equal_the_ratios_of_the_logs() {
        for model in [noise(0.0, 0.0), noise(0.2, 0.8)] {
            for lik in &every_answer(model) {
                for f in [-690.0, -60.0, -3.0, -0.2, 0.0, 1.7, 25.0, 690.0] {
                    for step in [-0.7, -0.05, 0.013, 0.35, 0.7] {
                        let ratios = lik.core_ratios(f, step).expect("within the range");
                        for (k, ratio) in (1..=400).zip(ratios) {
                            let (from, to) = (lik.log_core(f), lik.log_core(f + k as f64 * step));
                            let expected = (to - from).exp();
                            let error = (ratio - expected).abs() / expected.max(1e-300);
                            // The logs' own round-off: an ulp of each, 2⁻⁵²·|log g|.
                            let tolerance = 1e-14 * (10.0 + from.abs() + to.abs());
                            assert!(
                                error < tolerance || (expected < 1e-290 && ratio < 1e-280),
                                "{lik:?} f={f} t={step} k={k}: {ratio} against {expected}"
                            );
                        }
                    }
                }
                assert!(lik.core_ratios(-800.0, 0.1).is_none());
                assert!(lik.core_ratios(f64::NAN, 0.1).is_none());
            }
        }
    }

    /// The graded answers, with the tie when the model has one, are a distribution over f; a
    /// graded "a" splits the ungraded "a" exactly, and the likelihoods' derivatives are right.
    #[test]
    fn graded_outcomes_split_the_answer_and_sum_to_one() {
        let threshold = 1.4;
        let h = 1e-5;
        for model in [noise(0.0, 0.0), noise(0.1, 0.0), noise(0.2, 0.8)] {
            let graded = |o, s| model.graded_likelihood(o, s, threshold).unwrap();
            for f in [-30.0, -2.0, 0.0, 0.4, 5.0, 40.0] {
                let mut total = if model.ties_enabled() {
                    let plain_tie = NoiseModel {
                        lapse: 0.0,
                        ..model
                    }
                    .likelihood(Outcome::Tie);
                    let tie = plain_tie.unwrap().log_prob(f).exp();
                    // The tie keeps its lapse-free share; the floor is ε/5 for every outcome.
                    model.lapse / 5.0 + (1.0 - model.lapse) * tie
                } else {
                    0.0
                };
                for o in [Outcome::A, Outcome::B] {
                    let split: f64 = [Strength::Slightly, Strength::Clearly]
                        .iter()
                        .map(|&s| graded(o, s).log_prob(f).exp())
                        .sum();
                    total += split;
                    if model.lapse == 0.0 {
                        let whole = model.likelihood(o).unwrap().log_prob(f).exp();
                        assert!((split - whole).abs() < 1e-12, "{o:?} f={f}");
                    }
                }
                assert!((total - 1.0).abs() < 1e-12, "{model:?} f={f}: {total}");
            }
            for o in [Outcome::A, Outcome::B] {
                for s in [Strength::Slightly, Strength::Clearly] {
                    let l = graded(o, s);
                    for f in [-4.0, -0.3, 0.0, 1.1, 6.0] {
                        let (d1, d2) = l.log_prob_derivatives(f);
                        let fd1 = (l.log_prob(f + h) - l.log_prob(f - h)) / (2.0 * h);
                        let fd2 =
                            (l.log_prob(f + h) - 2.0 * l.log_prob(f) + l.log_prob(f - h)) / (h * h);
                        assert!((d1 - fd1).abs() < 1e-7, "{o:?} {s:?} f={f}");
                        assert!((d2 - fd2).abs() < 1e-4, "{o:?} {s:?} f={f}");
                    }
                }
            }
        }
        let model = noise(0.0, 0.0);
        assert!(
            model
                .graded_likelihood(Outcome::Tie, Strength::Slightly, 1.0)
                .is_err()
        );
        assert!(
            model
                .graded_likelihood(Outcome::A, Strength::Slightly, 0.0)
                .is_err()
        );
    }

    #[test]
    fn lapse_floor_and_bradley_terry_values() {
        let l = noise(0.1, 0.0).likelihood(Outcome::A).unwrap();
        assert!((l.log_prob(0.0).exp() - 0.5).abs() < 1e-15);
        assert!((l.log_prob(-1e3).exp() - 0.05).abs() < 1e-12);
        let plain = noise(0.0, 0.0).likelihood(Outcome::B).unwrap();
        assert!((plain.log_prob(1.2).exp() - sigmoid(-1.2)).abs() < 1e-15);
        assert!(matches!(
            noise(0.0, 0.0).likelihood(Outcome::Tie),
            Err(ModelError::TiesDisabled)
        ));
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let h = 1e-5;
        for model in [noise(0.0, 0.0), noise(0.15, 0.0), noise(0.05, 0.8)] {
            for &o in model.outcomes() {
                let l = model.likelihood(o).unwrap();
                for f in [-4.0, -0.3, 0.0, 1.1, 6.0] {
                    let (d1, d2) = l.log_prob_derivatives(f);
                    let fd1 = (l.log_prob(f + h) - l.log_prob(f - h)) / (2.0 * h);
                    let fd2 =
                        (l.log_prob(f + h) - 2.0 * l.log_prob(f) + l.log_prob(f - h)) / (h * h);
                    assert!((d1 - fd1).abs() < 1e-7, "{o:?} f={f} {d1} {fd1}");
                    assert!((d2 - fd2).abs() < 1e-4, "{o:?} f={f} {d2} {fd2}");
                }
            }
        }
    }

    #[test]
    fn jaakkola_jordan_site_is_a_lower_bound_touching_at_xi() {
        let l = noise(0.0, 0.0).likelihood(Outcome::A).unwrap();
        // With variance 0 the bound touches at f = mean.
        let mean = 1.7;
        let (tau, nu) = l.gaussian_bound(mean, 0.0);
        let site = |f: f64| -0.5 * tau * f * f + nu * f;
        let c = l.log_prob(mean) - site(mean);
        for f in [-5.0, -1.0, 0.0, 1.0, 1.7, 3.0, 8.0] {
            assert!(site(f) + c <= l.log_prob(f) + 1e-12, "f={f}");
        }
    }
}
