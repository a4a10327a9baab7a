//! Per-user logistic (Bradley–Terry) fits: the ceiling and the train-split prior.

use nalgebra::{DMatrix, DVector};

use crate::model::population::logistic_map;

/// An L2-regularised logistic fit without intercept: it minimises
/// C·Σᵢ log(1 + e^{−λᵀdᵢ}) + ½‖λ‖², where dᵢ points from the loser to the winner (the
/// convention of scikit-learn and of `bt_upper_bound.py`). Returns λ̂ and the inverse Hessian of
/// the unscaled negative log posterior at λ̂ (a Laplace covariance).
pub fn logistic_fit(differences: &[DVector<f64>], c: f64) -> (DVector<f64>, DMatrix<f64>) {
    // c·Σ loss + ½‖λ‖² has the minimiser of Σ loss + ½‖λ‖²/c (prior precision I/c), and c times
    // its Hessian.
    let j = differences.first().map_or(0, |d| d.len());
    let (mean, cov) = logistic_map(
        differences,
        &DVector::zeros(j),
        &(DMatrix::identity(j, j) / c),
    );
    (mean, cov / c)
}

/// Fraction of differences (winner − loser) with λᵀd > 0, ties counting ½.
pub fn agreement(lambda: &DVector<f64>, differences: &[DVector<f64>]) -> f64 {
    crate::model::score::ordered_share(differences.iter().map(|d| lambda.dot(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_direction_from_noiseless_comparisons() {
        let truth = DVector::from_vec(vec![1.0, -2.0]);
        let differences: Vec<DVector<f64>> = (0..200)
            .map(|i| {
                let a = (i as f64 * 0.37).sin();
                let b = (i as f64 * 0.91).cos();
                let d = DVector::from_vec(vec![a, b]);
                if truth.dot(&d) >= 0.0 { d } else { -d }
            })
            .collect();
        // Nearly unregularised: the separable data is fitted (almost) perfectly.
        let (w, cov) = logistic_fit(&differences, 1e4);
        assert!(w.normalize().dot(&truth.normalize()) > 0.99);
        assert!(agreement(&w, &differences) >= 0.99);
        assert!(cov.clone().cholesky().is_some());
    }
}
