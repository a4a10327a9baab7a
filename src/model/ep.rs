//! Batch expectation propagation over a session's stored answers.
//!
//! Each answer i contributes a Gaussian site exp(−τᵢfᵢ²/2 + νᵢfᵢ) in fᵢ = λᵀxᵢ, so
//! Σ⁻¹ = Σ₀⁻¹ + Σᵢ τᵢxᵢxᵢᵀ and Σ⁻¹μ = Σ₀⁻¹μ₀ + Σᵢ νᵢxᵢ. A sweep revisits every site: remove it
//! (cavity), moment-match the tilted density, put the new site back. The first sweep from empty
//! sites is exactly ADF; further sweeps remove ADF's dependence on the order of the answers.

use nalgebra::{DMatrix, DVector};

use super::likelihood::Likelihood;
use super::posterior::{Posterior, RankOne};
use super::update::tilted_moments;

/// One answer's contribution to the EP approximation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Site {
    pub tau: f64,
    pub nu: f64,
}

/// Settings of an EP run.
#[derive(Debug, Clone, Copy)]
pub struct EpOptions {
    /// Number of full sweeps over the answers.
    pub sweeps: usize,
    /// Fraction of each site change applied after the first sweep (1 = undamped).
    pub damping: f64,
    /// Stop early when no site parameter moves more than this.
    pub tolerance: f64,
}

impl Default for EpOptions {
    fn default() -> Self {
        Self {
            sweeps: 8,
            damping: 0.7,
            tolerance: 1e-9,
        }
    }
}

/// Runs EP from `prior` over `observations` (direction x, likelihood) and returns the refined
/// posterior and its sites. Falls back to the rank-one state if the final natural-parameter
/// refresh is not positive definite.
pub fn refine<L: Likelihood>(
    prior: &Posterior,
    observations: &[(DVector<f64>, L)],
    options: EpOptions,
) -> (Posterior, Vec<Site>) {
    let mut posterior = prior.clone();
    let mut sites = vec![Site::default(); observations.len()];
    for sweep in 0..options.sweeps.max(1) {
        let damping = if sweep == 0 { 1.0 } else { options.damping };
        let mut largest_change = 0.0f64;
        for ((x, lik), site) in observations.iter().zip(sites.iter_mut()) {
            let predictive = posterior.predictive(x);
            let (m, v) = (predictive.mean, predictive.variance);
            if v < 1e-12 {
                continue;
            }
            // Cavity: remove this site from the belief about f.
            let cavity_precision = 1.0 / v - site.tau;
            if cavity_precision <= 1e-12 {
                continue;
            }
            let v_cav = 1.0 / cavity_precision;
            let m_cav = v_cav * (m / v - site.nu);
            let tilted = tilted_moments(m_cav, v_cav, lik);
            if !(tilted.variance > 0.0 && tilted.mean.is_finite()) {
                continue;
            }
            let target = Site {
                tau: 1.0 / tilted.variance - cavity_precision,
                nu: tilted.mean / tilted.variance - m_cav / v_cav,
            };
            let d_tau = damping * (target.tau - site.tau);
            let d_nu = damping * (target.nu - site.nu);
            // Σ⁻¹ += Δτ·xxᵀ, Σ⁻¹μ += Δν·x, as a rank-one step along u = Σx.
            let denominator = 1.0 + d_tau * v;
            if denominator <= 1e-12 {
                continue;
            }
            let step = RankOne {
                c1: (d_nu - d_tau * m) / denominator,
                c2: d_tau / denominator,
            };
            posterior.apply(&predictive, step);
            site.tau += d_tau;
            site.nu += d_nu;
            largest_change = largest_change.max(d_tau.abs()).max(d_nu.abs());
        }
        if sweep > 0 && largest_change < options.tolerance {
            break;
        }
    }
    let refreshed = refresh_from_sites(prior, observations, &sites);
    (refreshed.unwrap_or(posterior), sites)
}

/// Recomputes the posterior from the prior and the sites through its natural parameters, which
/// removes the round-off of many rank-one steps.
fn refresh_from_sites<L>(
    prior: &Posterior,
    observations: &[(DVector<f64>, L)],
    sites: &[Site],
) -> Option<Posterior> {
    let (mut precision, mut shift): (DMatrix<f64>, DVector<f64>) = prior.natural()?;
    for ((x, _), site) in observations.iter().zip(sites) {
        precision.ger(site.tau, x, x, 1.0);
        shift.axpy(site.nu, x, 1.0);
    }
    let precision = (&precision + precision.transpose()) * 0.5;
    Posterior::from_natural(&precision, &shift).filter(Posterior::is_valid)
}

/// The leave-one-out predictive log-probability of each answer, log p(yᵢ | y₋ᵢ), from an EP fit:
/// the cavity of site i (the posterior with answer i removed) is N(f; m₋ᵢ, v₋ᵢ), and
/// log p(yᵢ | y₋ᵢ) ≈ log ∫ p(yᵢ | f) N(f; m₋ᵢ, v₋ᵢ) df. Each answer is judged by all the others,
/// which tells a consistent user from a random one far better than the sequential predictive
/// does when every question was chosen to be a coin flip for the model at the time.
pub fn leave_one_out<L: Likelihood>(
    posterior: &Posterior,
    observations: &[(DVector<f64>, L)],
    sites: &[Site],
) -> Vec<f64> {
    observations
        .iter()
        .zip(sites)
        .map(|((x, lik), site)| {
            let predictive = posterior.predictive(x);
            let (m, v) = (predictive.mean, predictive.variance.max(1e-12));
            let cavity_precision = 1.0 / v - site.tau;
            let (m_cav, v_cav) = if cavity_precision > 1e-12 {
                let v_cav = 1.0 / cavity_precision;
                (v_cav * (m / v - site.nu), v_cav)
            } else {
                (m, v)
            };
            tilted_moments(m_cav, v_cav, lik).log_z
        })
        .collect()
}
