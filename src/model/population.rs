//! What the population says: each user's Laplace posterior under a Gaussian prior, and the
//! empirical-Bayes prior fitted to many users by EM (GUIDE §5).
//!
//! A user answered comparisons with directions dᵢ (winner − loser features, noise scale folded
//! in). Under the prior N(m, P⁻¹) the MAP λ̂ minimises
//!   Σᵢ log(1 + e^{−λᵀdᵢ}) + ½(λ − m)ᵀP(λ − m),
//! and the Laplace covariance is the inverse Hessian there, (Σᵢ σ(zᵢ)σ(−zᵢ)dᵢdᵢᵀ + P)⁻¹.
//!
//! EM over users u = 1…n: the E-step gives each user's posterior N(m_u, S_u) under the current
//! prior; the M-step sets μ₀ = mean m_u and Σ₀ = mean[S_u + (m_u − μ₀)(m_u − μ₀)ᵀ]. Averaging the
//! posterior means alone would underestimate Σ₀ (each m_u is shrunk towards μ₀). With few users
//! relative to J² the estimate is noisy, so it is shrunk towards the starting prior:
//!   μ = (n μ₀ + κ μ_start)/(n + κ),  Σ = (n Σ₀ + κ Σ_start)/(n + κ).

use nalgebra::{DMatrix, DVector};

use super::numeric::sigmoid;
use super::{ModelError, Posterior};

/// The Laplace posterior of one user's λ under the Gaussian prior N(`prior_mean`, `prior_precision`⁻¹)
/// (Newton's method with backtracking, which stays monotone on separable data).
pub fn logistic_map(
    differences: &[DVector<f64>],
    prior_mean: &DVector<f64>,
    prior_precision: &DMatrix<f64>,
) -> (DVector<f64>, DMatrix<f64>) {
    let j = prior_mean.len();
    let objective = |w: &DVector<f64>| {
        let offset = w - prior_mean;
        differences
            .iter()
            .map(|d| (-w.dot(d)).exp().ln_1p())
            .sum::<f64>()
            + 0.5 * offset.dot(&(prior_precision * &offset))
    };
    let mut w = prior_mean.clone();
    let mut hessian = prior_precision.clone();
    for _ in 0..100 {
        let mut gradient = prior_precision * (&w - prior_mean);
        hessian = prior_precision.clone();
        for d in differences {
            let p = sigmoid(-w.dot(d));
            gradient.axpy(-p, d, 1.0);
            hessian.ger(p * (1.0 - p), d, d, 1.0);
        }
        let Some(step) = hessian.clone().cholesky().map(|ch| ch.solve(&gradient)) else {
            break;
        };
        let (current, mut t) = (objective(&w), 1.0);
        let mut next = &w - &step * t;
        while objective(&next) > current && t > 1e-8 {
            t *= 0.5;
            next = &w - &step * t;
        }
        let moved = (&next - &w).amax();
        w = next;
        if moved < 1e-10 {
            break;
        }
    }
    let covariance = hessian
        .cholesky()
        .map_or_else(|| DMatrix::identity(j, j), |ch| ch.inverse());
    (w, covariance)
}

/// How the EM prior is fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmOptions {
    pub iterations: usize,
    /// κ: the starting prior counts as this many users (0: no shrinkage). The default, J + 2
    /// pseudo-users, keeps Σ positive definite and near the start when users are few.
    pub shrinkage: Option<f64>,
}

impl Default for EmOptions {
    fn default() -> Self {
        Self {
            iterations: 20,
            shrinkage: None,
        }
    }
}

/// The empirical-Bayes population prior of users whose answers are `users[u]` (directions
/// winner − loser under the plain logistic likelihood), by EM from `start`, shrunk towards
/// `start` (see the module docs).
pub fn em_prior(
    users: &[Vec<DVector<f64>>],
    start: &Posterior,
    options: EmOptions,
) -> Result<Posterior, ModelError> {
    em_prior_with(users.len(), start, options, |prior| {
        let precision = prior
            .cov()
            .clone()
            .cholesky()
            .ok_or_else(|| ModelError::invalid("prior", "covariance is not positive definite"))?
            .inverse();
        Ok(users
            .iter()
            .map(|answers| logistic_map(answers, prior.mean(), &precision))
            .collect())
    })
}

