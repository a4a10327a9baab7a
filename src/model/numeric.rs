//! Scalar numerics shared by the likelihoods, the updates and question selection:
//! stable logistic functions, entropies and Gauss–Hermite quadrature for expectations under a
//! normal distribution.

use std::sync::OnceLock;

use nalgebra::{DMatrix, SymmetricEigen};

/// Logistic function σ(t) = 1 / (1 + e^{−t}), evaluated without overflow for any finite t.
#[inline]
pub fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// log σ(t) = −log(1 + e^{−t}), accurate in both tails (≈ t for t ≪ 0, ≈ −e^{−t} for t ≫ 0).
#[inline]
pub fn log_sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        -(-t).exp().ln_1p()
    } else {
        t - t.exp().ln_1p()
    }
}

/// e^{−|t|}: the one exponential from which σ(t), σ(−t) and log σ(t) all follow (the value
/// [`sigmoid`]'s two branches take).
#[inline]
pub fn exp_of_minus_abs(t: f64) -> f64 {
    if t >= 0.0 { (-t).exp() } else { t.exp() }
}

/// (σ(t), σ(−t)) given e = e^{−|t|}.
#[inline]
fn sigmoid_pair_from(t: f64, e: f64) -> (f64, f64) {
    let (large, small) = (1.0 / (1.0 + e), e / (1.0 + e));
    if t >= 0.0 {
        (large, small)
    } else {
        (small, large)
    }
}

/// (σ(t), σ(−t)) from one exponential, each equal to the bit to [`sigmoid`].
#[inline]
pub fn sigmoid_pair(t: f64) -> (f64, f64) {
    sigmoid_pair_from(t, exp_of_minus_abs(t))
}

/// (log σ(t), σ(t), σ(−t)) from one exponential, equal to the bit to [`log_sigmoid`] and
/// [`sigmoid_pair`]: what a logistic term's log and its two derivatives need, for a fifth of the
/// exponentials of calling them apart.
#[inline]
pub fn logistic_parts(t: f64) -> (f64, f64, f64) {
    let e = exp_of_minus_abs(t);
    let log = if t >= 0.0 { -e.ln_1p() } else { t - e.ln_1p() };
    let (up, down) = sigmoid_pair_from(t, e);
    (log, up, down)
}

/// σ′(t) = σ(t)·σ(−t), the logistic density.
#[inline]
pub fn sigmoid_slope(t: f64) -> f64 {
    let (up, down) = sigmoid_pair(t);
    up * down
}

/// The standard normal CDF Φ(t) = ½ erfc(−t/√2), accurate in both tails.
pub fn normal_cdf(t: f64) -> f64 {
    0.5 * libm::erfc(-t / std::f64::consts::SQRT_2)
}

/// E σ(f) for f ~ N(m, s²), the logistic-normal integral, within 10⁻⁹ at any s².
///
/// Up to s² = ½ by the 16-node rule (within 10⁻¹¹ there; 3·10⁻⁹ off at s² = 1, 0.007 at 25 and
/// 0.04 at 100, where its nodes lie farther apart than the logistic is wide). Above, σ(f) =
/// Φ(κf) + r(f) with κ = √(π/8): E Φ(κf) = Φ(κm/√(1 + κ²s²)) exactly, and the remainder r is
/// odd, analytic in the strip |Im f| < π and dies like e^{−|f|}, so the trapezoidal rule on the
/// logistic's fixed grid fₖ = k/2, |fₖ| ≤ 36, gives E r(f) to about e^{−2π²/h}·e^{π²/2s²} ≤ 10⁻¹³
/// whatever s (the bound the tilted moments rest on too, `update.rs`): three exponentials, an
/// erfc and at most 145 multiply-adds.
pub fn expected_sigmoid(m: f64, s2: f64) -> f64 {
    if s2.is_nan() || s2 <= EXPECTED_SIGMOID_RULE_MAX_VARIANCE {
        return gauss_hermite_16().expect(m, s2, sigmoid);
    }
    let kappa = probit_kappa();
    let probit = normal_cdf(kappa * m / (1.0 + kappa * kappa * s2).sqrt());
    (probit + expected_probit_remainder(m, s2)).clamp(0.0, 1.0)
}

/// κ = √(π/8), the scale at which Φ(κf) matches σ(f)'s slope at 0.
fn probit_kappa() -> f64 {
    (std::f64::consts::PI / 8.0).sqrt()
}

/// Up to this s² [`expected_sigmoid`] uses the 16-node rule.
const EXPECTED_SIGMOID_RULE_MAX_VARIANCE: f64 = 0.5;

/// The step of the logistic's grid, and its nodes each side of 0 (|f| ≤ 36: beyond, σ(f) is
/// within 3·10⁻¹⁶ of 0 or 1).
const LOGISTIC_GRID_STEP: f64 = 0.5;
const LOGISTIC_GRID_HALF_NODES: usize = 72;

