//! The inference engine checked against exact posteriors and its own invariants.
//!
//! Tolerances follow `streaming-vi.md` §9 (means over 20 simulated users, 30 answers): noisy
//! regime (prior sd of f ≈ 2) ADF KL(N_exact‖q) ≤ 0.08 nats, trace ratio in [0.85, 1.15], EP ≤ 0.005;
//! sharp regime (sd ≈ 5) ADF ≤ 0.6. JJ must fail the noisy ADF bound (a negative control).

use elicit::model::candidates::CandidateSpace;
use elicit::model::ep::{self, EpOptions};
use elicit::model::information::{
    CLOSED_FORM_MAX_ERROR_BITS, SCREEN_TABLE_MAX_ERROR_BITS, information_closed_form,
    information_quadrature, information_quadrature_bound, information_table,
    information_table_above, screen_variance_needed,
};
use elicit::model::likelihood::{GaussianObservation, Likelihood, PairLikelihood};
use elicit::model::numeric::{expected_sigmoid, gauss_hermite_96, sigmoid};
use elicit::model::pool::{Pool, PoolPair, SelectionOptions};
use elicit::model::update::{rank_one, tilted_moments};
use elicit::model::{Bank, Choice, NoiseModel, Outcome, Pair, Posterior, Strength, UpdateMethod};
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

fn gauss(rng: &mut StdRng) -> f64 {
    StandardNormal.sample(rng)
}

fn normal_vector(rng: &mut StdRng, j: usize, sd: f64) -> DVector<f64> {
    DVector::from_fn(j, |_, _| sd * gauss(rng))
}

/// Mean and covariance of a weighted sample.
fn weighted_moments(
    points: &[DVector<f64>],
    log_weights: &[f64],
) -> (DVector<f64>, DMatrix<f64>, f64) {
    let max = log_weights
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_weights.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let j = points[0].len();
    let mut mean = DVector::zeros(j);
    for (p, wi) in points.iter().zip(&w) {
        mean.axpy(*wi / total, p, 1.0);
    }
    let mut cov = DMatrix::zeros(j, j);
    for (p, wi) in points.iter().zip(&w) {
        let d = p - &mean;
        cov.ger(*wi / total, &d, &d, 1.0);
    }
    let ess = total * total / w.iter().map(|x| x * x).sum::<f64>();
    (mean, cov, ess)
}

/// KL(N(μp, Σp) ‖ N(μq, Σq)) in nats.
fn gaussian_kl(mp: &DVector<f64>, sp: &DMatrix<f64>, mq: &DVector<f64>, sq: &DMatrix<f64>) -> f64 {
    let j = mp.len() as f64;
    let chol_q = sq.clone().cholesky().unwrap();
    let chol_p = sp.clone().cholesky().unwrap();
    let inv_q = chol_q.inverse();
    let d = mq - mp;
    let logdet = |c: &nalgebra::Cholesky<f64, nalgebra::Dyn>| {
        2.0 * c.l().diagonal().iter().map(|x| x.ln()).sum::<f64>()
    };
    0.5 * ((&inv_q * sp).trace() + d.dot(&(&inv_q * &d)) - j + logdet(&chol_q) - logdet(&chol_p))
}

struct Scenario {
    prior: Posterior,
    observations: Vec<(DVector<f64>, PairLikelihood)>,
}

/// A simulated user answering `n` random questions with |x|² ≈ sd_f² under a N(0, I) prior.
fn scenario(rng: &mut StdRng, j: usize, n: usize, sd_f: f64, noise: NoiseModel) -> Scenario {
    let prior = Posterior::isotropic(j, 1.0).unwrap();
    let lambda = normal_vector(rng, j, 1.0);
    let observations = (0..n)
        .map(|_| {
            let x = normal_vector(rng, j, sd_f / (j as f64).sqrt());
            let f = lambda.dot(&x);
            let outcome = if rng.random_bool(sigmoid(f)) {
                Outcome::A
            } else {
                Outcome::B
            };
            (x, noise.likelihood(outcome).unwrap())
        })
        .collect();
    Scenario {
        prior,
        observations,
    }
}

fn log_target(s: &Scenario, lambda: &DVector<f64>) -> f64 {
    let prior_term = -0.5 * (lambda - s.prior.mean()).norm_squared();
    prior_term
        + s.observations
            .iter()
            .map(|(x, l)| l.log_prob(x.dot(lambda)))
            .sum::<f64>()
}