/// EM for the population prior of `n` users with any likelihood: `e_step(prior)` returns each
/// user's posterior (mean, covariance) under `prior`; the M-step and the shrinkage towards
/// `start` are as in the module docs. With no users the answer is `start`.
pub fn em_prior_with(
    n: usize,
    start: &Posterior,
    options: EmOptions,
    mut e_step: impl FnMut(&Posterior) -> Result<Vec<(DVector<f64>, DMatrix<f64>)>, ModelError>,
) -> Result<Posterior, ModelError> {
    if n == 0 {
        return Ok(start.clone());
    }
    let j = start.dim();
    let count = n as f64;
    let kappa = options.shrinkage.unwrap_or(j as f64 + 2.0);
    let mut prior = start.clone();
    for _ in 0..options.iterations.max(1) {
        let posteriors = e_step(&prior)?;
        let mean_hat = posteriors
            .iter()
            .fold(DVector::zeros(j), |acc, (m, _)| acc + m)
            / count;
        let cov_hat = posteriors.iter().fold(DMatrix::zeros(j, j), |acc, (m, s)| {
            let offset = m - &mean_hat;
            acc + s + &offset * offset.transpose()
        }) / count;
        let mean = (mean_hat * count + start.mean() * kappa) / (count + kappa);
        let cov = (cov_hat * count + start.cov() * kappa) / (count + kappa);
        let cov = (&cov + cov.transpose()) * 0.5;
        let next = Posterior::new(mean, cov)?;
        let moved = (next.mean() - prior.mean()).amax() + (next.cov() - prior.cov()).amax();
        prior = next;
        if moved < 1e-9 {
            break;
        }
    }
    Ok(prior)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Normal};

    use super::*;
    use crate::model::numeric::sigmoid;

    /// Users drawn from N(μ, Σ) answering 60 random comparisons each: EM recovers μ and Σ, and
    /// does better on Σ than averaging the users' posterior means.
    #[test]
    fn em_recovers_the_population_and_beats_naive_averaging() {
        let mut rng = StdRng::seed_from_u64(3);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let true_mean = DVector::from_vec(vec![1.0, -0.5]);
        let true_cov = DMatrix::from_row_slice(2, 2, &[1.0, 0.4, 0.4, 0.6]);
        let chol = true_cov.clone().cholesky().unwrap().l();
        let users: Vec<Vec<DVector<f64>>> = (0..400)
            .map(|_| {
                let z = DVector::from_fn(2, |_, _| normal.sample(&mut rng));
                let lambda = &true_mean + &chol * z;
                (0..60)
                    .map(|_| {
                        let d = DVector::from_fn(2, |_, _| normal.sample(&mut rng));
                        let wins = rand::RngExt::random::<f64>(&mut rng) < sigmoid(lambda.dot(&d));
                        if wins { d } else { -d }
                    })
                    .collect()
            })
            .collect();
        let start = Posterior::isotropic(2, 1.0).unwrap();
        let prior = em_prior(&users, &start, EmOptions::default()).unwrap();
        assert!(
            (prior.mean() - &true_mean).amax() < 0.15,
            "{}",
            prior.mean()
        );
        assert!((prior.cov() - &true_cov).amax() < 0.2, "{}", prior.cov());

        // Averaging MAP means underestimates the spread.
        let precision = DMatrix::identity(2, 2);
        let means: Vec<DVector<f64>> = users
            .iter()
            .map(|u| logistic_map(u, &DVector::zeros(2), &precision).0)
            .collect();
        let m = means.iter().fold(DVector::zeros(2), |a, x| a + x) / means.len() as f64;
        let naive = means.iter().fold(DMatrix::zeros(2, 2), |a, x| {
            a + (x - &m) * (x - &m).transpose()
        }) / means.len() as f64;
        assert!(
            naive.trace() < prior.cov().trace(),
            "{naive} vs {}",
            prior.cov()
        );
    }

    /// With two users and J = 3 the estimate leans on the starting prior instead of collapsing.
    #[test]
    fn few_users_shrink_towards_the_start() {
        let start = Posterior::isotropic(3, 1.0).unwrap();
        let d = DVector::from_vec(vec![1.0, 0.0, 0.0]);
        let users = vec![vec![d.clone(); 5], vec![d; 5]];
        let prior = em_prior(&users, &start, EmOptions::default()).unwrap();
        let eigen = prior.cov().clone().symmetric_eigen().eigenvalues;
        assert!(eigen.min() > 0.5, "no collapse: {eigen}");
        assert!(prior.mean()[0] > 0.0 && prior.mean()[0] < 1.0);
    }
}