/// σ(fₖ) − Φ(κfₖ) at the logistic's grid fₖ = (k − 72)/2, k = 0…144.
fn probit_remainders() -> &'static [f64] {
    static VALUES: OnceLock<Vec<f64>> = OnceLock::new();
    VALUES.get_or_init(|| {
        (0..=2 * LOGISTIC_GRID_HALF_NODES)
            .map(|k| (k as f64 - LOGISTIC_GRID_HALF_NODES as f64) * LOGISTIC_GRID_STEP)
            .map(|f| sigmoid(f) - normal_cdf(probit_kappa() * f))
            .collect()
    })
}

/// E[σ(f) − Φ(κf)] for f ~ N(m, s²) by the trapezoidal rule on the logistic's grid (the
/// remainder is negligible beyond it), over the nodes within 9s of m. The normal weights come from
/// a recurrence: exp(−(fₖ − m)²/2s²) times a ratio to the next node, the ratio itself shrinking by
/// exp(−h²/s²) a step. Meant for s² > ½, where the step h = ½ resolves the normal density.
fn expected_probit_remainder(m: f64, s2: f64) -> f64 {
    let h = LOGISTIC_GRID_STEP;
    let s = s2.sqrt();
    let reach = LOGISTIC_GRID_HALF_NODES as f64 * h;
    let first = ((m - 9.0 * s).max(-reach) / h).ceil();
    let last = ((m + 9.0 * s).min(reach) / h).floor();
    if first.is_nan() || last.is_nan() || first > last {
        return 0.0;
    }
    let t = first * h - m;
    let mut weight = (-t * t / (2.0 * s2)).exp();
    let mut ratio = (-(2.0 * t * h + h * h) / (2.0 * s2)).exp();
    let decay = (-h * h / s2).exp();
    let mut sum = 0.0;
    let offset = LOGISTIC_GRID_HALF_NODES as f64;
    for &value in &probit_remainders()[(first + offset) as usize..=(last + offset) as usize] {
        sum += weight * value;
        weight *= ratio;
        ratio *= decay;
    }
    sum * h / (s * (2.0 * std::f64::consts::PI).sqrt())
}

/// An integer that orders as [`f64::total_cmp`] orders `x`: the IEEE bits, the magnitude bits
/// flipped for negatives. Hot sorts sort (key, index) tuples by value, without a comparator that
/// reads the scores through their indices.
#[inline]
pub fn total_order_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

/// log(eᵃ + eᵇ) without overflow; −∞ is an identity element.
#[inline]
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    let hi = a.max(b);
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + ((a - hi).exp() + (b - hi).exp()).ln()
}

/// Entropy in bits of a discrete distribution, −Σ pᵢ log₂ pᵢ (0 log 0 = 0).
#[inline]
pub fn entropy_bits(probabilities: &[f64]) -> f64 {
    probabilities
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -p * p.log2())
        .sum()
}

/// Binary entropy h(p) in bits.
#[inline]
pub fn binary_entropy_bits(p: f64) -> f64 {
    entropy_bits(&[p, 1.0 - p])
}

/// A Gauss–Hermite rule for the standard normal: E[g(Z)] ≈ Σₖ wₖ g(zₖ), Z ~ N(0, 1), Σ wₖ = 1.
///
/// Exact for polynomials of degree ≤ 2K − 1.
#[derive(Debug, Clone)]
pub struct GaussHermite {
    pub nodes: Vec<f64>,
    pub weights: Vec<f64>,
}

impl GaussHermite {
    /// Builds a K-node rule by the Golub–Welsch algorithm: the nodes are the eigenvalues of the
    /// Jacobi matrix of the probabilists' Hermite polynomials (off-diagonal √k), the weights are the
    /// squared first components of its normalised eigenvectors.
    pub fn new(k: usize) -> Self {
        assert!(k >= 1, "a quadrature rule needs at least one node");
        let jacobi = DMatrix::from_fn(k, k, |i, j| {
            if i.abs_diff(j) == 1 {
                (i.max(j) as f64).sqrt()
            } else {
                0.0
            }
        });
        let eigen = SymmetricEigen::new(jacobi);
        let mut pairs: Vec<(f64, f64)> = (0..k)
            .map(|i| (eigen.eigenvalues[i], eigen.eigenvectors[(0, i)].powi(2)))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = pairs.iter().map(|p| p.1).sum();
        Self {
            nodes: pairs.iter().map(|p| p.0).collect(),
            weights: pairs.iter().map(|p| p.1 / total).collect(),
        }
    }

    /// E[g(F)] for F ~ N(mean, variance).
    pub fn expect(&self, mean: f64, variance: f64, mut g: impl FnMut(f64) -> f64) -> f64 {
        let sd = variance.max(0.0).sqrt();
        self.nodes
            .iter()
            .zip(&self.weights)
            .map(|(z, w)| w * g(mean + sd * z))
            .sum()
    }

