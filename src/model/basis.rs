//! Learning the reward basis from many users' comparisons over a shared item set (PReF's other
//! half, GUIDE §7): logistic matrix factorisation
//!   P(a ≻ b | u) = σ(λ_uᵀ(φ_a − φ_b)),
//! fitted by minimising the mean logistic loss over comparisons plus
//!   (ℓ₂/2)·(mean_u ‖λ_u‖² + mean_i ‖φ_i‖²),
//! from a truncated SVD of the imputed user × item preference matrix (each user's net win rate
//! of each item, 0 where unseen), with full-batch Adam.
//!
//! The factorisation is defined only up to an invertible J × J map (λ ↦ Tλ, φ ↦ T⁻ᵀφ) and a
//! shift of every φ. The representative kept ([`Basis::align`]) has centred features and makes a
//! population second moment M = E[λλᵀ] the identity, with features uncorrelated across
//! dimensions, the dimensions in decreasing share of E‖λ‖² and each pointing the way the average
//! user prefers (mean coefficient ≥ 0). [`fit_basis`] aligns to the fitted users' own point
//! estimates; `elicit fit` then re-aligns to its EM population prior, which also counts each
//! user's uncertainty (`eval::learn`). The second moment and not the covariance, because a new
//! user starts from the zero-mean prior N(0, I): of all zero-mean Gaussians, the one closest to
//! the population (in KL from it) has covariance M, so N(0, I) is then the population's own
//! zero-mean summary. On MovieLens (test users, J = 8, BALD) whitening the point estimates'
//! covariance gave 0.694 at 10 questions, their second moment 0.704, the EM prior's 0.702 and
//! 0.731 at 30 (0.728 for the point estimates'): BENCHMARKS.md.

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use super::ModelError;
use super::numeric::sigmoid;

/// One comparison by user `user`: item `winner` was preferred to item `loser` (indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub user: usize,
    pub winner: usize,
    pub loser: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BasisOptions {
    /// J, the number of base rewards to learn.
    pub dims: usize,
    /// ℓ₂ penalty (see the module docs).
    pub l2: f64,
    pub epochs: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

impl Default for BasisOptions {
    fn default() -> Self {
        Self {
            dims: 8,
            l2: 0.05,
            epochs: 300,
            learning_rate: 0.05,
            seed: 0,
        }
    }
}

/// A fitted basis in its normal form (module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Basis {
    /// Φ: row i is item i's features.
    pub features: DMatrix<f64>,
    /// Row u is user u's coefficients λ_u.
    pub users: DMatrix<f64>,
    /// Each dimension's share of E‖λ‖², the trace of the population second moment the basis is
    /// aligned to ([`Basis::align`]); sums to 1.
    pub second_moment_share: Vec<f64>,
}

impl Basis {
    /// Fraction of comparisons the fitted model orders right ([`super::score::ordered_share`] of
    /// the margins λ_uᵀ(φ_w − φ_l)); 0 without comparisons.
    pub fn accuracy(&self, comparisons: &[Comparison]) -> f64 {
        if comparisons.is_empty() {
            return 0.0;
        }
        super::score::ordered_share(comparisons.iter().map(|c| self.margin(c)))
    }

    /// λ_uᵀ(φ_w − φ_l).
    pub fn margin(&self, c: &Comparison) -> f64 {
        let lambda = self.users.row(c.user);
        lambda.dot(&(self.features.row(c.winner) - self.features.row(c.loser)))
    }
}

/// Fits the basis; `progress(epoch, loss)` is called after every epoch.
pub fn fit_basis(
    comparisons: &[Comparison],
    n_users: usize,
    n_items: usize,
    options: &BasisOptions,
    mut progress: impl FnMut(usize, f64),
) -> Result<Basis, ModelError> {
    let j = options.dims;
    if j == 0 || j > n_items.min(n_users) {
        return Err(ModelError::invalid(
            "dims",
            format!(
                "must be between 1 and min(users, items) = {}",
                n_items.min(n_users)
            ),
        ));
    }
    if comparisons.is_empty() {
        return Err(ModelError::invalid("comparisons", "none to learn from"));
    }
    if let Some(c) = comparisons
        .iter()
        .find(|c| c.user >= n_users || c.winner >= n_items || c.loser >= n_items)
    {
        return Err(ModelError::invalid(
            "comparisons",
            format!("index out of range: {c:?}"),
        ));
    }
    let (mut users, mut items) = svd_start(comparisons, n_users, n_items, j, options.seed);
    let mut adam_users = Adam::new(n_users, j);
    let mut adam_items = Adam::new(n_items, j);
    let count = comparisons.len() as f64;
    for epoch in 0..options.epochs {
        let mut grad_users = &users * (options.l2 / n_users as f64);
        let mut grad_items = &items * (options.l2 / n_items as f64);
        let mut loss = 0.0;
        for c in comparisons {
            let d = items.row(c.winner) - items.row(c.loser);
            let lambda = users.row(c.user).clone_owned();
            let z = lambda.dot(&d);
            loss += (-z).exp().ln_1p();
            // d/dz log(1 + e^{−z}) = −σ(−z).
            let g = -sigmoid(-z) / count;
            let mut row = grad_users.row_mut(c.user);
            row += &d * g;
            let mut row = grad_items.row_mut(c.winner);
            row += &lambda * g;
            let mut row = grad_items.row_mut(c.loser);
            row -= &lambda * g;
        }
        adam_users.step(&mut users, &grad_users, options.learning_rate);
        adam_items.step(&mut items, &grad_items, options.learning_rate);
        progress(epoch + 1, loss / count);
    }
    Ok(normal_form(users, items))
}