/// Exact posterior moments by a 2-D grid (J = 2).
fn exact_by_grid(s: &Scenario) -> (DVector<f64>, DMatrix<f64>) {
    let n = 601;
    let (lo, hi) = (-4.5, 4.5);
    let step = (hi - lo) / (n - 1) as f64;
    let mut points = Vec::with_capacity(n * n);
    let mut logs = Vec::with_capacity(n * n);
    for a in 0..n {
        for b in 0..n {
            let p = DVector::from_vec(vec![lo + a as f64 * step, lo + b as f64 * step]);
            logs.push(log_target(s, &p));
            points.push(p);
        }
    }
    let (m, c, _) = weighted_moments(&points, &logs);
    (m, c)
}

/// Exact posterior moments by importance sampling from a multivariate t₄ centred on the EP
/// approximation, its scale widened by 1.3.
fn exact_by_importance_sampling(
    s: &Scenario,
    rng: &mut StdRng,
    draws: usize,
) -> (DVector<f64>, DMatrix<f64>) {
    let (center, _) = ep::refine(&s.prior, &s.observations, EpOptions::default());
    let j = center.dim();
    let scale = center.cov() * (1.3f64 * 1.3);
    let chol = scale.clone().cholesky().unwrap();
    let inv = chol.inverse();
    let nu = 4.0;
    let mut points = Vec::with_capacity(draws);
    let mut logs = Vec::with_capacity(draws);
    for _ in 0..draws {
        let z = normal_vector(rng, j, 1.0);
        let chi2: f64 = (0..4)
            .map(|_| {
                let g = gauss(rng);
                g * g
            })
            .sum();
        let p = center.mean() + chol.l() * z * (nu / chi2).sqrt();
        let d = &p - center.mean();
        let log_proposal = -0.5 * (nu + j as f64) * (1.0 + d.dot(&(&inv * &d)) / nu).ln();
        logs.push(log_target(s, &p) - log_proposal);
        points.push(p);
    }
    let (m, c, ess) = weighted_moments(&points, &logs);
    assert!(
        ess > 0.2 * draws as f64,
        "importance sampling ESS too low: {ess}"
    );
    (m, c)
}

fn streaming(s: &Scenario, method: UpdateMethod) -> Posterior {
    let mut q = s.prior.clone();
    for (x, l) in &s.observations {
        q.update(x, l, method);
    }
    q
}

struct Accuracy {
    kl: f64,
    trace_ratio: f64,
}

fn mean_accuracy(
    j: usize,
    sd_f: f64,
    users: u64,
    exact: impl Fn(&Scenario, &mut StdRng) -> (DVector<f64>, DMatrix<f64>),
) -> Vec<(String, Accuracy)> {
    let noise = NoiseModel::default();
    let mut sums: Vec<(String, f64, f64)> = ["adf", "rvga", "jj", "ep"]
        .iter()
        .map(|n| (n.to_string(), 0.0, 0.0))
        .collect();
    for user in 0..users {
        let mut rng = StdRng::seed_from_u64(1000 * j as u64 + user);
        let s = scenario(&mut rng, j, 30, sd_f, noise);
        let (mp, sp) = exact(&s, &mut rng);
        let approximations = [
            streaming(&s, UpdateMethod::Adf),
            streaming(&s, UpdateMethod::Rvga),
            streaming(&s, UpdateMethod::Jj),
            ep::refine(&s.prior, &s.observations, EpOptions::default()).0,
        ];
        for (slot, q) in sums.iter_mut().zip(&approximations) {
            slot.1 += gaussian_kl(&mp, &sp, q.mean(), q.cov());
            slot.2 += q.cov().trace() / sp.trace();
        }
    }
    sums.into_iter()
        .map(|(n, kl, tr)| {
            (
                n,
                Accuracy {
                    kl: kl / users as f64,
                    trace_ratio: tr / users as f64,
                },
            )
        })
        .collect()
}

