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
    let mut run = EpRun::new(prior, observations);
    run.sweep_until(options);
    run.fit()
}

/// An EP run that can be continued: [`EpRun::sweep_until`] with looser options and then with
/// stricter ones gives, at the second call, exactly what [`refine`] with the stricter options
/// gives (the same sweeps, in the same order, with the same damping and stopping test), so a
/// caller needing a rough fit and a close one pays for the close one only.
pub struct EpRun<'a, L> {
    prior: &'a Posterior,
    observations: &'a [(DVector<f64>, L)],
    /// The rank-one state after the sweeps so far.
    posterior: Posterior,
    sites: Vec<Site>,
    sweeps: usize,
    /// The largest site change of the last sweep.
    last_change: f64,
}

/// Where an [`EpRun`] stands: what continuing it needs besides its prior and observations.
#[derive(Debug, Clone, PartialEq)]
pub struct EpState {
    posterior: Posterior,
    sites: Vec<Site>,
    sweeps: usize,
    last_change: f64,
}

impl EpState {
    /// Approximate heap size in bytes.
    pub fn size_bytes(&self) -> usize {
        let j = self.posterior.dim();
        (j * (j + 1) + 2 * self.sites.len()) * std::mem::size_of::<f64>()
    }
}

impl<'a, L: Likelihood> EpRun<'a, L> {
    /// A run with empty sites, before its first sweep.
    pub fn new(prior: &'a Posterior, observations: &'a [(DVector<f64>, L)]) -> Self {
        Self {
            prior,
            observations,
            posterior: prior.clone(),
            sites: vec![Site::default(); observations.len()],
            sweeps: 0,
            last_change: f64::INFINITY,
        }
    }

    /// Where the run stands now.
    pub fn state(&self) -> EpState {
        EpState {
            posterior: self.posterior.clone(),
            sites: self.sites.clone(),
            sweeps: self.sweeps,
            last_change: self.last_change,
        }
    }

    /// The run `state` was taken from, continued: the same as continuing that run itself, to the
    /// bit, when `prior` and `observations` are the ones it ran over (`None` when their number
    /// differs from the state's sites).
    pub fn resume(
        prior: &'a Posterior,
        observations: &'a [(DVector<f64>, L)],
        state: EpState,
    ) -> Option<Self> {
        (state.sites.len() == observations.len()).then_some(Self {
            prior,
            observations,
            posterior: state.posterior,
            sites: state.sites,
            sweeps: state.sweeps,
            last_change: state.last_change,
        })
    }

    /// Sweeps until `options.sweeps` sweeps have run in all, or a sweep after the first moved no
    /// site parameter more than `options.tolerance`.
    pub fn sweep_until(&mut self, options: EpOptions) {
        let target = options.sweeps.max(1);
        while self.sweeps < target {
            if self.sweeps > 1 && self.last_change < options.tolerance {
                return;
            }
            let damping = if self.sweeps == 0 {
                1.0
            } else {
                options.damping
            };
            self.last_change = self.sweep(damping);
            self.sweeps += 1;
        }
    }

    /// The refined posterior (through the sites' natural parameters, or the rank-one state if
    /// that refresh is not positive definite) and the sites.
    pub fn fit(&self) -> (Posterior, Vec<Site>) {
        let refreshed = refresh_from_sites(self.prior, self.observations, &self.sites);
        (
            refreshed.unwrap_or_else(|| self.posterior.clone()),
            self.sites.clone(),
        )
    }

    /// One pass over every site with the given damping; returns the largest site change.
    fn sweep(&mut self, damping: f64) -> f64 {
        let mut largest_change = 0.0f64;
        for ((x, lik), site) in self.observations.iter().zip(self.sites.iter_mut()) {
            let predictive = self.posterior.predictive(x);
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
            self.posterior.apply(&predictive, step);
            site.tau += d_tau;
            site.nu += d_nu;
            largest_change = largest_change.max(d_tau.abs()).max(d_nu.abs());
        }
        largest_change
    }
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
