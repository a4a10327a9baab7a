//! Offline evaluation on real users (`elicit eval`): how many questions does a bank need, for
//! real users, to reach what accuracy, and how much better than random questions?
//!
//! Each evaluated user is a real user: a question (a, b) is answered from the user's own ratings
//! (higher wins; equal ratings are a `tie` when the model has ties, else a `skip`), and only items
//! the user rated can be asked; with [`EqualPairs::Exclude`] (the default, the reference protocol)
//! only pairs the user rated differently. A seeded 30 % of the user's comparable pairs (different
//! ratings) are held out and never asked; `accuracy` after k questions is the fraction of held-out pairs
//! that the posterior mean orders as the user did. The same users run in-process
//! ([`run_in_process`]) or through a server's HTTP API ([`remote`]).

pub mod data;
pub mod fit;
pub mod learn;
pub mod plot;
pub mod remote;

use std::collections::{BTreeMap, HashMap, HashSet};

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use sha2::{Digest, Sha256};

use self::data::{Dataset, UserRatings};
use crate::model::Pair;
use crate::model::elicitation::{Next, Response};
use crate::model::epig;
use crate::model::kway::AnswerFormat;
use crate::model::{
    Bank, Choice, Elicitation, ElicitationConfig, NoiseModel, Posterior, StoppingRule, Strategy,
    UpdateMethod,
};

/// Questions expected to yield less than this stop a session (the service's own rule).
pub const MIN_INFORMATION_BITS: f64 = 0.01;

/// Where the prior comes from: `isotropic`, `train`, or the path of a prior file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorKind {
    /// N(0, I).
    Isotropic,
    /// Estimated from the train-split users' own fitted coefficients (see [`train_prior`]).
    Train,
    /// A prior file written by `elicit fit --prior-out` ([`learn::PriorFile`]).
    File(std::path::PathBuf),
    /// Learned by the server (`--target` only): the train users onboard through the API from
    /// N(0, I) and finish, `prior:refit` learns the prior from their answer logs, and the
    /// evaluated users start from it ([`remote::Remote::learn_prior`]).
    Refit,
}

impl std::str::FromStr for PriorKind {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "isotropic" => Self::Isotropic,
            "train" => Self::Train,
            "refit" => Self::Refit,
            path => Self::File(path.into()),
        })
    }
}

/// Whether pairs a user rated equally may be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EqualPairs {
    /// Only pairs the user rated differently are candidates (the protocol of the published
    /// reference numbers, like `comparisons.csv`). It tells the engine which pairs are
    /// indifferent, which a live service would not know.
    Exclude,
    /// Any pair of rated items may be asked; equal ratings are answered `tie` (model with ties)
    /// or `skip`, and a skip costs a question, as it would live.
    Ask,
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Evaluate the users of this split (all users when `None` or when the file has no split).
    pub split: Option<String>,
    pub questions: usize,
    pub strategies: Vec<Strategy>,
    pub method: UpdateMethod,
    pub seed: u64,
    pub prior: PriorKind,
    pub noise: NoiseModel,
    /// Users with more rated items are evaluated on a seeded sample of this many.
    pub max_items_per_user: usize,
    /// At most this many held-out pairs are scored per user.
    pub max_scored_pairs: usize,
    pub equal_pairs: EqualPairs,
    /// Items a question shows (2: pairs; 3–6: pick one, answered with the highest-rated).
    pub choices: usize,
    /// What a question of 3–6 items asks for ([`UserTask::ranking`] answers it from ratings).
    pub answer: AnswerFormat,
    /// Target items (dataset indices, `--targets`): never asked about, and the held-out pairs
    /// are the user's comparable pairs among them; `None` for the 30 % held-out pairs protocol.
    pub targets: Option<HashSet<usize>>,
}

