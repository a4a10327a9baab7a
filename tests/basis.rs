//! Learning the basis, checked round trip: comparisons simulated from known item features Φ and
//! users λ_u ~ N(μ, Σ) are fitted by `elicit fit`'s algorithm; the learned features span Φ's
//! subspace (principal angles bounded), and the population prior, mapped back into Φ's
//! coordinates, recovers μ and Σ within stated tolerances.

use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

use elicit::eval::learn::{self, ComparisonSet, FitOptions};
use elicit::model::basis::{BasisOptions, Comparison, principal_angles};
use elicit::model::numeric::sigmoid;

const J: usize = 3;
const ITEMS: usize = 60;
const USERS: usize = 600;
const PER_USER: usize = 120;

#[test]
fn a_fit_recovers_the_subspace_and_the_population() {
    let mut rng = StdRng::seed_from_u64(11);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let features = DMatrix::from_fn(ITEMS, J, |_, _| normal.sample(&mut rng));
    let mean = DVector::from_vec(vec![1.5, -1.0, 0.5]);
    let cov = DMatrix::from_row_slice(J, J, &[1.0, 0.3, 0.0, 0.3, 0.8, 0.2, 0.0, 0.2, 0.6]);
    let root = cov.clone().cholesky().unwrap().l();
    let mut set = ComparisonSet {
        users: (0..USERS).map(|u| format!("u{u}")).collect(),
        items: (0..ITEMS).map(|i| format!("i{i}")).collect(),
        comparisons: Vec::new(),
    };
    for user in 0..USERS {
        let lambda = &mean + &root * DVector::from_fn(J, |_, _| normal.sample(&mut rng));
        for _ in 0..PER_USER {
            let a = rng.random_range(0..ITEMS);
            let mut b = rng.random_range(0..ITEMS - 1);
            if b >= a {
                b += 1;
            }
            let d = (features.row(a) - features.row(b)).transpose();
            let a_wins = rng.random::<f64>() < sigmoid(lambda.dot(&d));
            let (winner, loser) = if a_wins { (a, b) } else { (b, a) };
            set.comparisons.push(Comparison {
                user,
                winner,
                loser,
            });
        }
    }
    let options = FitOptions {
        basis: BasisOptions {
            dims: J,
            l2: 0.01,
            epochs: 400,
            ..BasisOptions::default()
        },
        held_out: 0.1,
    };
    let fitted = learn::fit(&set, &options, |_, _| {}).unwrap();
    let report = &fitted.report;
    // The noise ceiling: the true model itself orders about this share right.
    assert!(report.held_out_accuracy > 0.75, "{report:?}");
    assert!(report.train_accuracy >= report.held_out_accuracy - 0.02);

    // The normal form (module docs of `elicit::model::basis`): centred, uncorrelated features, the
    // population prior's second moment the identity (N(0, I) is the population's zero-mean
    // summary), dimensions ordered by their share of it, each pointing the way the average user
    // prefers.
    let basis = &fitted.basis;
    assert!(basis.features.row_mean().norm() < 1e-9);
    let feature_cov = basis.features.transpose() * &basis.features;
    let off_diagonal = &feature_cov - DMatrix::from_diagonal(&feature_cov.diagonal());
    assert!(
        off_diagonal.norm() < 1e-9 * feature_cov.norm(),
        "{feature_cov}"
    );
    let (prior_mean, prior_cov) = (fitted.prior.mean(), fitted.prior.cov());
    let second_moment = prior_cov + prior_mean * prior_mean.transpose();
    assert!(
        (&second_moment - DMatrix::identity(J, J)).norm() < 1e-9,
        "{second_moment}"
    );
    assert!(prior_mean.iter().all(|&m| m >= 0.0), "{prior_mean}");
    let shares = &basis.second_moment_share;
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{shares:?}");

    // Subspace: the learned features span the true (centred) ones.
    let mut centred = features.clone();
    let centre = centred.row_mean();
    for mut row in centred.row_iter_mut() {
        row -= &centre;
    }
    let angles = principal_angles(&centred, &fitted.basis.features);
    let largest = angles.last().unwrap().to_degrees();
    eprintln!(
        "principal angles (degrees): {:?}",
        angles.iter().map(|a| a.to_degrees()).collect::<Vec<_>>()
    );
    assert!(largest < 10.0, "largest principal angle {largest:.1}°");

    // Population: with Φ_learned ≈ Φ_true A, a learned λ maps to A λ in the true coordinates.
    let a = centred
        .clone()
        .svd(true, true)
        .solve(&fitted.basis.features, 1e-12)
        .unwrap();
    let mapped_mean = &a * fitted.prior.mean();
    let mapped_cov = &a * fitted.prior.cov() * a.transpose();
    eprintln!("mean {mapped_mean} vs {mean}; cov {mapped_cov} vs {cov}");
    assert!(
        (&mapped_mean - &mean).norm() / mean.norm() < 0.2,
        "{mapped_mean}"
    );
    assert!(
        (&mapped_cov - &cov).norm() / cov.norm() < 0.35,
        "{mapped_cov}"
    );
}