/// Λ₀ = U_J S_J^{1/2}, Φ₀ = V_J S_J^{1/2} from a randomised truncated SVD (Halko et al.) of the
/// sparse user × item matrix of net win rates.
fn svd_start(
    comparisons: &[Comparison],
    n_users: usize,
    n_items: usize,
    j: usize,
    seed: u64,
) -> (DMatrix<f64>, DMatrix<f64>) {
    let mut wins: std::collections::HashMap<(usize, usize), (f64, f64)> = Default::default();
    for c in comparisons {
        wins.entry((c.user, c.winner)).or_default().0 += 1.0;
        wins.entry((c.user, c.loser)).or_default().1 += 1.0;
    }
    let entries: Vec<(usize, usize, f64)> = wins
        .into_iter()
        .map(|((u, i), (w, l))| (u, i, (w - l) / (w + l)))
        .collect();
    let times = |x: &DMatrix<f64>| {
        let mut out = DMatrix::zeros(n_users, x.ncols());
        for &(u, i, v) in &entries {
            let mut row = out.row_mut(u);
            row += x.row(i) * v;
        }
        out
    };
    let times_transposed = |y: &DMatrix<f64>| {
        let mut out = DMatrix::zeros(n_items, y.ncols());
        for &(u, i, v) in &entries {
            let mut row = out.row_mut(i);
            row += y.row(u) * v;
        }
        out
    };
    let k = (j + 10).min(n_items).min(n_users);
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).expect("a standard normal");
    let omega = DMatrix::from_fn(n_items, k, |_, _| normal.sample(&mut rng));
    let mut q = times(&omega).qr().q();
    for _ in 0..4 {
        let z = times_transposed(&q).qr().q();
        q = times(&z).qr().q();
    }
    // B = QᵀM (k × N), so M ≈ Q B; B's SVD gives M's leading singular triplets.
    let b = times_transposed(&q).transpose();
    let svd = b.svd(true, true);
    let (u_b, s, v_t) = (
        svd.u.expect("u requested"),
        svd.singular_values,
        svd.v_t.expect("v_t requested"),
    );
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let mut users = DMatrix::zeros(n_users, j);
    let mut items = DMatrix::zeros(n_items, j);
    let left = &q * u_b;
    for (d, &i) in order.iter().take(j).enumerate() {
        // A floor keeps a dimension the data do not span trainable.
        let root = s[i].max(1e-3).sqrt();
        users.set_column(d, &(left.column(i) * root));
        items.set_column(d, &(v_t.row(i).transpose() * root));
    }
    (users, items)
}

/// The representative of (Λ, Φ) described in the module docs, for the fitted users' own second
/// moment.
fn normal_form(users: DMatrix<f64>, mut items: DMatrix<f64>) -> Basis {
    // Centre the features: differences, and so every prediction, are unchanged.
    let centre = items.row_mean();
    for mut row in items.row_iter_mut() {
        row -= &centre;
    }
    let second_moment = users.transpose() * &users / users.nrows().max(1) as f64;
    let mean = users.row_mean().transpose();
    let j = items.ncols();
    let mut basis = Basis {
        features: items,
        users,
        second_moment_share: vec![1.0 / j as f64; j],
    };
    basis.align(&second_moment, &mean);
    basis
}

