//! The Gaussian belief N(μ, Σ) over a user's coefficients λ ∈ R^J.

use nalgebra::{DMatrix, DVector};

use super::ModelError;

/// Largest supported number of base-reward dimensions.
pub const MAX_DIMENSIONS: usize = 64;

/// A Gaussian posterior N(μ, Σ) over λ, stored in covariance form (float64).
#[derive(Debug, Clone, PartialEq)]
pub struct Posterior {
    mean: DVector<f64>,
    cov: DMatrix<f64>,
}

/// The belief about f = λᵀx for one direction x, with the vector u = Σx the update needs.
#[derive(Debug, Clone)]
pub struct Predictive {
    /// u = Σx.
    pub u: DVector<f64>,
    /// m = xᵀμ.
    pub mean: f64,
    /// v = xᵀΣx.
    pub variance: f64,
}

/// The two scalars of a rank-one Gaussian update: μ' = μ + c₁u, Σ' = Σ − c₂uuᵀ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankOne {
    pub c1: f64,
    pub c2: f64,
}

impl RankOne {
    pub const NONE: RankOne = RankOne { c1: 0.0, c2: 0.0 };
}

impl Posterior {
    /// A posterior from a mean and a covariance; checks the shapes, finiteness, symmetry and that
    /// Σ is positive definite (by a Cholesky factorisation).
    pub fn new(mean: DVector<f64>, cov: DMatrix<f64>) -> Result<Self, ModelError> {
        let j = mean.len();
        if j == 0 || j > MAX_DIMENSIONS {
            return Err(ModelError::invalid(
                "dimensions",
                format!("must have between 1 and {MAX_DIMENSIONS} entries, got {j}"),
            ));
        }
        if cov.shape() != (j, j) {
            return Err(ModelError::invalid(
                "prior.cov",
                format!("must be {j}×{j}, got {}×{}", cov.nrows(), cov.ncols()),
            ));
        }
        if mean.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::invalid("prior.mean", "must be finite numbers"));
        }
        if cov.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::invalid("prior.cov", "must be finite numbers"));
        }
        let scale = cov.amax().max(f64::MIN_POSITIVE);
        if (&cov - cov.transpose()).amax() > 1e-9 * scale {
            return Err(ModelError::invalid("prior.cov", "must be symmetric"));
        }
        let cov = (&cov + cov.transpose()) * 0.5;
        if cov.clone().cholesky().is_none() {
            return Err(ModelError::invalid(
                "prior.cov",
                "must be positive definite",
            ));
        }
        Ok(Self { mean, cov })
    }

    /// N(0, variance·I_J).
    pub fn isotropic(dimensions: usize, variance: f64) -> Result<Self, ModelError> {
        if !(variance.is_finite() && variance > 0.0) {
            return Err(ModelError::invalid(
                "prior.variance",
                "must be positive and finite",
            ));
        }
        Self::new(
            DVector::zeros(dimensions),
            DMatrix::identity(dimensions, dimensions) * variance,
        )
    }

    /// Number of dimensions J.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The posterior mean μ.
    pub fn mean(&self) -> &DVector<f64> {
        &self.mean
    }

    /// The posterior covariance Σ.
    pub fn cov(&self) -> &DMatrix<f64> {
        &self.cov
    }

    /// Posterior standard deviations √Σᵢᵢ.
    pub fn sd(&self) -> DVector<f64> {
        self.cov.diagonal().map(|v| v.max(0.0).sqrt())
    }

    /// The predictive belief about f = λᵀx: N(xᵀμ, xᵀΣx), with u = Σx. O(J²).
    pub fn predictive(&self, x: &DVector<f64>) -> Predictive {
        let u = &self.cov * x;
        Predictive {
            mean: x.dot(&self.mean),
            variance: x.dot(&u).max(0.0),
            u,
        }
    }

    /// Applies μ' = μ + c₁u, Σ' = Σ − c₂uuᵀ. The caller guarantees c₂v < 1 (Σ' stays SPD).
    ///
    /// The covariance is updated on the upper triangle and mirrored, so it stays exactly symmetric.
    pub fn apply(&mut self, predictive: &Predictive, step: RankOne) {
        self.apply_along(&predictive.u, step);
    }

    /// Applies μ' = μ + c₁u, Σ' = Σ − c₂uuᵀ for any direction u (the pieces of a low-rank step,
    /// [`crate::model::kway`]). The caller guarantees that Σ' stays SPD.
    pub fn apply_along(&mut self, u: &DVector<f64>, step: RankOne) {
        self.mean.axpy(step.c1, u, 1.0);
        let j = self.dim();
        for col in 0..j {
            let scaled = step.c2 * u[col];
            for row in 0..=col {
                let value = self.cov[(row, col)] - scaled * u[row];
                self.cov[(row, col)] = value;
                self.cov[(col, row)] = value;
            }
        }
    }

    /// log det Σ by Cholesky, `None` if Σ is not numerically positive definite.
    pub fn log_det(&self) -> Option<f64> {
        let chol = self.cov.clone().cholesky()?;
        Some(
            2.0 * chol
                .l_dirty()
                .diagonal()
                .iter()
                .map(|d| d.ln())
                .sum::<f64>(),
        )
    }

    /// Information acquired relative to `prior`, in bits: ½ log₂ det(Σ₀ Σ⁻¹).
    pub fn bits_since(&self, prior: &Posterior) -> f64 {
        match (prior.log_det(), self.log_det()) {
            (Some(a), Some(b)) => 0.5 * (a - b) / std::f64::consts::LN_2,
            _ => f64::NAN,
        }
    }

    /// Natural parameters (Λ, h) = (Σ⁻¹, Σ⁻¹μ).
    pub fn natural(&self) -> Option<(DMatrix<f64>, DVector<f64>)> {
        let chol = self.cov.clone().cholesky()?;
        let precision = chol.inverse();
        let shift = &precision * &self.mean;
        Some((precision, shift))
    }

    /// The posterior with natural parameters (Λ, h): Σ = Λ⁻¹, μ = Σh, via Cholesky.
    pub fn from_natural(precision: &DMatrix<f64>, shift: &DVector<f64>) -> Option<Self> {
        let chol = precision.clone().cholesky()?;
        let cov = chol.inverse();
        let cov = (&cov + cov.transpose()) * 0.5;
        let mean = chol.solve(shift);
        Some(Self { mean, cov })
    }

    /// KL(self ‖ other) in bits: ½[tr(Σₒ⁻¹Σ) + (μₒ − μ)ᵀΣₒ⁻¹(μₒ − μ) − J + ln det Σₒ − ln det Σ]/ln 2.
    /// `None` if either covariance has no Cholesky factorisation.
    pub fn kl_bits(&self, other: &Posterior) -> Option<f64> {
        let chol = other.cov.clone().cholesky()?;
        let diff = &other.mean - &self.mean;
        let trace = chol.solve(&self.cov).trace();
        let mahalanobis = diff.dot(&chol.solve(&diff));
        let nats =
            0.5 * (trace + mahalanobis - self.dim() as f64 + other.log_det()? - self.log_det()?);
        Some(nats.max(0.0) / std::f64::consts::LN_2)
    }

    /// The marginal over the coordinates `dims` (in that order).
    pub fn marginal(&self, dims: &[usize]) -> Posterior {
        Self {
            mean: DVector::from_fn(dims.len(), |i, _| self.mean[dims[i]]),
            cov: DMatrix::from_fn(dims.len(), dims.len(), |i, j| self.cov[(dims[i], dims[j])]),
        }
    }

    /// Whether every entry is finite and Σ has a Cholesky factorisation.
    pub fn is_valid(&self) -> bool {
        self.mean
            .iter()
            .chain(self.cov.iter())
            .all(|v| v.is_finite())
            && self.cov.clone().cholesky().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_priors() {
        let ok = DVector::from_vec(vec![0.0, 1.0]);
        assert!(Posterior::new(ok.clone(), DMatrix::identity(2, 2)).is_ok());
        assert!(Posterior::new(ok.clone(), DMatrix::identity(3, 3)).is_err());
        let not_pd = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]);
        assert!(Posterior::new(ok.clone(), not_pd).is_err());
        let asym = DMatrix::from_row_slice(2, 2, &[1.0, 0.5, 0.0, 1.0]);
        assert!(Posterior::new(ok.clone(), asym).is_err());
        let nan = DVector::from_vec(vec![f64::NAN, 1.0]);
        assert!(Posterior::new(nan, DMatrix::identity(2, 2)).is_err());
        assert!(Posterior::isotropic(0, 1.0).is_err());
        assert!(Posterior::isotropic(65, 1.0).is_err());
    }

    #[test]
    fn natural_parameters_round_trip() {
        let cov = DMatrix::from_row_slice(3, 3, &[2.0, 0.3, 0.1, 0.3, 1.0, -0.2, 0.1, -0.2, 0.5]);
        let p = Posterior::new(DVector::from_vec(vec![0.5, -1.0, 2.0]), cov).unwrap();
        let (lambda, h) = p.natural().unwrap();
        let back = Posterior::from_natural(&lambda, &h).unwrap();
        assert!((back.mean() - p.mean()).amax() < 1e-12);
        assert!((back.cov() - p.cov()).amax() < 1e-12);
    }
}