    /// The nodes f = mean + sd·z of the rule for N(mean, variance), paired with their weights.
    pub fn points(&self, mean: f64, variance: f64) -> impl Iterator<Item = (f64, f64)> + '_ {
        let sd = variance.max(0.0).sqrt();
        self.nodes
            .iter()
            .zip(&self.weights)
            .map(move |(z, w)| (mean + sd * z, *w))
    }
}

/// The 20-node rule for the expectations of the R-VGA fixed point.
pub fn gauss_hermite_20() -> &'static GaussHermite {
    static RULE: OnceLock<GaussHermite> = OnceLock::new();
    RULE.get_or_init(|| GaussHermite::new(20))
}

/// The 16-node rule used to re-score the best candidate questions. Its error grows with the
/// belief's variance: the information within 0.03 bits of a 96-node rule for |m| ≤ 8, s² ≤ 25
/// (`tests/inference.rs`), and against a dense rule 0.12 bits off at s² = 100
/// ([`super::information::information_quadrature`] says why). [`expected_sigmoid`] uses it only
/// up to s² = ½.
pub fn gauss_hermite_16() -> &'static GaussHermite {
    static RULE: OnceLock<GaussHermite> = OnceLock::new();
    RULE.get_or_init(|| GaussHermite::new(16))
}

/// A high-order rule for reference computations and tests.
pub fn gauss_hermite_96() -> &'static GaussHermite {
    static RULE: OnceLock<GaussHermite> = OnceLock::new();
    RULE.get_or_init(|| GaussHermite::new(96))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-exponential forms are the two-branch functions to the bit, tails and zeros
    /// included.
    #[test]
    fn logistic_parts_equal_the_logistic_functions_to_the_bit() {
        let mut points = vec![0.0, -0.0, 1e-300, -1e-300, 745.0, -745.0, 800.0, -800.0];
        points.extend((-4000..=4000).map(|k| k as f64 * 0.0173));
        for t in points {
            let (log, up, down) = logistic_parts(t);
            let bits = |x: f64| x.to_bits();
            assert_eq!(bits(log), bits(log_sigmoid(t)), "log σ({t})");
            assert_eq!(bits(up), bits(sigmoid(t)), "σ({t})");
            assert_eq!(bits(down), bits(sigmoid(-t)), "σ(−{t})");
            assert_eq!(sigmoid_pair(t), (up, down));
            assert_eq!(bits(up * down), bits(sigmoid_slope(t)));
        }
        assert!(logistic_parts(f64::NAN).0.is_nan());
    }

    #[test]
    fn total_order_keys_order_as_total_cmp() {
        let special = [
            f64::NEG_INFINITY,
            -f64::MAX,
            -1.5,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1e-300,
            2.5,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
            -f64::NAN,
        ];
        let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
        let mut values: Vec<f64> = special.to_vec();
        for _ in 0..2_000 {
            // Arbitrary bit patterns: every sign, exponent and payload.
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            values.push(f64::from_bits(rng_state));
        }
        for x in &values {
            for y in &values[..200] {
                assert_eq!(
                    total_order_key(*x).cmp(&total_order_key(*y)),
                    x.total_cmp(y),
                    "{x:e} vs {y:e}"
                );
            }
        }
    }

    #[test]
    fn gauss_hermite_integrates_normal_moments_exactly() {
        let rule = GaussHermite::new(20);
        // E[Z^{2n}] = (2n − 1)!!
        let double_factorial = [1.0, 1.0, 3.0, 15.0, 105.0, 945.0];
        for (n, expected) in double_factorial.iter().enumerate() {
            let got = rule.expect(0.0, 1.0, |z| z.powi(2 * n as i32));
            assert!(
                (got - expected).abs() < 1e-9 * expected.max(1.0),
                "n={n}: {got}"
            );
            let odd = rule.expect(0.0, 1.0, |z| z.powi(2 * n as i32 + 1));
            assert!(odd.abs() < 1e-9);
        }
        let shifted = rule.expect(1.5, 4.0, |f| f * f);
        assert!((shifted - (4.0 + 2.25)).abs() < 1e-12);
    }

    #[test]
    fn logistic_functions_are_stable_in_the_tails() {
        assert_eq!(sigmoid(-800.0), 0.0);
        assert_eq!(sigmoid(800.0), 1.0);
        assert!((log_sigmoid(-800.0) + 800.0).abs() < 1e-12);
        assert!(log_sigmoid(800.0) <= 0.0 && log_sigmoid(800.0) > -1e-300);
        assert!((log_sigmoid(0.3) - sigmoid(0.3).ln()).abs() < 1e-15);
        assert!((log_add_exp(f64::NEG_INFINITY, 2.0) - 2.0).abs() < 1e-15);
        assert!((log_add_exp(1000.0, 1000.0) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert!((binary_entropy_bits(0.5) - 1.0).abs() < 1e-15);
    }
}