/// One user's evaluation task: items are local indices into `items`.
#[derive(Debug, Clone)]
pub struct UserTask {
    pub user: String,
    /// Dataset item indices the session may ask about.
    pub items: Vec<usize>,
    /// The user's rating of each of `items`.
    pub ratings: Vec<f64>,
    /// Pairs the session must never ask (local indices): the held-out pairs, and with
    /// [`EqualPairs::Exclude`] the pairs the user rated equally.
    pub never_asked: Vec<(usize, usize)>,
    /// Held-out pairs scored for accuracy, as (winner, loser) local indices.
    pub scored: Vec<(usize, usize)>,
    /// Every comparable pair as (winner, loser): the ceiling's data.
    pub comparable: Vec<(usize, usize)>,
    /// The items questions may show (local indices); `None`: all of them.
    pub askable: Option<Vec<usize>>,
    /// The user's rated target items (local indices; empty without `--targets`).
    pub targets: Vec<usize>,
}

impl UserTask {
    /// The answer the user's ratings give to (a, b).
    pub fn answer(&self, a: usize, b: usize, noise: &NoiseModel) -> Choice {
        let (ra, rb) = (self.ratings[a], self.ratings[b]);
        if ra > rb {
            Choice::A
        } else if rb > ra {
            Choice::B
        } else if noise.ties_enabled() {
            Choice::Tie
        } else {
            Choice::Skip
        }
    }

    /// Held-out accuracy of a coefficient vector: the fraction of scored pairs it orders as the
    /// user did (a zero difference counts ½).
    pub fn accuracy(&self, dataset: &Dataset, lambda: &DVector<f64>) -> f64 {
        let differences: Vec<DVector<f64>> = self
            .scored
            .iter()
            .map(|&(w, l)| self.difference(dataset, w, l))
            .collect();
        fit::agreement(lambda, &differences)
    }

    /// The answer to "order these by preference" (`ranked` of them, best first; one for "which
    /// do you like best?"): the shown items' positions in `items` by the user's ratings, highest
    /// first. Equal ratings are not ordered: the ranking stops where the best remaining rating
    /// is shared (a skip if the best of all is), so every ordered pick is one the user's ratings
    /// decide.
    pub fn ranking(&self, items: &[usize], ranked: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&x, &y| self.ratings[items[y]].total_cmp(&self.ratings[items[x]]));
        let rating = |p: usize| self.ratings[items[order[p]]];
        let decided = (0..order.len())
            .take_while(|&p| p + 1 == order.len() || rating(p) > rating(p + 1))
            .count();
        order.truncate(decided.min(ranked));
        order
    }

    fn difference(&self, dataset: &Dataset, winner: usize, loser: usize) -> DVector<f64> {
        dataset.features.column(self.items[winner]) - dataset.features.column(self.items[loser])
    }

    /// The in-sample accuracy of a logistic fit on all of the user's comparable pairs.
    pub fn ceiling(&self, dataset: &Dataset) -> f64 {
        let differences: Vec<DVector<f64>> = self
            .comparable
            .iter()
            .map(|&(w, l)| self.difference(dataset, w, l))
            .collect();
        let (lambda, _) = fit::logistic_fit(&differences, 1e4);
        fit::agreement(&lambda, &differences)
    }
}

/// A stream seed from the run seed and names, so that results do not depend on user order.
fn seed_for(seed: u64, parts: &[&str]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    for p in parts {
        hasher.update(p.as_bytes());
        hasher.update([0]);
    }
    u64::from_le_bytes(hasher.finalize()[..8].try_into().expect("8 bytes"))
}

