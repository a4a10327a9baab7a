//! Micro-benchmarks of the inference engine (`cargo bench --bench engine`).
//!
//! Baselines measured in the same run: a question on a 40-item bank against the same on banks of
//! 1,000 to 100,000 items (drawn pools); scoring every pair of a 1,000-item bank against a drawn
//! pool; exhaustive selection without the exact bound pruning.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use elicit::model::Pair;
use elicit::model::candidates::CandidateSpace;
use elicit::model::elicitation::Response;
use elicit::model::ep::{self, EpOptions};
use elicit::model::history::RELIABILITY_EP;
use elicit::model::information;
use elicit::model::pool::{Pool, SelectionOptions};
use elicit::model::select::{self, Candidates};
use elicit::model::space::CoreStats;
use elicit::model::summary::End;
use elicit::model::{
    Bank, Choice, Elicitation, ElicitationConfig, NoiseModel, Outcome, Posterior, Strategy,
    UpdateMethod, score,
};
use elicit::model::{epig, kway};
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

fn gaussian(rng: &mut StdRng, rows: usize, cols: usize, sd: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| {
        let z: f64 = StandardNormal.sample(rng);
        sd * z
    })
}

/// A posterior after 10 answers, so that Σ is not diagonal.
fn warm_posterior(rng: &mut StdRng, j: usize) -> Posterior {
    let mut q = Posterior::isotropic(j, 1.0).unwrap();
    let lik = NoiseModel::default().likelihood(Outcome::A).unwrap();
    for _ in 0..10 {
        let x = gaussian(rng, j, 1, 1.0).column(0).into_owned();
        q.update(&x, &lik, UpdateMethod::Adf);
    }
    q
}

fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("update");
    let lik = NoiseModel {
        lapse: 0.05,
        ..NoiseModel::default()
    }
    .likelihood(Outcome::A)
    .unwrap();
    for j in [8, 16, 32, 64] {
        let mut rng = StdRng::seed_from_u64(1);
        let posterior = warm_posterior(&mut rng, j);
        let x: DVector<f64> = gaussian(&mut rng, j, 1, 0.5).column(0).into_owned();
        for method in UpdateMethod::ALL {
            if method != UpdateMethod::Adf && j != 16 {
                continue;
            }
            group.bench_with_input(BenchmarkId::new(method.as_str(), j), &j, |b, _| {
                b.iter_batched_ref(
                    || posterior.clone(),
                    |q| q.update(black_box(&x), &lik, method),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// A session's question: the next pair from a pool drawn under `posterior` (`core`: the
/// session's coreset statistics, kept from answer to answer; the pool's draw included).
fn ask(
    (bank, space, core): (&Bank, &CandidateSpace, Option<&CoreStats>),
    posterior: &Posterior,
    noise: &NoiseModel,
    options: &SelectionOptions,
    rng: &mut StdRng,
) -> Option<select::Selected> {
    let pool = Pool::draw(bank, space, core, posterior, options, rng);
    select::select(
        &Candidates::new(bank, &pool, space, noise, options),
        Strategy::Bald,
        rng,
    )
}

/// One question (the pool's draw, its statistics, the BALD scan) at J = 16 as the bank grows:
/// the 40-item bank is the baseline; from 1,000 items on the pool is drawn from the bank's index
/// (built once per bank, outside the timing), so the cost must not grow with the bank. At 1,000
/// items, scoring every pair (the exhaustive scan, ~500k pairs) is the second baseline.
fn question_by_bank_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("question_J16");
    let noise = NoiseModel::default();
    let options = SelectionOptions::default();
    for items in [40usize, 1_000, 10_000, 100_000] {
        let mut rng = StdRng::seed_from_u64(3);
        let bank = Bank::ungrouped(gaussian(&mut rng, 16, items, 0.5)).unwrap();
        bank.prepare();
        let posterior = warm_posterior(&mut rng, 16);
        let space = CandidateSpace::new(&bank, None);
        let core = CoreStats::new(space.items().coreset(bank.feature_matrix()), &posterior);
        let session = (&bank, &space, (items > 40).then_some(&core));
        let name = if items == 40 {
            "bald (baseline)"
        } else {
            "bald"
        };
        group.bench_function(BenchmarkId::new(name, items), |b| {
            b.iter(|| ask(session, &posterior, &noise, &options, &mut rng))
        });
        if items == 1_000 {
            let exhaustive = SelectionOptions {
                exhaustive_limit: usize::MAX,
                ..options
            };
            group.bench_function(BenchmarkId::new("every pair (baseline)", items), |b| {
                b.iter(|| ask(session, &posterior, &noise, &exhaustive, &mut rng))
            });
        }
    }
    group.finish();
}

/// Selection from a pool already drawn, with and without the exact-bound pruning: banks of ~1k
/// and ~8k pairs (scanned whole: the largest space that is its own pool) and of ~100k pairs (a
/// drawn pool).
fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_J16");
    let noise = NoiseModel::default();
    for (items, label) in [(46usize, "1k"), (128, "8k"), (448, "100k")] {
        let mut rng = StdRng::seed_from_u64(3);
        let bank = Bank::ungrouped(gaussian(&mut rng, 16, items, 0.5)).unwrap();
        let posterior = warm_posterior(&mut rng, 16);
        let space = CandidateSpace::new(&bank, None);
        let defaults = SelectionOptions::default();
        let pool = Pool::draw(&bank, &space, None, &posterior, &defaults, &mut rng);
        for (name, options) in [
            ("bald", defaults),
            (
                "bald-no-pruning (baseline)",
                SelectionOptions {
                    prune: false,
                    ..defaults
                },
            ),
        ] {
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| {
                    select::select(
                        &Candidates::new(&bank, &pool, &space, &noise, &options),
                        Strategy::Bald,
                        &mut rng,
                    )
                })
            });
        }
        group.bench_function(BenchmarkId::new("dopt", label), |b| {
            b.iter(|| {
                select::select(
                    &Candidates::new(&bank, &pool, &space, &noise, &defaults),
                    Strategy::Dopt,
                    &mut rng,
                )
            })
        });
    }
    group.finish();
}

