//! Per-user logistic (Bradley–Terry) fits: the ceiling and the train-split prior.

use nalgebra::{DMatrix, DVector};

use crate::model::numeric::sigmoid;

/// An L2-regularised logistic fit without intercept: it minimises
/// C·Σᵢ log(1 + e^{−λᵀdᵢ}) + ½‖λ‖², where dᵢ points from the loser to the winner (the
/// convention of scikit-learn and of `bt_upper_bound.py`). Returns λ̂ and the inverse Hessian of
/// the unscaled negative log posterior at λ̂ (a Laplace covariance).
pub fn logistic_fit(differences: &[DVector<f64>], c: f64) -> (DVector<f64>, DMatrix<f64>) {
    let j = differences.first().map_or(0, |d| d.len());
    let mut w = DVector::zeros(j);
    let objective = |w: &DVector<f64>| {
        c * differences
            .iter()
            .map(|d| (-w.dot(d)).exp().ln_1p())
            .sum::<f64>()
            + 0.5 * w.norm_squared()
    };
    let mut hessian = DMatrix::identity(j, j);
    for _ in 0..100 {
        let mut gradient = w.clone();
        hessian = DMatrix::identity(j, j);
        for d in differences {
            let p = sigmoid(-w.dot(d));
            gradient.axpy(-c * p, d, 1.0);
            hessian.ger(c * p * (1.0 - p), d, d, 1.0);
        }
        let Some(step) = hessian.clone().cholesky().map(|ch| ch.solve(&gradient)) else {
            break;
        };
        // Backtracking keeps Newton monotone on separable data.
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

/// Fraction of differences (winner − loser) with λᵀd > 0, ties counting ½.
pub fn agreement(lambda: &DVector<f64>, differences: &[DVector<f64>]) -> f64 {
    if differences.is_empty() {
        return f64::NAN;
    }
    differences
        .iter()
        .map(|d| {
            let f = lambda.dot(d);
            if f > 0.0 {
                1.0
            } else if f == 0.0 {
                0.5
            } else {
                0.0
            }
        })
        .sum::<f64>()
        / differences.len() as f64
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