/// The user's task, or `None` if the user has fewer than two comparable pairs.
pub fn prepare(user: &UserRatings, options: &EvalOptions) -> Option<UserTask> {
    let mut rng = StdRng::seed_from_u64(seed_for(options.seed, &["user", &user.id]));
    let mut ratings = user.ratings.clone();
    // Keep one rating per item (the last), in item order, then sample if there are too many.
    let mut by_item: BTreeMap<usize, f64> = BTreeMap::new();
    for (item, r) in ratings.drain(..) {
        by_item.insert(item, r);
    }
    let mut rated: Vec<(usize, f64)> = by_item.into_iter().collect();
    if rated.len() > options.max_items_per_user {
        rated.shuffle(&mut rng);
        rated.truncate(options.max_items_per_user);
        rated.sort_by_key(|r| r.0);
    }
    let mut comparable = Vec::new();
    for a in 0..rated.len() {
        for b in a + 1..rated.len() {
            match rated[a].1.partial_cmp(&rated[b].1) {
                Some(std::cmp::Ordering::Greater) => comparable.push((a, b)),
                Some(std::cmp::Ordering::Less) => comparable.push((b, a)),
                _ => {}
            }
        }
    }
    if comparable.len() < 2 {
        return None;
    }
    let is_target = |local: usize| {
        options
            .targets
            .as_ref()
            .is_some_and(|t| t.contains(&rated[local].0))
    };
    let targets: Vec<usize> = (0..rated.len()).filter(|&i| is_target(i)).collect();
    let (scored, mut never_asked, askable) = if options.targets.is_some() {
        // Targets: ask only about the other items, score the pairs among the targets.
        let mut among: Vec<(usize, usize)> = comparable
            .iter()
            .copied()
            .filter(|&(w, l)| is_target(w) && is_target(l))
            .collect();
        let askable: Vec<usize> = (0..rated.len()).filter(|&i| !is_target(i)).collect();
        if among.len() < 2 || askable.len() < 2 {
            return None;
        }
        among.shuffle(&mut rng);
        among.truncate(options.max_scored_pairs);
        (among, Vec::new(), Some(askable))
    } else {
        let mut shuffled = comparable.clone();
        shuffled.shuffle(&mut rng);
        let held = ((shuffled.len() as f64 * 0.3).round() as usize).max(1);
        let held_out: Vec<(usize, usize)> = shuffled[..held].to_vec();
        let scored = held_out
            .iter()
            .take(options.max_scored_pairs)
            .copied()
            .collect();
        (scored, held_out, None)
    };
    if options.equal_pairs == EqualPairs::Exclude {
        for a in 0..rated.len() {
            for b in a + 1..rated.len() {
                if rated[a].1 == rated[b].1 {
                    never_asked.push((a, b));
                }
            }
        }
    }
    Some(UserTask {
        user: user.id.clone(),
        items: rated.iter().map(|r| r.0).collect(),
        ratings: rated.iter().map(|r| r.1).collect(),
        never_asked,
        scored,
        comparable,
        askable,
        targets,
    })
}

/// The users of the evaluated split, prepared.
pub fn tasks(dataset: &Dataset, options: &EvalOptions) -> Vec<UserTask> {
    dataset
        .users
        .iter()
        .filter(|u| match (&options.split, &u.split) {
            (Some(wanted), Some(split)) => wanted == split,
            _ => true,
        })
        .filter_map(|u| prepare(u, options))
        .collect()
}

/// The prior: N(0, I), or from the train split. For `train`, each train user's λ̂ is fitted with a
/// logistic regression (C = 1) on all of their comparable pairs; μ₀ is the mean of the λ̂ and
/// Σ₀ = cov(λ̂) + mean of the fits' Laplace covariances (one EM step from the fitted users: the
/// spread of point estimates alone would understate the population's spread less, and the
/// per-user uncertainty has to be added back).
pub fn train_prior(dataset: &Dataset, options: &EvalOptions) -> anyhow::Result<Posterior> {
    let j = dataset.dim();
    match &options.prior {
        // A refit starts from N(0, I) on the server.
        PriorKind::Isotropic | PriorKind::Refit => return Ok(Posterior::isotropic(j, 1.0)?),
        PriorKind::File(path) => {
            let prior = learn::PriorFile::load(path)?;
            anyhow::ensure!(
                prior.dim() == j,
                "{}: the prior has {} dimensions, the items {j}",
                path.display(),
                prior.dim()
            );
            return Ok(prior);
        }
        PriorKind::Train => {}
    }
    let train = EvalOptions {
        split: Some("train".into()),
        ..options.clone()
    };
    let fits: Vec<(DVector<f64>, DMatrix<f64>)> = dataset
        .users
        .iter()
        .filter(|u| u.split.as_deref() == Some("train"))
        .filter_map(|u| prepare(u, &train))
        .map(|task| {
            let differences: Vec<DVector<f64>> = task
                .comparable
                .iter()
                .map(|&(w, l)| task.difference(dataset, w, l))
                .collect();
            fit::logistic_fit(&differences, 1.0)
        })
        .collect();
    anyhow::ensure!(
        fits.len() >= 2,
        "--prior train needs at least two users in the 'train' split"
    );
    let n = fits.len() as f64;
    let mean = fits.iter().fold(DVector::zeros(j), |acc, (w, _)| acc + w) / n;
    let mut cov = DMatrix::zeros(j, j);
    for (w, s) in &fits {
        let d = w - &mean;
        cov += &d * d.transpose() / (n - 1.0) + s / n;
    }
    Ok(Posterior::new(mean, (&cov + cov.transpose()) * 0.5)?)
}

