//! The over-personalisation guard: how far a user's scores may move from the population's.
//!
//! A per-user reward model loses the averaging of a population model and can learn to flatter a
//! user (GUIDE §5). The guard scores with the geometric blend of the population prior p₀ and the
//! user's posterior q_u, in natural parameters
//!
//!   Λ_α = (1 − α)Λ₀ + αΛ_u,   h_α = (1 − α)h₀ + αh_u,
//!
//! with α ∈ [0, 1] the largest value that keeps KL(q_α ‖ p₀) ≤ τ bits. Along this path the
//! divergence grows monotonically from 0 at α = 0 (its derivative is α times the variance of
//! log q_u/p₀ under q_α), so bisection finds α. Dimensions marked non-personalisable (safety,
//! factuality, …) take the population's marginal exactly: their mean and variance are p₀'s, and
//! they are uncorrelated with the personalised dimensions; the budget applies to the personalised
//! dimensions' marginal.

use nalgebra::{DMatrix, DVector};

use super::ModelError;
use super::posterior::Posterior;

/// Bisection steps on α: 2⁻⁴⁰ resolution, far below anything a score can show.
const BISECTION_STEPS: usize = 40;

/// How far scoring may move from the population.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// τ: the largest KL(q_α ‖ p₀) allowed, in bits (∞: no budget).
    pub budget_bits: f64,
    /// Coordinates that always take the population's coefficient.
    pub fixed: Vec<usize>,
}

/// The distribution to score with, and how much of the user it kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Guarded {
    pub posterior: Posterior,
    /// The blend weight of the user's posterior (1: the user's own, 0: the population's).
    pub alpha: f64,
    /// KL(q_α ‖ p₀) over the personalised dimensions, in bits.
    pub divergence_bits: f64,
}

impl Guard {
    /// The distribution to score `user` with, given the population `prior`.
    pub fn apply(&self, prior: &Posterior, user: &Posterior) -> Result<Guarded, ModelError> {
        let j = prior.dim();
        if user.dim() != j {
            return Err(ModelError::invalid(
                "posterior",
                "dimensions differ from the prior",
            ));
        }
        if self.budget_bits.is_nan() || self.budget_bits < 0.0 {
            return Err(ModelError::invalid("budget_bits", "must be at least 0"));
        }
        if let Some(&bad) = self.fixed.iter().find(|&&d| d >= j) {
            return Err(ModelError::invalid(
                "fixed",
                format!("dimension {bad} is out of range"),
            ));
        }
        let free: Vec<usize> = (0..j).filter(|d| !self.fixed.contains(d)).collect();
        let singular = || ModelError::invalid("posterior", "covariance is not positive definite");
        let (alpha, blended, divergence_bits) = if free.is_empty() {
            (0.0, prior.marginal(&free), 0.0)
        } else {
            let p0 = prior.marginal(&free);
            let qu = user.marginal(&free);
            let (lambda0, h0) = p0.natural().ok_or_else(singular)?;
            let (lambda_u, h_u) = qu.natural().ok_or_else(singular)?;
            let blend = |alpha: f64| -> Result<(Posterior, f64), ModelError> {
                let q = Posterior::from_natural(
                    &(&lambda0 * (1.0 - alpha) + &lambda_u * alpha),
                    &(&h0 * (1.0 - alpha) + &h_u * alpha),
                )
                .ok_or_else(singular)?;
                let kl = q.kl_bits(&p0).ok_or_else(singular)?;
                Ok((q, kl))
            };
            // α = 1 is the user's own marginal, exactly (not a round trip through Λ, h).
            let kl_full = qu.kl_bits(&p0).ok_or_else(singular)?;
            if kl_full <= self.budget_bits {
                (1.0, qu, kl_full)
            } else {
                // Invariant: kl(lo) ≤ τ < kl(hi).
                let (mut lo, mut hi) = (0.0, 1.0);
                let (mut best, mut best_kl) = (p0.clone(), 0.0);
                for _ in 0..BISECTION_STEPS {
                    let mid = 0.5 * (lo + hi);
                    let (q, kl) = blend(mid)?;
                    if kl <= self.budget_bits {
                        (lo, best, best_kl) = (mid, q, kl);
                    } else {
                        hi = mid;
                    }
                }
                (lo, best, best_kl)
            }
        };
        Ok(Guarded {
            posterior: self.assemble(prior, &free, &blended),
            alpha,
            divergence_bits,
        })
    }