fn lookup<'a>(results: &'a [(String, Accuracy)], name: &str) -> &'a Accuracy {
    &results.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn adf_after_one_answer_is_the_exact_posterior() {
    let mut rng = StdRng::seed_from_u64(7);
    for (lapse, tie) in [(0.0, 0.0), (0.1, 0.0), (0.05, 0.6)] {
        let noise = NoiseModel {
            beta: 1.5,
            lapse,
            tie_threshold: tie,
        };
        for &outcome in noise.outcomes() {
            for _ in 0..10 {
                let j = 4;
                let a = DMatrix::from_fn(j, j, |_, _| gauss(&mut rng));
                let cov = &a * a.transpose() * 0.25 + DMatrix::identity(j, j) * 0.1;
                let prior = Posterior::new(normal_vector(&mut rng, j, 0.5), cov).unwrap();
                let x = normal_vector(&mut rng, j, 0.7);
                let lik = noise.likelihood(outcome).unwrap();
                let mut q = prior.clone();
                q.update(&x, &lik, UpdateMethod::Adf);
                // Exact: the posterior changes only along u = Σx, by the exact tilted moments of
                // f = λᵀx, integrated here by a dense Simpson rule.
                let p = prior.predictive(&x);
                let (_, mt, vt) = tilted_by_simpson(p.mean, p.variance, &lik, 40_001);
                let mean = prior.mean() + &p.u * ((mt - p.mean) / p.variance);
                let exact_cov =
                    prior.cov() - &p.u * p.u.transpose() * ((p.variance - vt) / p.variance.powi(2));
                let (mean_err, cov_err) = ((q.mean() - mean).amax(), (q.cov() - exact_cov).amax());
                assert!(
                    mean_err < 1e-8,
                    "{outcome:?} lapse={lapse}: mean off by {mean_err}"
                );
                assert!(
                    cov_err < 1e-8,
                    "{outcome:?} lapse={lapse}: cov off by {cov_err}"
                );
            }
        }
    }
}