/// Runs one user through the engine in-process ([`Elicitation`], as a session of the service
/// would); accuracy after each k = 1..=questions (a session that stops early keeps its last
/// accuracy). With `--choices K` the questions are picks or rankings of K ([`UserTask::ranking`]); with EPIG they
/// aim at pairs among the user's target items.
pub fn run_in_process(
    dataset: &Dataset,
    task: &UserTask,
    prior: &Posterior,
    strategy: Strategy,
    options: &EvalOptions,
) -> anyhow::Result<Vec<f64>> {
    let features = DMatrix::from_fn(dataset.dim(), task.items.len(), |r, c| {
        dataset.features[(r, task.items[c])]
    });
    let bank = Bank::ungrouped(features)?;
    let epig = strategy == Strategy::Epig;
    anyhow::ensure!(
        !epig || task.targets.len() >= 2,
        "--strategy epig needs target items (--targets)"
    );
    // Each kind of run keeps the random stream it was measured with; EPIG's scores are bits
    // about the targets, not λ, and the k-way figures ran the whole budget: neither stops early.
    let sets = options.choices > 2 && !epig;
    let (stream, min_information_bits) = if epig {
        (vec!["epig", &task.user], f64::NEG_INFINITY)
    } else if sets {
        (
            vec!["sets", &task.user, strategy.as_str()],
            f64::NEG_INFINITY,
        )
    } else {
        (
            vec!["questions", &task.user, strategy.as_str()],
            MIN_INFORMATION_BITS,
        )
    };
    let config = ElicitationConfig {
        noise: options.noise,
        method: options.method,
        strategy,
        stopping: StoppingRule {
            max_questions: options.questions,
            min_information_bits,
            target_sd: None,
        },
        choices: if sets { options.choices } else { 2 },
        ..Default::default()
    };
    let mut run = Elicitation::new(&bank, prior.clone(), config, task.askable.as_deref())?;
    for &(a, b) in &task.never_asked {
        run.exclude(Pair { a, b });
    }
    let mut rng = StdRng::seed_from_u64(seed_for(options.seed, &stream));
    if epig {
        run = run.aim_at(epig::Targets::among(&bank, &task.targets, &mut rng));
    }
    let mut curve = Vec::with_capacity(options.questions);
    for _ in 0..options.questions {
        match run.next(&mut rng) {
            Next::Ask(q) => {
                run.answer(q.pair, task.answer(q.pair.a, q.pair.b, &options.noise))?;
            }
            Next::AskSet(set) => {
                let ranking = task.ranking(&set.items, options.answer.ranked(set.items.len()));
                run.respond(Response::Pick {
                    shown: set.items,
                    ranking,
                })?;
            }
            Next::Stop(_) => {}
        }
        curve.push(task.accuracy(dataset, run.posterior().mean()));
    }
    Ok(curve)
}

/// Mean accuracy and its standard error after k questions.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CurvePoint {
    pub k: usize,
    pub accuracy: f64,
    pub se: f64,
}

/// A mean with its standard error.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Estimate {
    pub accuracy: f64,
    pub se: f64,
}