impl Basis {
    /// Re-expresses the basis (λ ↦ Tλ, φ ↦ T⁻ᵀφ: every prediction unchanged) so that a population
    /// of coefficients with second moment `second_moment` = E[λλᵀ] and mean `mean`, both in the
    /// current coordinates, gets second moment I; returns T.
    ///
    /// T = S D^{-1/2} Uᵀ C^{1/2}, with C the (centred) features' covariance and U D Uᵀ the
    /// eigendecomposition of C^{1/2} E[λλᵀ] C^{1/2} in decreasing order: features are then
    /// uncorrelated with variances D (they rank the dimensions, [`Basis::second_moment_share`]),
    /// and the signs S make each dimension point the way the mean prefers.
    pub fn align(&mut self, second_moment: &DMatrix<f64>, mean: &DVector<f64>) -> DMatrix<f64> {
        let j = self.features.ncols();
        let (root_c, inverse_root_c) = symmetric_roots(
            &(self.features.transpose() * &self.features / self.features.nrows().max(1) as f64),
        );
        let whitened = &root_c * second_moment * &root_c;
        let eigen = whitened.symmetric_eigen();
        let mut order: Vec<usize> = (0..j).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        let floor = eigen.eigenvalues.max().max(0.0) * 1e-12 + f64::MIN_POSITIVE;
        let scale: Vec<f64> = order
            .iter()
            .map(|&k| eigen.eigenvalues[k].max(floor).sqrt())
            .collect();
        let axes = DMatrix::from_fn(j, j, |r, c| eigen.eigenvectors[(r, order[c])]);
        // T without the signs, then the signs from the mean in the new coordinates.
        let mut map = DMatrix::from_fn(j, j, |r, c| axes[(c, r)] / scale[r]) * &root_c;
        let mut inverse =
            &inverse_root_c * &axes * DMatrix::from_diagonal(&DVector::from_vec(scale.clone()));
        let aligned_mean = &map * mean;
        for d in 0..j {
            if aligned_mean[d] < 0.0 {
                map.row_mut(d).neg_mut();
                inverse.column_mut(d).neg_mut();
            }
        }
        self.users = &self.users * map.transpose();
        self.features = &self.features * inverse;
        let total: f64 = scale.iter().map(|s| s * s).sum();
        self.second_moment_share = scale.iter().map(|s| s * s / total).collect();
        map
    }
}

/// C^{1/2} and C^{-1/2} of a symmetric positive semi-definite C (eigenvalues floored, so that a
/// direction the data do not span stays finite).
fn symmetric_roots(c: &DMatrix<f64>) -> (DMatrix<f64>, DMatrix<f64>) {
    let eigen = c.clone().symmetric_eigen();
    let floor = eigen.eigenvalues.max().max(0.0) * 1e-12 + f64::MIN_POSITIVE;
    let root = eigen.eigenvalues.map(|v| v.max(floor).sqrt());
    let vectors = &eigen.eigenvectors;
    (
        vectors * DMatrix::from_diagonal(&root) * vectors.transpose(),
        vectors * DMatrix::from_diagonal(&root.map(|v| 1.0 / v)) * vectors.transpose(),
    )
}

/// Adam's moment estimates for one parameter matrix.
struct Adam {
    first: DMatrix<f64>,
    second: DMatrix<f64>,
    steps: i32,
}

impl Adam {
    fn new(rows: usize, cols: usize) -> Self {
        Self {
            first: DMatrix::zeros(rows, cols),
            second: DMatrix::zeros(rows, cols),
            steps: 0,
        }
    }

    fn step(&mut self, parameters: &mut DMatrix<f64>, gradient: &DMatrix<f64>, rate: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        self.steps += 1;
        self.first = &self.first * B1 + gradient * (1.0 - B1);
        self.second = &self.second * B2 + gradient.component_mul(gradient) * (1.0 - B2);
        let (c1, c2) = (1.0 - B1.powi(self.steps), 1.0 - B2.powi(self.steps));
        for ((p, m), v) in parameters
            .iter_mut()
            .zip(self.first.iter())
            .zip(self.second.iter())
        {
            *p -= rate * (m / c1) / ((v / c2).sqrt() + 1e-8);
        }
    }
}

/// The principal angles (radians, ascending) between the column spaces of `a` and `b`.
pub fn principal_angles(a: &DMatrix<f64>, b: &DMatrix<f64>) -> Vec<f64> {
    let (qa, qb) = (a.clone().qr().q(), b.clone().qr().q());
    let cosines = (qa.transpose() * qb).singular_values();
    let mut angles: Vec<f64> = cosines.iter().map(|c| c.clamp(-1.0, 1.0).acos()).collect();
    angles.sort_by(f64::total_cmp);
    angles
}

/// The items at the two ends of dimension `d`: (lowest `n`, highest `n`), as indices.
pub fn extremes(basis: &Basis, d: usize, n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..basis.features.nrows()).collect();
    order.sort_by(|&a, &b| basis.features[(a, d)].total_cmp(&basis.features[(b, d)]));
    let low = order.iter().take(n).copied().collect();
    let high = order.iter().rev().take(n).copied().collect();
    (low, high)
}

/// Users' coefficients as vectors (the fitted λ̂_u).
pub fn user_vectors(basis: &Basis) -> Vec<DVector<f64>> {
    basis
        .users
        .row_iter()
        .map(|r| r.transpose().clone_owned())
        .collect()
}