/// (log Z, mean, variance) of the tilted density N(f; m, v)·p(y | f) by a composite Simpson rule
/// of `n` points (odd) over m ± 14 sd: the exact reference the quadrature is held to.
fn tilted_by_simpson(mean: f64, variance: f64, lik: &impl Likelihood, n: usize) -> (f64, f64, f64) {
    let sd = variance.sqrt();
    let h = 28.0 * sd / (n - 1) as f64;
    let (mut z, mut m1, mut m2) = (0.0, 0.0, 0.0);
    for i in 0..n {
        // Offsets from the mean, for their round-off.
        let t = -14.0 * sd + i as f64 * h;
        let w = if i == 0 || i == n - 1 {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        let dens = w * (-t * t / (2.0 * variance) + lik.log_prob(mean + t)).exp();
        z += dens;
        m1 += dens * t;
        m2 += dens * t * t;
    }
    let offset = m1 / z;
    (
        (z * h / 3.0).ln() - 0.5 * (2.0 * std::f64::consts::PI * variance).ln(),
        mean + offset,
        m2 / z - offset * offset,
    )
}

/// Tilted moments (log Z, mean, variance of N(f; m, v)·p(y | f)) against a dense Simpson rule over
/// the belief's ±14 sd, for every kind of pair answer, with and without a lapse, from a sharp
/// belief (v = 10⁻⁶) to a vague one (v = 10⁴) and from agreeing with the answer to contradicting
/// it by 30: within 10⁻⁸ (log Z absolutely, the moments relative to max(sd, 1) and max(v, 1)).
#[test]
fn tilted_moments_match_a_dense_rule_across_scales() {
    // The largest error of log Z, of the mean (÷ max(sd, 1)) and of the variance (÷ max(v, 1)).
    let mut worst = [
        (0.0f64, String::new()),
        (0.0, String::new()),
        (0.0, String::new()),
    ];
    for (lapse, tie) in [(0.0, 0.0), (0.1, 0.0), (0.05, 0.6)] {
        let noise = NoiseModel {
            beta: 1.0,
            lapse,
            tie_threshold: tie,
        };
        let mut likelihoods: Vec<PairLikelihood> = noise
            .outcomes()
            .iter()
            .map(|&o| noise.likelihood(o).unwrap())
            .collect();
        for strength in [Strength::Slightly, Strength::Clearly] {
            likelihoods.push(noise.graded_likelihood(Outcome::A, strength, 1.4).unwrap());
        }
        for lik in &likelihoods {
            for mean in [-30.0, -3.0, 0.0, 2.0, 15.0] {
                for variance in [1e-6, 1e-2, 1.0, 100.0, 1e4] {
                    let got = tilted_moments(mean, variance, lik);
                    let sd: f64 = variance.sqrt();
                    let (log_z, tilted_mean, tilted_variance) =
                        tilted_by_simpson(mean, variance, lik, 200_001);
                    let case = format!("{lik:?} m={mean} v={variance}");
                    let errors = [
                        (got.log_z - log_z).abs(),
                        (got.mean - tilted_mean).abs() / sd.max(1.0),
                        (got.variance - tilted_variance).abs() / variance.max(1.0),
                    ];
                    for (w, e) in worst.iter_mut().zip(errors) {
                        if e > w.0 || e.is_nan() {
                            *w = (e, case.clone());
                        }
                    }
                }
            }
        }
    }
    println!("worst errors (log Z, mean, variance): {worst:?}");
    for ((error, case), what) in worst.iter().zip(["log Z", "the mean", "the variance"]) {
        assert!(*error < 1e-8, "{what} off by {error:e} at {case}");
    }
}

#[test]
fn streaming_methods_against_the_exact_posterior_on_a_grid_j2() {
    let results = mean_accuracy(2, 2.0, 20, |s, _| exact_by_grid(s));
    let adf = lookup(&results, "adf");
    let jj = lookup(&results, "jj");
    assert!(adf.kl <= 0.08, "ADF KL {}", adf.kl);
    assert!(
        (0.85..=1.15).contains(&adf.trace_ratio),
        "ADF trace ratio {}",
        adf.trace_ratio
    );
    assert!(lookup(&results, "rvga").kl <= 0.08);
    assert!(
        lookup(&results, "ep").kl <= 0.005,
        "EP KL {}",
        lookup(&results, "ep").kl
    );
    // Negative control: JJ is overconfident and measurably worse.
    assert!(
        jj.kl > 0.15 && jj.kl > 3.0 * adf.kl,
        "JJ KL {} vs ADF {}",
        jj.kl,
        adf.kl
    );
    assert!(jj.trace_ratio < 0.9);
}

#[test]
fn streaming_methods_against_importance_sampling_j4() {
    let results = mean_accuracy(4, 2.0, 20, |s, rng| {
        exact_by_importance_sampling(s, rng, 100_000)
    });
    let adf = lookup(&results, "adf");
    assert!(adf.kl <= 0.08, "ADF KL {}", adf.kl);
    assert!((0.85..=1.15).contains(&adf.trace_ratio));
    assert!(
        lookup(&results, "ep").kl <= 0.005,
        "EP KL {}",
        lookup(&results, "ep").kl
    );
    let jj = lookup(&results, "jj");
    assert!(
        jj.kl > 0.15 && jj.kl > 3.0 * adf.kl,
        "JJ KL {} vs ADF {}",
        jj.kl,
        adf.kl
    );
}

#[test]
fn sharp_regime_stays_within_tolerance_j4() {
    let results = mean_accuracy(4, 5.0, 20, |s, rng| {
        exact_by_importance_sampling(s, rng, 100_000)
    });
    let adf = lookup(&results, "adf");
    assert!(adf.kl <= 0.6, "ADF KL {}", adf.kl);
    assert!(adf.trace_ratio >= 0.75);
    assert!(
        lookup(&results, "ep").kl <= 0.03,
        "EP KL {}",
        lookup(&results, "ep").kl
    );
}

#[test]
fn every_method_is_the_kalman_filter_for_a_linear_gaussian_observation() {
    let mut rng = StdRng::seed_from_u64(3);
    for method in UpdateMethod::ALL {
        let mut q = Posterior::isotropic(5, 2.0).unwrap();
        let mut kalman = q.clone();
        for _ in 0..20 {
            let x = normal_vector(&mut rng, 5, 0.6);
            let obs = GaussianObservation {
                value: gauss(&mut rng),
                noise_variance: 0.8,
            };
            q.update(&x, &obs, method);
            // Kalman gain k = Σx/(xᵀΣx + σ²).
            let p = kalman.predictive(&x);
            let s = p.variance + obs.noise_variance;
            let step = elicit::model::RankOne {
                c1: (obs.value - p.mean) / s,
                c2: 1.0 / s,
            };
            kalman.apply(&p, step);
        }
        assert!((q.mean() - kalman.mean()).amax() < 1e-10, "{method:?} mean");
        assert!((q.cov() - kalman.cov()).amax() < 1e-10, "{method:?} cov");
    }
}

/// Logistic answers with a 5 % lapse rate and no ties.
fn lapsing_noise() -> NoiseModel {
    NoiseModel {
        beta: 1.0,
        lapse: 0.05,
        tie_threshold: 0.0,
    }
}

/// A session's finish takes the reliability fit and the final one from one EP run continued
/// (`ep::EpRun`): both must be exactly what separate runs give, whatever stage stops the run.
#[test]
fn continued_ep_run_equals_separate_runs() {
    let mut rng = StdRng::seed_from_u64(12);
    let rough = elicit::model::history::RELIABILITY_EP;
    for (answers, tolerance) in [(3, 1e-9), (12, 1e-9), (25, 1e-3), (25, 1e-12)] {
        let s = scenario(&mut rng, 4, answers, 2.0, lapsing_noise());
        let close = EpOptions {
            tolerance,
            ..EpOptions::default()
        };
        let mut run = ep::EpRun::new(&s.prior, &s.observations);
        run.sweep_until(rough);
        let (first, first_sites) = run.fit();
        // The same run taken up again from its state (as a finish takes up a verdict's run).
        let mut resumed = ep::EpRun::resume(&s.prior, &s.observations, run.state()).unwrap();
        run.sweep_until(close);
        let (second, second_sites) = run.fit();
        resumed.sweep_until(close);
        assert_eq!(resumed.fit(), (second.clone(), second_sites.clone()));
        let (alone, alone_sites) = ep::refine(&s.prior, &s.observations, rough);
        assert_eq!((first.mean(), first.cov()), (alone.mean(), alone.cov()));
        assert_eq!(first_sites, alone_sites);
        let (alone, alone_sites) = ep::refine(&s.prior, &s.observations, close);
        assert_eq!((second.mean(), second.cov()), (alone.mean(), alone.cov()));
        assert_eq!(second_sites, alone_sites);
    }
}

/// A session's finish continues the EP run its reliability verdict took over the same answers
/// (`AnswerLog::final_posterior` with a `ReliabilityRun`): exactly what a finish from scratch
/// gives, and a run taken from another prior or over other answers is not continued.
#[test]
fn finish_continuing_the_verdicts_run_equals_one_from_scratch() {
    use elicit::model::history::{AnswerLog, Judgement, Step};
    use elicit::model::reliability::{LapsePrior, ReliabilityRule};
    let mut rng = StdRng::seed_from_u64(13);
    let noise = lapsing_noise();
    let prior = Posterior::isotropic(4, 1.0).unwrap();
    for answers in [3, 12, 25] {
        let drawn: Vec<(DVector<f64>, Choice)> = (0..answers)
            .map(|_| {
                let choice = if rng.random_bool(0.6) {
                    Choice::A
                } else {
                    Choice::B
                };
                (normal_vector(&mut rng, 4, 1.0), choice)
            })
            .collect();
        // Every answer to a pair of its own (no probes), as the service's log would hold it.
        let log_of = |n: usize| {
            AnswerLog::new(
                drawn[..n]
                    .iter()
                    .enumerate()
                    .map(|(i, (x, choice))| {
                        let pair = Some((2 * i, 2 * i + 1, *choice));
                        let answer = (choice.outcome(), None);
                        Step::comparison(x.clone(), pair, answer, &noise, 0.0, Some(-0.5))
                    })
                    .collect(),
            )
        };
        let log = log_of(answers);
        let (_, run) = log.reliability(&prior, LapsePrior::default(), &ReliabilityRule::default());
        let continued = log.final_posterior(&prior, UpdateMethod::Adf, Some(run.clone()));
        let fresh = log.final_posterior(&prior, UpdateMethod::Adf, None);
        assert!(continued.continued && !fresh.continued);
        assert_eq!(continued.posterior, fresh.posterior, "{answers} answers");
        // The verdict's leave-one-out figures are taken over, and are the fresh fit's to the bit.
        assert!(matches!(
            continued.judgement,
            Some(Judgement::LeaveOneOut(_))
        ));
        assert_eq!(
            log.leave_one_out(&prior, continued.judgement),
            log.leave_one_out(&prior, fresh.judgement),
            "{answers} answers"
        );
        // A run from another prior, or over other answers, is not taken up.
        let other_prior = Posterior::isotropic(4, 2.0).unwrap();
        let other = log.final_posterior(&other_prior, UpdateMethod::Adf, Some(run.clone()));
        assert!(!other.continued);
        assert_eq!(
            other,
            log.final_posterior(&other_prior, UpdateMethod::Adf, None)
        );
        let shorter = log_of(answers - 1);
        let other = shorter.final_posterior(&prior, UpdateMethod::Adf, Some(run));
        assert!(!other.continued);
        assert_eq!(
            other,
            shorter.final_posterior(&prior, UpdateMethod::Adf, None)
        );
    }
}

#[test]
fn ep_is_independent_of_answer_order() {
    let mut rng = StdRng::seed_from_u64(11);
    let s = scenario(&mut rng, 4, 25, 2.0, lapsing_noise());
    let (forward, _) = ep::refine(
        &s.prior,
        &s.observations,
        EpOptions {
            sweeps: 50,
            ..Default::default()
        },
    );
    let mut reversed = s.observations.clone();
    reversed.reverse();
    let (backward, _) = ep::refine(
        &s.prior,
        &reversed,
        EpOptions {
            sweeps: 50,
            ..Default::default()
        },
    );
    assert!((forward.mean() - backward.mean()).amax() < 1e-6);
    assert!((forward.cov() - backward.cov()).amax() < 1e-6);
}

#[test]
fn pool_statistics_give_the_posteriors_predictive() {
    let mut rng = StdRng::seed_from_u64(5);
    let (j, n) = (16, 300);
    let bank = Bank::ungrouped(DMatrix::from_fn(j, n, |_, _| gauss(&mut rng))).unwrap();
    let noise = NoiseModel {
        beta: 1.5,
        lapse: 0.1,
        tie_threshold: 0.0,
    };
    let mut q = Posterior::isotropic(j, 0.5).unwrap();
    let random_pair = |rng: &mut StdRng| {
        let a = rng.random_range(0..n);
        Pair {
            a,
            b: (a + rng.random_range(1..n)) % n,
        }
    };
    for _ in 0..50 {
        let x = bank.direction(random_pair(&mut rng), noise.beta);
        let outcome = if rng.random_bool(0.5) {
            Outcome::A
        } else {
            Outcome::B
        };
        q.update_along(
            &q.predictive(&x),
            &noise.likelihood(outcome).unwrap(),
            UpdateMethod::Adf,
        );
    }
    let space = CandidateSpace::new(&bank, None);
    let every_pair = SelectionOptions {
        exhaustive_limit: usize::MAX,
        ..SelectionOptions::default()
    };
    let pool = Pool::draw(&bank, &space, None, &q, &every_pair, &mut rng);
    assert_eq!(pool.len(), n, "every item is in an exhaustive pool");
    let position = |i: usize| pool.position(i).unwrap();
    for _ in 0..200 {
        let pair = random_pair(&mut rng);
        let (m, s2) = pool.pair_predictive(
            PoolPair {
                a: position(pair.a),
                b: position(pair.b),
            },
            noise.beta,
        );
        let exact = q.predictive(&bank.direction(pair, noise.beta));
        assert!((m - exact.mean).abs() < 1e-12, "{m} vs {}", exact.mean);
        assert!(
            (s2 - exact.variance).abs() < 1e-12,
            "{s2} vs {}",
            exact.variance
        );
    }
    // A set's differences from its first item: c = Dμ, S = DΣDᵀ.
    let set = [7usize, 100, 3, 250];
    let positions: Vec<_> = set.iter().map(|&i| position(i)).collect();
    let (center, cov) = pool.set_predictive(&positions, noise.beta);
    let d = DMatrix::from_fn(3, j, |r, c| {
        noise.beta * (bank.features(set[r + 1])[c] - bank.features(set[0])[c])
    });
    assert!((center - &d * q.mean()).amax() < 1e-12);
    assert!((cov - &d * q.cov() * d.transpose()).amax() < 1e-12);
}

/// The table bound that spares the shortlist's re-scoring never falls below the quadrature it
/// stands for, whatever the lapse rate, on a dense sample of beliefs (so skipping a candidate
/// below the best so far never changes the choice).
#[test]
fn the_quadrature_bound_bounds_the_quadrature_with_any_lapse() {
    let mut rng = StdRng::seed_from_u64(17);
    let mut tightest = f64::INFINITY;
    for _ in 0..100_000 {
        let s2 = 10f64.powf(rng.random_range(-4.0..4.0));
        let m = rng.random_range(-1.0..1.0) * 8.0 * (1.0 + std::f64::consts::PI * s2 / 8.0).sqrt();
        let noise = NoiseModel {
            beta: 1.0,
            lapse: if rng.random_bool(0.5) {
                0.0
            } else {
                rng.random_range(0.0..0.5)
            },
            tie_threshold: 0.0,
        };
        let Some(bound) = information_quadrature_bound(m, s2) else {
            continue;
        };
        let exact = information_quadrature(&noise, m, s2);
        assert!(
            exact <= bound + 1e-12,
            "m={m} s2={s2} lapse={}: {exact} > {bound}",
            noise.lapse
        );
        tightest = tightest.min(bound - exact);
    }
    assert!(tightest < 2e-3, "the bound is never tight: {tightest}");
}

#[test]
fn information_closed_form_and_bound_against_quadrature() {
    let noise = NoiseModel::default();
    let reference = |m: f64, s2: f64| {
        // 96-node reference of I = h(E σ) − E h(σ).
        let rule = gauss_hermite_96();
        let p = rule.expect(m, s2, sigmoid);
        let h = |p: f64| elicit::model::numeric::binary_entropy_bits(p);
        h(p) - rule.expect(m, s2, |f| h(sigmoid(f)))
    };
    let mut worst_closed: f64 = 0.0;
    let mut worst_16: f64 = 0.0;
    let mut worst_table: f64 = 0.0;
    for mi in 0..=60 {
        for si in 0..=50 {
            let m = -8.0 + mi as f64 * (16.0 / 60.0);
            let s2 = si as f64 * 0.5;
            let exact = reference(m, s2);
            worst_closed = worst_closed.max((information_closed_form(m, s2) - exact).abs());
            worst_table =
                worst_table.max((information_table(m, s2) - information_closed_form(m, s2)).abs());
            worst_16 = worst_16.max((information_quadrature(&noise, m, s2) - exact).abs());
        }
    }
    assert!(
        worst_closed <= CLOSED_FORM_MAX_ERROR_BITS,
        "closed form off by {worst_closed}"
    );
    assert!(worst_16 <= 0.03, "16-node rule off by {worst_16}");
    assert!(
        worst_table <= SCREEN_TABLE_MAX_ERROR_BITS,
        "table off by {worst_table}"
    );
    // And on a fine random grid, including large variances.
    for i in 0..20_000 {
        let m = ((i * 7919) % 2000) as f64 / 100.0 - 10.0;
        let s2 = ((i * 104_729) % 5000) as f64 / 10.0;
        let gap = (information_table(m, s2) - information_closed_form(m, s2)).abs();
        assert!(
            gap <= SCREEN_TABLE_MAX_ERROR_BITS,
            "table off by {gap} at m={m} s2={s2}"
        );
    }
}

/// The screen's block bound is exact: `information_table_above` never drops a value above its
/// floor, returns the screen itself when it answers, and does drop most values below it (else it
/// would save nothing). Beliefs over the whole table, edges and exact cell corners included,
/// against floors at, just under and just over each value.
#[test]
fn the_screens_block_bound_never_drops_a_value_above_the_floor() {
    let mut rng = StdRng::seed_from_u64(11);
    // Of the random floors: values at or below one, and those the bound dropped.
    let (mut dropped, mut below) = (0usize, 0usize);
    for i in 0..200_000 {
        let (m, s2) = match i % 4 {
            // Exact corners of the table's grid: a = ia/256, b² = ib/8.
            0 => {
                let a = rng.random_range(0..256) as f64 / 256.0;
                let s2 = 4.0 * a / (1.0 - a);
                let b2 = rng.random_range(0..512) as f64 / 8.0;
                ((b2 * (1.0 + std::f64::consts::PI * s2 / 8.0)).sqrt(), s2)
            }
            1 => (rng.random_range(-0.5..0.5), rng.random_range(0.0..0.5)),
            _ => (rng.random_range(-20.0..20.0), rng.random_range(0.0..200.0)),
        };
        let screen = information_table(m, s2);
        let floor = match i % 3 {
            0 => screen,
            1 => screen - 1e-9,
            _ => rng.random_range(0.0..1.0),
        };
        match information_table_above(m, s2, floor) {
            Some(value) => assert_eq!(value, screen, "m={m} s2={s2}"),
            None => {
                assert!(
                    screen <= floor,
                    "dropped {screen} above {floor} at m={m} s2={s2}"
                );
                dropped += usize::from(i % 3 == 2);
            }
        }
        below += usize::from(i % 3 == 2 && screen <= floor);
    }
    println!("the block bound dropped {dropped} of {below} values below a random floor");
    assert!(
        dropped * 2 > below,
        "the bound drops {dropped} of {below} values at or below the floor"
    );
}

/// The screen's variance bound is exact: below `screen_variance_needed(floor)` no belief's screen
/// exceeds the floor, whatever its mean, and the bound is tight enough to matter: a floor the
/// screen reaches at m = 0 with some variance needs at least a tenth of that variance.
#[test]
fn below_the_variance_a_floor_needs_no_screen_exceeds_it() {
    let mut rng = StdRng::seed_from_u64(12);
    assert_eq!(screen_variance_needed(f64::NEG_INFINITY), 0.0);
    assert_eq!(screen_variance_needed(1.0), f64::INFINITY);
    for _ in 0..2_000 {
        let floor = rng.random_range(0.0..0.99);
        let needed = screen_variance_needed(floor);
        for _ in 0..100 {
            let s2 = if needed.is_finite() {
                needed * rng.random_range(0.0..1.0f64).sqrt()
            } else {
                rng.random_range(0.0..1e6)
            };
            let m = rng.random_range(-0.3..0.3) * (1.0 + s2).sqrt();
            let screen = information_table(m, s2);
            assert!(
                screen <= floor,
                "{screen} > {floor} at m={m} s2={s2} < {needed}"
            );
        }
    }
    // (The closed form the screen tabulates is up to ~0.08 bits at s² = 0 with |m| ≈ 3, where the
    // exact information is 0, so floors below that need no variance.)
    for s2 in [0.25, 1.0, 2.0, 4.0, 16.0, 64.0] {
        let reached = information_table(0.0, s2);
        let needed = screen_variance_needed(reached - 1e-6);
        println!(
            "s2 {s2}: the screen reaches {reached:.4} bits at m = 0; the bound needs {needed:.4}"
        );
        assert!(
            needed <= s2 && (reached < 0.1 || needed >= s2 / 10.0),
            "the screen reaches {reached} at s2={s2}; the bound needs {needed}"
        );
    }
}

/// The property of streaming-vi §9.4: 10⁴ extreme updates (|m| up to 50, v from 1e-10 to 1e4,
/// lapses, ties, every method) never break symmetry, finiteness or positive definiteness.
mod spd_property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]
        #[test]
        fn covariance_stays_spd_under_extreme_updates(seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let j = 6;
            let mut q = Posterior::isotropic(j, 1.0).unwrap();
            for step in 0..500 {
                let method = UpdateMethod::ALL[step % 3];
                let noise = NoiseModel {
                    beta: 1.0,
                    lapse: [0.0, 0.05, 0.3][rng.random_range(0..3)],
                    tie_threshold: [0.0, 0.5][rng.random_range(0..2)],
                };
                let outcome = noise.outcomes()[rng.random_range(0..noise.outcomes().len())];
                let scale = 10f64.powf(rng.random_range(-5.0..2.0));
                let x = normal_vector(&mut rng, j, scale);
                let p = q.predictive(&x);
                // Push the mean far out sometimes, so that answers are extremely surprising.
                let shift = rng.random_range(-50.0..50.0);
                let lik = noise.likelihood(outcome).unwrap();
                let s = rank_one(method, p.mean + shift, p.variance, &lik);
                prop_assert!(s.c2 * p.variance < 1.0);
                q.apply(&p, s);
                prop_assert!(q.cov().iter().all(|v| v.is_finite()));
                prop_assert!(q.mean().iter().all(|v| v.is_finite()));
                prop_assert!((q.cov() - q.cov().transpose()).amax() == 0.0);
                prop_assert!(q.cov().clone().cholesky().is_some(), "lost SPD at step {}", step);
            }
        }
    }
}