/// One answer as the service handles it on a 100,000-item bank (J = 16): the rank-one update of
/// the posterior and of the coreset's statistics, then the next question from a drawn pool.
fn answer_then_select(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(5);
    let noise = NoiseModel {
        lapse: 0.05,
        ..NoiseModel::default()
    };
    let bank = Bank::ungrouped(gaussian(&mut rng, 16, 100_000, 0.5)).unwrap();
    bank.prepare();
    let posterior = warm_posterior(&mut rng, 16);
    let space = CandidateSpace::new(&bank, None);
    let coreset = space.items().coreset(bank.feature_matrix());
    let core = CoreStats::new(coreset, &posterior);
    let options = SelectionOptions::default();
    let lik = noise.likelihood(Outcome::B).unwrap();
    let x = bank.direction(Pair { a: 3, b: 7 }, noise.beta);
    c.bench_function("answer_then_select_100000_J16", |b| {
        b.iter_batched_ref(
            || (posterior.clone(), core.clone()),
            |(q, core)| {
                let predictive = q.predictive(&x);
                let update = q.update_along(&predictive, &lik, UpdateMethod::Adf);
                core.update(coreset, &predictive.u, update.step);
                ask((&bank, &space, Some(core)), q, &noise, &options, &mut rng)
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// One answer of each kind applied by the engine (`Elicitation::respond`, J = 16, lapse 0.05), as
/// the service applies it from its run cache: a plain pair answer (the baseline), a statement, a
/// pick of 4, the top two of 4 and a full ranking of 4; on a 40-item bank and on a 100,000-item
/// one (drawn pools: the coreset's statistics follow every step), early in a session and after 30
/// answers. Each iteration restores the run from its state (a clone), as a cache hit does.
fn answers(c: &mut Criterion) {
    let mut group = c.benchmark_group("answer_kinds_J16");
    let mut rng = StdRng::seed_from_u64(8);
    let config = ElicitationConfig {
        noise: NoiseModel {
            lapse: 0.05,
            ..NoiseModel::default()
        },
        ..Default::default()
    };
    let prior = Posterior::isotropic(16, 1.0).unwrap();
    for items in [40usize, 100_000] {
        let bank = Bank::ungrouped(gaussian(&mut rng, 16, items, 0.5)).unwrap();
        bank.prepare();
        for answered in [0usize, 30] {
            let mut run = Elicitation::new(&bank, prior.clone(), config, None).unwrap();
            // Earlier answers leave the last four items alone, so the benched pair is no probe.
            for n in 0..answered {
                let pair = Pair {
                    a: (2 * n) % (items - 4),
                    b: (2 * n + 1) % (items - 4),
                };
                run.answer(pair, Choice::A).unwrap();
            }
            let state = run.into_state();
            let shown: Vec<usize> = (items - 4..items).collect();
            let kinds = [
                (
                    "pair (baseline)",
                    Response::pair(
                        Pair {
                            a: items - 1,
                            b: items - 2,
                        },
                        Choice::B,
                    ),
                ),
                (
                    "statement",
                    Response::Statement {
                        dimension: 3,
                        prefer: End::High,
                        strength: None,
                    },
                ),
                (
                    "pick of 4",
                    Response::Pick {
                        shown: shown.clone(),
                        ranking: vec![2],
                    },
                ),
                (
                    "top 2 of 4",
                    Response::Pick {
                        shown: shown.clone(),
                        ranking: vec![2, 0],
                    },
                ),
                (
                    "ranking of 4",
                    Response::Pick {
                        shown: shown.clone(),
                        ranking: vec![2, 0, 3, 1],
                    },
                ),
            ];
            for (kind, response) in kinds {
                let label = format!("{items} items, after {answered}");
                group.bench_function(BenchmarkId::new(kind, label), |b| {
                    b.iter_batched(
                        || state.clone(),
                        |state| {
                            let mut run =
                                Elicitation::from_state(&bank, prior.clone(), state, config)
                                    .unwrap();
                            run.respond(response.clone()).unwrap()
                        },
                        criterion::BatchSize::SmallInput,
                    )
                });
            }
        }
    }
    group.finish();
}

/// Building a bank's index of extreme items, once per bank version (J = 16, 100,000 items).
fn bank_index(c: &mut Criterion) {
    let mut group = c.benchmark_group("bank_index_J16");
    group.sample_size(10);
    let mut rng = StdRng::seed_from_u64(2);
    let features = gaussian(&mut rng, 16, 100_000, 1.0);
    group.bench_function("build 100000", |b| {
        b.iter_batched(
            || Bank::ungrouped(features.clone()).unwrap(),
            |bank| {
                bank.prepare();
                bank
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The per-pair screen over 20,000 (m, s²) values: the table against evaluating the closed form.
fn screens(c: &mut Criterion) {
    let inputs: Vec<(f64, f64)> = (0..20_000)
        .map(|i| {
            (
                ((i * 7919) % 4000) as f64 / 200.0 - 10.0,
                ((i * 104_729) % 3000) as f64 / 100.0,
            )
        })
        .collect();
    let mut group = c.benchmark_group("screen_20k_pairs");
    group.bench_function("closed form (baseline)", |b| {
        b.iter(|| {
            inputs
                .iter()
                .map(|&(m, s2)| information::information_closed_form(m, s2))
                .sum::<f64>()
        })
    });
    group.bench_function("table", |b| {
        b.iter(|| {
            inputs
                .iter()
                .map(|&(m, s2)| information::information_table(m, s2))
                .sum::<f64>()
        })
    });
    group.finish();
}

fn scoring(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(6);
    let posterior = warm_posterior(&mut rng, 32);
    let candidates = gaussian(&mut rng, 32, 1000, 1.0);
    c.bench_function("score_1000_J32", |b| {
        b.iter(|| score::score(black_box(&posterior), &candidates))
    });
    // P(i ≻ j) for the 2,450 ordered pairs of 50 candidates: under a wide belief (a new user's
    // prior, a pair's s² ≈ 32: the logistic's grid) and a narrow one (s² ≈ 0.3: 16 nodes).
    let noise = NoiseModel::default();
    let candidates = gaussian(&mut rng, 16, 50, 1.0);
    let mut group = c.benchmark_group("pairwise_scores_50_J16");
    for (name, variance) in [("wide", 1.0), ("narrow", 0.01)] {
        let belief = Posterior::isotropic(16, variance).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| score::preference_matrix(black_box(&belief), &noise, &candidates))
        });
    }
    group.finish();
}

/// Pick one of k at J = 16 on a 1,000-item bank: choosing a 4-set (target ≤ 2 ms; the pool's
/// draw included) against choosing a pair on the same bank in the same run, and the 4-way ADF
/// step against the pairwise.
fn kway(c: &mut Criterion) {
    let mut group = c.benchmark_group("kway_J16");
    let noise = NoiseModel {
        lapse: 0.05,
        ..NoiseModel::default()
    };
    let mut rng = StdRng::seed_from_u64(6);
    let bank = Bank::ungrouped(gaussian(&mut rng, 16, 1000, 0.5)).unwrap();
    bank.prepare();
    let posterior = warm_posterior(&mut rng, 16);
    let space = CandidateSpace::new(&bank, None);
    let options = SelectionOptions::default();
    for choices in [2usize, 3, 4] {
        group.bench_function(
            BenchmarkId::new("select", format!("{choices} of 1000")),
            |b| {
                b.iter(|| {
                    let pool = Pool::draw(&bank, &space, None, &posterior, &options, &mut rng);
                    kway::select_set(
                        &Candidates::new(&bank, &pool, &space, &noise, &options),
                        Strategy::Bald,
                        choices,
                        &mut rng,
                    )
                })
            },
        );
    }
    for choices in [2usize, 3, 4] {
        let shown: Vec<DVector<f64>> = (0..choices).map(|i| bank.features(i)).collect();
        group.bench_function(BenchmarkId::new("update", format!("{choices}-way")), |b| {
            b.iter(|| kway::choice_step(black_box(&posterior), &shown, 1, &noise))
        });
    }
    group.finish();
}

/// EPIG at J = 16 against BALD on the same bank and pool in the same run: a 40-item bank (every
/// unasked pair scored by Monte Carlo) and a 1,000-item bank (a drawn pool, its pairs screened
/// by the linear-Gaussian EPIG first), 100 target pairs among 20 target items.
fn epig(c: &mut Criterion) {
    let mut group = c.benchmark_group("epig_J16");
    let noise = NoiseModel::default();
    let mut rng = StdRng::seed_from_u64(8);
    let posterior = warm_posterior(&mut rng, 16);
    let options = SelectionOptions::default();
    for items in [40usize, 1000] {
        let bank = Bank::ungrouped(gaussian(&mut rng, 16, items, 0.5)).unwrap();
        let space = CandidateSpace::new(&bank, None);
        let pool = Pool::draw(&bank, &space, None, &posterior, &options, &mut rng);
        let target_items: Vec<usize> = (0..20).collect();
        let targets = epig::Targets::among(&bank, &target_items, &mut rng);
        let candidates = Candidates::new(&bank, &pool, &space, &noise, &options);
        group.bench_function(BenchmarkId::new("bald (baseline)", items), |b| {
            b.iter(|| select::select(&candidates, Strategy::Bald, &mut rng))
        });
        group.bench_function(BenchmarkId::new("epig", items), |b| {
            b.iter(|| epig::select_for_targets(&candidates, &posterior, &targets, &mut rng))
        });
    }
    group.finish();
}

/// A session's finish at J = 16 as the session grows (10 to 200 answers): the reliability fit and
/// the final posterior from one continued EP run (`ep::EpRun`), against the two separate runs
/// the finish made before (the baseline). Both cost O(answers·J²) a sweep.
fn finish_ep(c: &mut Criterion) {
    let mut group = c.benchmark_group("finish_ep_J16");
    let mut rng = StdRng::seed_from_u64(9);
    let prior = Posterior::isotropic(16, 1.0).unwrap();
    let noise = NoiseModel {
        lapse: 0.05,
        ..NoiseModel::default()
    };
    for answers in [10, 20, 50, 200] {
        let observations: Vec<_> = (0..answers)
            .map(|i| {
                let x = gaussian(&mut rng, 16, 1, 0.7).column(0).into_owned();
                let outcome = if i % 3 == 0 { Outcome::B } else { Outcome::A };
                (x, noise.likelihood(outcome).unwrap())
            })
            .collect();
        group.bench_function(BenchmarkId::new("two runs (baseline)", answers), |b| {
            b.iter(|| {
                let rough = ep::refine(&prior, black_box(&observations), RELIABILITY_EP);
                let close = ep::refine(&prior, &observations, EpOptions::default());
                (rough, close)
            })
        });
        group.bench_function(BenchmarkId::new("one continued run", answers), |b| {
            b.iter(|| {
                let mut run = ep::EpRun::new(&prior, black_box(&observations));
                run.sweep_until(RELIABILITY_EP);
                let rough = run.fit();
                run.sweep_until(EpOptions::default());
                (rough, run.fit())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = update, question_by_bank_size, bank_index, selection, screens, answer_then_select, answers, scoring, kway, epig, finish_ep
}
criterion_main!(benches);
