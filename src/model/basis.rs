//! Learning the reward basis from many users' comparisons over a shared item set (PReF's other
//! half, GUIDE §7): logistic matrix factorisation
//!   P(a ≻ b | u) = σ(λ_uᵀ(φ_a − φ_b)),
//! fitted by minimising the mean logistic loss over comparisons plus
//!   (ℓ₂/2)·(mean_u ‖λ_u‖² + mean_i ‖φ_i‖²),
//! from a truncated SVD of the imputed user × item preference matrix (each user's net win rate
//! of each item, 0 where unseen), with full-batch Adam.
//!
//! The factorisation is defined only up to an invertible J × J map (λ ↦ A⁻ᵀλ, φ ↦ Aφ) and a
//! shift of every φ. [`fit_basis`] returns the one representative where features are centred
//! and, once whitened over items, rotated onto the principal axes of the users' coefficients in
//! decreasing variance ("variance explained"); each dimension then points the way the average
//! user prefers (mean coefficient ≥ 0) and is scaled so that users' coefficients have unit
//! variance along it (features and users are uncorrelated across dimensions, and N(0, I) is
//! about the population's spread).

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
    /// Share of the users' coefficient variance along each dimension (sums to 1).
    pub variance_explained: Vec<f64>,
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

/// The representative of (Λ, Φ) described in the module docs.
fn normal_form(mut users: DMatrix<f64>, mut items: DMatrix<f64>) -> Basis {
    let j = items.ncols();
    // Centre the features: differences, and so every prediction, are unchanged.
    let centre = items.row_mean();
    for mut row in items.row_iter_mut() {
        row -= &centre;
    }
    // Whiten: Φ ← Φ W, Λ ← Λ W⁻¹ with W = C^{-1/2}, C the features' covariance.
    let cov = items.transpose() * &items / items.nrows() as f64;
    let eigen = cov.symmetric_eigen();
    let floor = eigen.eigenvalues.max() * 1e-12 + f64::MIN_POSITIVE;
    let root = DMatrix::from_diagonal(&eigen.eigenvalues.map(|v| v.max(floor).sqrt()));
    let inverse_root =
        DMatrix::from_diagonal(&eigen.eigenvalues.map(|v| 1.0 / v.max(floor).sqrt()));
    let whiten = &eigen.eigenvectors * inverse_root * eigen.eigenvectors.transpose();
    let unwhiten = &eigen.eigenvectors * root * eigen.eigenvectors.transpose();
    items *= whiten;
    users *= unwhiten;
    // Rotate onto the users' principal axes, in decreasing variance.
    let mean = users.row_mean();
    let mut centred = users.clone();
    for mut row in centred.row_iter_mut() {
        row -= &mean;
    }
    let user_cov = centred.transpose() * &centred / users.nrows().max(1) as f64;
    let axes = user_cov.symmetric_eigen();
    let mut order: Vec<usize> = (0..j).collect();
    order.sort_by(|&a, &b| axes.eigenvalues[b].total_cmp(&axes.eigenvalues[a]));
    let rotation = DMatrix::from_fn(j, j, |r, c| axes.eigenvectors[(r, order[c])]);
    users *= &rotation;
    items *= &rotation;
    // Each dimension points the way the average user prefers, and its unit is the users' spread
    // along it: users' coefficients get unit variance, so N(0, I) is about the population's
    // spread (the features' variances then rank the dimensions).
    for (d, &axis) in order.iter().enumerate() {
        if users.column(d).mean() < 0.0 {
            users.column_mut(d).neg_mut();
            items.column_mut(d).neg_mut();
        }
        let spread = axes.eigenvalues[axis].max(0.0).sqrt();
        if spread > 1e-12 {
            users.column_mut(d).unscale_mut(spread);
            items.column_mut(d).scale_mut(spread);
        }
    }
    let total: f64 = axes.eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let variance_explained = order
        .iter()
        .map(|&i| axes.eigenvalues[i].max(0.0) / total.max(f64::MIN_POSITIVE))
        .collect();
    Basis {
        features: items,
        users,
        variance_explained,
    }
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