    /// The full distribution: the blend on the free coordinates, p₀'s marginal on the fixed ones,
    /// no correlation between the two groups (positive definite by construction).
    fn assemble(&self, prior: &Posterior, free: &[usize], blended: &Posterior) -> Posterior {
        let j = prior.dim();
        let mut mean = prior.mean().clone();
        let mut cov = DMatrix::zeros(j, j);
        for (a, &fa) in self.fixed.iter().enumerate() {
            for &fb in &self.fixed[a..] {
                cov[(fa, fb)] = prior.cov()[(fa, fb)];
                cov[(fb, fa)] = prior.cov()[(fa, fb)];
            }
        }
        for (a, &da) in free.iter().enumerate() {
            mean[da] = blended.mean()[a];
            for (b, &db) in free.iter().enumerate() {
                cov[(da, db)] = blended.cov()[(a, b)];
            }
        }
        Posterior::new(DVector::from_iterator(j, mean.iter().copied()), cov)
            .expect("a block-diagonal assembly of two valid covariances is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A random SPD matrix AᵀA + 0.1·I and a mean, from a flat vector of entries.
    fn gaussian(j: usize, entries: &[f64], shift: f64) -> Posterior {
        let a = DMatrix::from_fn(j, j, |r, c| entries[(r * j + c) % entries.len()]);
        let cov = a.transpose() * &a + DMatrix::identity(j, j) * 0.1;
        let mean = DVector::from_fn(j, |i, _| entries[i % entries.len()] * shift);
        Posterior::new(mean, (&cov + cov.transpose()) * 0.5).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn never_exceeds_the_budget_and_keeps_fixed_dimensions(
            j in 1usize..7,
            prior_entries in prop::collection::vec(-1.5f64..1.5, 49),
            user_entries in prop::collection::vec(-1.0f64..1.0, 49),
            shift in -4.0f64..4.0,
            budget in 0.0f64..6.0,
            fixed_mask in 0u8..128,
        ) {
            let prior = gaussian(j, &prior_entries, 0.3);
            let user = gaussian(j, &user_entries, shift);
            let fixed: Vec<usize> = (0..j).filter(|d| fixed_mask & (1 << d) != 0).collect();
            let guard = Guard { budget_bits: budget, fixed: fixed.clone() };
            let out = guard.apply(&prior, &user).unwrap();
            prop_assert!(out.divergence_bits <= budget + 1e-12);
            prop_assert!((0.0..=1.0).contains(&out.alpha));
            let free: Vec<usize> = (0..j).filter(|d| !fixed.contains(d)).collect();
            if !free.is_empty() {
                let kl = out.posterior.marginal(&free).kl_bits(&prior.marginal(&free)).unwrap();
                prop_assert!((kl - out.divergence_bits).abs() < 1e-9 * (1.0 + kl));
                // α is the largest such weight: a little more breaks the budget.
                if out.alpha < 1.0 {
                    let more = Guard { budget_bits: f64::INFINITY, fixed: fixed.clone() };
                    let unbounded = more.apply(&prior, &user).unwrap();
                    prop_assert!(unbounded.divergence_bits > budget);
                }
            }
            for &d in &fixed {
                prop_assert_eq!(out.posterior.mean()[d], prior.mean()[d]);
                for &e in &fixed {
                    prop_assert_eq!(out.posterior.cov()[(d, e)], prior.cov()[(d, e)]);
                }
                for &f in &free {
                    prop_assert_eq!(out.posterior.cov()[(d, f)], 0.0);
                }
            }
        }
    }

    #[test]
    fn an_unbinding_budget_keeps_the_user() {
        let prior = Posterior::isotropic(3, 1.0).unwrap();
        let user = Posterior::new(
            DVector::from_vec(vec![0.4, -0.2, 0.1]),
            DMatrix::identity(3, 3) * 0.5,
        )
        .unwrap();
        let out = Guard {
            budget_bits: 10.0,
            fixed: vec![],
        }
        .apply(&prior, &user)
        .unwrap();
        assert_eq!(out.alpha, 1.0);
        assert!((out.posterior.mean() - user.mean()).amax() < 1e-12);
        assert!((out.posterior.cov() - user.cov()).amax() < 1e-12);
        let kl = user.kl_bits(&prior).unwrap();
        assert!((out.divergence_bits - kl).abs() < 1e-12);
    }

    #[test]
    fn a_zero_budget_is_the_population() {
        let prior =
            Posterior::new(DVector::from_vec(vec![0.5, 0.0]), DMatrix::identity(2, 2)).unwrap();
        let user = Posterior::new(
            DVector::from_vec(vec![3.0, -2.0]),
            DMatrix::identity(2, 2) * 0.1,
        )
        .unwrap();
        let out = Guard {
            budget_bits: 0.0,
            fixed: vec![],
        }
        .apply(&prior, &user)
        .unwrap();
        assert_eq!(out.alpha, 0.0);
        assert!((out.posterior.mean() - prior.mean()).amax() < 1e-12);
    }

    #[test]
    fn kl_matches_the_closed_form_in_one_dimension() {
        // KL(N(1, 0.5) ‖ N(0, 2)) = ½(0.25 + 0.5 − 1 + ln 4) nats.
        let q = Posterior::new(
            DVector::from_vec(vec![1.0]),
            DMatrix::from_element(1, 1, 0.5),
        )
        .unwrap();
        let p = Posterior::new(
            DVector::from_vec(vec![0.0]),
            DMatrix::from_element(1, 1, 2.0),
        )
        .unwrap();
        let nats = 0.5 * (0.25 + 0.5 - 1.0 + 4f64.ln());
        assert!((q.kl_bits(&p).unwrap() - nats / std::f64::consts::LN_2).abs() < 1e-12);
    }
}