fn estimate(values: &[f64]) -> Estimate {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Estimate {
        accuracy: mean,
        se: (var / n).sqrt(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub users: usize,
    pub questions: usize,
    pub method: UpdateMethod,
    pub prior: PriorKind,
    pub equal_pairs: EqualPairs,
    /// Per strategy, accuracy after k = 1..=questions.
    pub curves: BTreeMap<String, Vec<CurvePoint>>,
    /// Per-user logistic fit on all of the user's comparable pairs, in-sample (mean over users).
    pub ceiling: Estimate,
    /// The prior mean's accuracy (k = 0).
    pub baseline: Estimate,
}

/// Per-user accuracy curves of one strategy, by whichever runner.
pub type Curves = Vec<Vec<f64>>;

/// Runs every task for every strategy with `runner`, in parallel over the machine's cores, and
/// summarises them.
pub fn evaluate(
    dataset: &Dataset,
    tasks: &[UserTask],
    prior: &Posterior,
    options: &EvalOptions,
    runner: impl Fn(&UserTask, Strategy) -> anyhow::Result<Vec<f64>> + Sync,
) -> anyhow::Result<EvalReport> {
    anyhow::ensure!(
        !tasks.is_empty(),
        "no user of the chosen split has two comparable ratings"
    );
    let progress = indicatif::ProgressBar::new((tasks.len() * options.strategies.len()) as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} users × strategies, {eta} left",
        )
        .expect("a valid template"),
    );
    progress.set_prefix("eval");
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(tasks.len());
    let mut curves: HashMap<Strategy, Curves> = HashMap::new();
    for &strategy in &options.strategies {
        let per_user: Vec<anyhow::Result<(usize, Vec<f64>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (runner, progress) = (&runner, &progress);
                    scope.spawn(move || {
                        (t..tasks.len())
                            .step_by(threads)
                            .map(|i| {
                                let curve = runner(&tasks[i], strategy)?;
                                progress.inc(1);
                                Ok((i, curve))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("an evaluation thread panicked"))
                .collect()
        });
        let mut ordered = per_user.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        ordered.sort_by_key(|(i, _)| *i);
        curves.insert(strategy, ordered.into_iter().map(|(_, c)| c).collect());
    }
    progress.finish_and_clear();

    let ceiling: Vec<f64> = tasks.iter().map(|t| t.ceiling(dataset)).collect();
    let baseline: Vec<f64> = tasks
        .iter()
        .map(|t| t.accuracy(dataset, prior.mean()))
        .collect();
    Ok(EvalReport {
        users: tasks.len(),
        questions: options.questions,
        method: options.method,
        prior: options.prior.clone(),
        equal_pairs: options.equal_pairs,
        curves: options
            .strategies
            .iter()
            .map(|s| {
                let per_user = &curves[s];
                let points = (0..options.questions)
                    .map(|k| {
                        let at_k: Vec<f64> = per_user.iter().map(|c| c[k]).collect();
                        let e = estimate(&at_k);
                        CurvePoint {
                            k: k + 1,
                            accuracy: e.accuracy,
                            se: e.se,
                        }
                    })
                    .collect();
                (s.as_str().to_string(), points)
            })
            .collect(),
        ceiling: estimate(&ceiling),
        baseline: estimate(&baseline),
    })
}

/// The readable table: one block per strategy.
pub fn table(report: &EvalReport) -> String {
    let mut out = format!(
        "eval: {} users, method {}, prior {:?}; baseline (k = 0) {:.3} ± {:.3}; ceiling {:.3} ± {:.3}\n",
        report.users,
        report.method.as_str(),
        report.prior,
        report.baseline.accuracy,
        report.baseline.se,
        report.ceiling.accuracy,
        report.ceiling.se
    );
    for (strategy, points) in &report.curves {
        out.push_str(&format!(
            "\n{strategy}\n{:>4}  {:>8}  {:>6}\n",
            "k", "accuracy", "se"
        ));
        for p in points {
            out.push_str(&format!("{:>4}  {:>8.4}  {:>6.4}\n", p.k, p.accuracy, p.se));
        }
    }
    out
}
