//! Personalised scoring of candidates: reward r = λᵀφ under the posterior N(μ, Σ).

use nalgebra::{DMatrix, DVector};

use super::likelihood::NoiseModel;
use super::posterior::Posterior;

/// The posterior belief about one candidate's reward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// E[r] = μᵀφ.
    pub mean: f64,
    /// sd[r] = √(φᵀΣφ).
    pub sd: f64,
    /// 1 for the highest mean; equal means keep the input order.
    pub rank: usize,
}

/// The share of comparisons a model orders right, from their margins f = r(winner) − r(loser):
/// f > 0 counts 1, f = 0 (no preference) ½, f < 0 nothing. NaN without comparisons.
pub fn ordered_share(margins: impl IntoIterator<Item = f64>) -> f64 {
    let (right, count) = margins.into_iter().fold((0.0, 0usize), |(right, n), f| {
        let credit = if f > 0.0 {
            1.0
        } else if f == 0.0 {
            0.5
        } else {
            0.0
        };
        (right + credit, n + 1)
    });
    if count == 0 {
        f64::NAN
    } else {
        right / count as f64
    }
}

/// Scores candidates given as the columns of a J×n feature matrix. O(nJ²).
pub fn score(posterior: &Posterior, candidates: &DMatrix<f64>) -> Vec<Score> {
    let means = candidates.tr_mul(posterior.mean());
    let projected = posterior.cov() * candidates;
    let mut scores: Vec<Score> = means
        .iter()
        .zip(projected.column_iter().zip(candidates.column_iter()))
        .map(|(&mean, (g, phi))| Score {
            mean,
            sd: g.dot(&phi).max(0.0).sqrt(),
            rank: 0,
        })
        .collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].mean.total_cmp(&scores[a].mean).then(a.cmp(&b)));
    for (rank, &i) in order.iter().enumerate() {
        scores[i].rank = rank + 1;
    }
    scores
}

/// P(i ≻ j) = E[p(a | f)] for f = βλᵀ(φᵢ − φⱼ) ~ N(m, s²), under the model's answer noise
/// ([`NoiseModel::expected_strict_preference`], exact at any s²; with ties enabled this is the
/// probability of a strict preference for i).
pub fn preference_probability(
    posterior: &Posterior,
    noise: &NoiseModel,
    phi_i: &DVector<f64>,
    phi_j: &DVector<f64>,
) -> f64 {
    let x = (phi_i - phi_j) * noise.beta;
    let p = posterior.predictive(&x);
    noise.expected_strict_preference(p.mean, p.variance)
}

/// P(i ≻ j) for every ordered pair of candidates (columns of a J×n matrix): entry (i, j) is
/// E[p(a | f)] with f = βλᵀ(φᵢ − φⱼ) ~ N(β(mᵢ − mⱼ), β²(qᵢ + qⱼ − 2φᵢᵀΣφⱼ)); the diagonal is ½.
/// O(nJ² + n²J).
pub fn preference_matrix(
    posterior: &Posterior,
    noise: &NoiseModel,
    candidates: &DMatrix<f64>,
) -> DMatrix<f64> {
    let n = candidates.ncols();
    let means = candidates.tr_mul(posterior.mean());
    let projected = posterior.cov() * candidates;
    let cross = candidates.tr_mul(&projected);
    let beta = noise.beta;
    DMatrix::from_fn(n, n, |i, j| {
        if i == j {
            return 0.5;
        }
        let m = beta * (means[i] - means[j]);
        let s2 = (beta * beta * (cross[(i, i)] + cross[(j, j)] - 2.0 * cross[(i, j)])).max(0.0);
        noise.expected_strict_preference(m, s2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_rank_by_mean_and_report_sd() {
        let cov = DMatrix::from_row_slice(2, 2, &[1.0, 0.5, 0.5, 2.0]);
        let posterior = Posterior::new(DVector::from_vec(vec![1.0, -1.0]), cov).unwrap();
        let candidates = DMatrix::from_column_slice(2, 3, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let scores = score(&posterior, &candidates);
        assert_eq!(
            scores.iter().map(|s| s.rank).collect::<Vec<_>>(),
            vec![1, 3, 2]
        );
        assert!((scores[0].mean - 1.0).abs() < 1e-15);
        assert!((scores[1].sd - 2f64.sqrt()).abs() < 1e-15);
        assert!((scores[2].sd - 4f64.sqrt()).abs() < 1e-15);
        let noise = NoiseModel::default();
        let p = preference_probability(
            &posterior,
            &noise,
            &candidates.column(0).into_owned(),
            &candidates.column(1).into_owned(),
        );
        let q = preference_probability(
            &posterior,
            &noise,
            &candidates.column(1).into_owned(),
            &candidates.column(0).into_owned(),
        );
        assert!((p + q - 1.0).abs() < 1e-12 && p > 0.7);
        let matrix = preference_matrix(&posterior, &noise, &candidates);
        assert!((matrix[(0, 1)] - p).abs() < 1e-12 && (matrix[(1, 0)] - q).abs() < 1e-12);
        assert_eq!(matrix[(2, 2)], 0.5);
    }
}