/// The scores' P(i ≻ j) = E p(a | f) is exact at any variance, lapses and ties included (the
/// 16-node rule it was computed by was off by 0.007 at s² = 25 and 0.04 at s² = 100), and
/// E σ(f) + E σ(−f) = 1.
#[test]
fn strict_preference_matches_a_dense_rule_at_any_variance() {
    let mut worst: f64 = 0.0;
    for (lapse, tie_threshold) in [(0.0, 0.0), (0.1, 0.0), (0.0, 0.7), (0.2, 1.3)] {
        let noise = NoiseModel {
            lapse,
            tie_threshold,
            ..NoiseModel::default()
        };
        let lik = noise.likelihood(Outcome::A).unwrap();
        for s2 in [0.0, 1e-6, 0.3, 0.5, 0.5001, 1.0, 3.0, 25.0, 100.0, 1e3, 1e4] {
            for m in [0.0, 0.4, -1.5, 4.0, -12.0, 30.0, 200.0] {
                // E p(a | f) is the tilted density's normaliser Z.
                let exact = if s2 == 0.0 {
                    lik.log_prob(m).exp()
                } else {
                    tilted_by_simpson(m, s2, &lik, 200_001).0.exp()
                };
                let gap = (noise.expected_strict_preference(m, s2) - exact).abs();
                assert!(
                    gap <= 1e-9,
                    "lapse={lapse} η={tie_threshold} m={m} s2={s2}: off by {gap}"
                );
                worst = worst.max(gap);
                let total = expected_sigmoid(m, s2) + expected_sigmoid(-m, s2);
                assert!((total - 1.0).abs() < 1e-12, "m={m} s2={s2}: {total}");
            }
        }
    }
    assert!(worst > 0.0, "the reference is not a copy of the method");
}
