//! Simulated users with known coefficients, run through the engine in-process
//! (`elicit simulate`): how well does elicitation recover a user, question by question?
//!
//! Task (the one published peers were measured on): items φ ~ N(0, I_J), candidate questions are
//! all pairs of the bank, a user's λ has a uniformly random direction and norm `scale`, answers
//! follow σ(λᵀ(φa − φb)) (with probability `lapse` a coin flip instead), the prior is
//! N(0, (scale²/J)·I). After each question k the posterior mean is compared with λ.
//!
//! The engine assumes the lapse rate `model_lapse` (by default the simulated one; 0 for an engine
//! unaware of lapses; `auto` to estimate it per user), and `responders: random` replaces the users
//! by coin flips, to measure how often the reliability rule flags them.

use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::model::Pair;
use crate::model::elicitation::{CheckRule, DEFAULT_STRENGTH_THRESHOLD, Next, ProbeRule, Response};
use crate::model::epig;
use crate::model::history::Diagnostics;
use crate::model::kway::{AnswerFormat, MAX_CHOICES};
use crate::model::numeric::sigmoid;
use crate::model::reliability::{LapsePrior, ReliabilityRule};
use crate::model::{
    Bank, Choice, Elicitation, ElicitationConfig, NoiseModel, Outcome, Posterior, StoppingRule,
    Strategy, Strength, UpdateMethod,
};

/// A probe repeats an answer at least this many questions old (GUIDE §6).
const PROBE_MIN_GAP: usize = 5;

/// Held-out evaluation: this many fresh items, this many random pairs among them.
const HELD_OUT_ITEMS: usize = 200;
const HELD_OUT_PAIRS: usize = 2000;
/// Target pairs among the held-out items for `--strategy epig` (drawn apart from the pairs the
/// agreement is measured on: the targets say which items matter, not which answers).
pub const TARGET_PAIRS: usize = 100;

/// The flags of one `elicit simulate` run.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationTask {
    pub dims: usize,
    pub bank: usize,
    pub users: usize,
    pub questions: usize,
    pub scale: f64,
    pub seed: u64,
    pub strategy: Strategy,
    pub method: UpdateMethod,
    /// The simulated users' rate of random answers.
    pub lapse: f64,
    /// The lapse rate the engine assumes.
    pub model_lapse: ModelLapse,
    /// Who answers.
    pub responders: Responders,
    /// Every this many questions, re-ask an earlier one (sides swapped) as a consistency probe;
    /// 0 for none.
    pub probe_every: usize,
    /// Every this many questions an attention check (0: none).
    pub check_every: usize,
    /// Items shown by each question: 2 for pairs, up to [`MAX_CHOICES`] to pick one of k.
    pub choices: usize,
    /// What a question of three or more items asks for: one pick, a ranking, or the top m.
    pub answer: AnswerFormat,
    /// Graded answers ("slightly"/"clearly") with this strength threshold θ, for the simulated
    /// users and the engine alike; `None` for plain pairwise answers.
    pub graded: Option<f64>,
}

/// The lapse rate the engine assumes (`--model-lapse`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelLapse {
    /// This fixed rate (0: unaware of lapses).
    Fixed(f64),
    /// Estimated per user from their answers (Beta(1, 9) prior).
    Auto,
}

impl std::str::FromStr for ModelLapse {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        match s.parse::<f64>() {
            Ok(rate) if (0.0..1.0).contains(&rate) => Ok(Self::Fixed(rate)),
            _ => Err(format!("'{s}': expected a rate in [0, 1) or 'auto'")),
        }
    }
}

/// Who answers the simulated questions (`--responders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Responders {
    /// Users with a true λ, answering by the logistic model (with the task's lapse rate).
    Genuine,
    /// Users who answer every question by a coin flip.
    Random,
}

/// Averages over users after k questions.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CurvePoint {
    pub k: usize,
    /// Fraction of held-out pairs on which sign(μᵀd) = sign(λᵀd).
    pub agreement: f64,
    /// Standard error of the mean agreement over users (0 for one user's own point).
    pub agreement_se: f64,
    /// cos(μ, λ).
    pub cosine: f64,
    /// ½log₂det(Σ₀Σ⁻¹).
    pub bits: f64,
    /// Fraction of users whose session the reliability rule flags as unreliable.
    pub flagged_unreliable: f64,
    /// Mean sequential log₂ Bayes factor against random answering, Σₜ log₂(Kₜ·Zₜ) over the
    /// answers as they came (GUIDE §6).
    pub log2_bayes_factor: f64,
    /// Fraction of users the same rule would flag on the sequential factor instead of the
    /// leave-one-out one (the exact marginal-likelihood ratio, valid under adaptive questions).
    pub flagged_sequential: f64,
    /// Mean estimated lapse rate.
    pub lapse_rate: f64,
    /// The information floor at the reached agreement: how many answers a perfect answerer would
    /// need to pin λ's direction that closely, B_J(θ)/log₂K with θ = π(1 − agreement) and K the
    /// answers a question allows (k, or 4 for graded pairs)
    /// ([`information_floor_bits`]); `None` at chance agreement.
    pub floor_questions: Option<f64>,
    /// Questions used per question of the floor, k / floor (≥ 1; 1 is a perfect answerer).
    pub floor_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimulationReport {
    pub task: SimulationTask,
    pub curve: Vec<CurvePoint>,
}

impl SimulationTask {
    /// How many answers a question allows: k for a set, four for a graded pair.
    fn outcomes(&self) -> usize {
        if self.graded.is_some() {
            4
        } else {
            self.choices
        }
    }
}

/// Checks the task's numbers before anything runs.
pub fn validate(task: &SimulationTask) -> Result<(), String> {
    if task.dims == 0 || task.dims > crate::model::MAX_DIMENSIONS {
        return Err(format!(
            "--dims must be in 1..={}",
            crate::model::MAX_DIMENSIONS
        ));
    }
    if task.bank < 2 {
        return Err("--bank needs at least 2 items".into());
    }
    if task.users == 0 {
        return Err("--users must be at least 1".into());
    }
    if !(task.scale.is_finite() && task.scale > 0.0) {
        return Err("--scale must be positive".into());
    }
    if !(0.0..1.0).contains(&task.lapse) {
        return Err("--lapse must be in [0, 1)".into());
    }
    if task.probe_every == 1 {
        return Err("--probe-every must be 0 (no probes) or at least 2".into());
    }
    if task.check_every == 1 {
        return Err("--check-every must be 0 (no checks) or at least 2".into());
    }
    if !(2..=MAX_CHOICES).contains(&task.choices) || task.choices > task.bank {
        return Err(format!(
            "--choices must be in 2..={MAX_CHOICES} and at most --bank"
        ));
    }
    task.answer.check(task.choices).map_err(|e| e.to_string())?;
    if task.answer != AnswerFormat::Pick && task.choices < 3 {
        return Err(
            "--rank orders questions of three or more items: it needs --choices 3 to 6".into(),
        );
    }
    if task.choices > 2
        && (task.probe_every > 0
            || task.check_every > 0
            || task.strategy == Strategy::Epig
            || task.graded.is_some())
    {
        return Err(
            "--probe-every, --check-every, --strategy epig and --graded work with pairs (--choices 2) only"
                .into(),
        );
    }
    if let Some(threshold) = task.graded
        && !(threshold.is_finite() && threshold > 0.0)
    {
        return Err("--graded needs a positive strength threshold".into());
    }
    Ok(())
}

/// Runs every simulated user (in parallel over the machine's cores) and averages their curves.
pub fn run(task: &SimulationTask) -> Result<SimulationReport, String> {
    validate(task)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(task.users);
    let per_user: Vec<Vec<CurvePoint>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..task.users)
                        .step_by(threads)
                        .map(|user| simulate_user(task, user))
                        .collect::<Result<Vec<_>, String>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulation thread panicked"))
            .collect::<Result<Vec<Vec<_>>, String>>()
            .map(|chunks| chunks.into_iter().flatten().collect())
    })?;
    let n = per_user.len() as f64;
    let curve = (0..task.questions)
        .map(|i| {
            let mean =
                |f: fn(&CurvePoint) -> f64| per_user.iter().map(|c| f(&c[i])).sum::<f64>() / n;
            let agreement = mean(|p| p.agreement);
            let spread = per_user
                .iter()
                .map(|c| (c[i].agreement - agreement).powi(2))
                .sum::<f64>()
                / (n - 1.0).max(1.0);
            let agreement_se = (spread / n).sqrt();
            let floor_questions = (agreement > 0.5).then(|| {
                information_floor_bits(task.dims, agreement) / (task.outcomes() as f64).log2()
            });
            CurvePoint {
                k: i + 1,
                agreement,
                agreement_se,
                cosine: mean(|p| p.cosine),
                bits: mean(|p| p.bits),
                flagged_unreliable: mean(|p| p.flagged_unreliable),
                log2_bayes_factor: mean(|p| p.log2_bayes_factor),
                flagged_sequential: mean(|p| p.flagged_sequential),
                lapse_rate: mean(|p| p.lapse_rate),
                floor_questions,
                floor_ratio: floor_questions.map(|f| (i + 1) as f64 / f),
            }
        })
        .collect();
    Ok(SimulationReport {
        task: task.clone(),
        curve,
    })
}

fn gaussian_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| StandardNormal.sample(rng))
}

/// One simulated user's world: the bank, λ and held-out pairs, from a stream that depends only
/// on the seed and the user (so every strategy, method and question type meets the same users).
struct World {
    bank: Bank,
    lambda: DVector<f64>,
    held_out_diffs: Vec<DVector<f64>>,
    truth: Vec<f64>,
    /// Feature differences of the target pairs (for `epig`).
    targets: Vec<DVector<f64>>,
}

impl World {
    fn new(task: &SimulationTask, user: usize) -> Result<Self, String> {
        let j = task.dims;
        let mut world =
            StdRng::seed_from_u64(task.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (user as u64));
        let bank = Bank::ungrouped(gaussian_matrix(&mut world, j, task.bank))
            .map_err(|e| e.to_string())?;
        let direction = DVector::from_fn(j, |_, _| StandardNormal.sample(&mut world));
        let lambda = direction.normalize() * task.scale;
        let held_out = gaussian_matrix(&mut world, j, HELD_OUT_ITEMS);
        let held_out_diffs: Vec<DVector<f64>> = (0..HELD_OUT_PAIRS)
            .map(|_| {
                let a = world.random_range(0..HELD_OUT_ITEMS);
                let b = (a + world.random_range(1..HELD_OUT_ITEMS)) % HELD_OUT_ITEMS;
                held_out.column(a) - held_out.column(b)
            })
            .collect();
        let truth = held_out_diffs.iter().map(|d| lambda.dot(d)).collect();
        // Drawn last, so that everything above is the same whether or not targets are used.
        let targets = (0..TARGET_PAIRS)
            .map(|_| {
                let a = world.random_range(0..HELD_OUT_ITEMS);
                let b = (a + world.random_range(1..HELD_OUT_ITEMS)) % HELD_OUT_ITEMS;
                held_out.column(a) - held_out.column(b)
            })
            .collect();
        Ok(Self {
            bank,
            lambda,
            held_out_diffs,
            truth,
            targets,
        })
    }

    /// The curve point of a posterior mean after k questions, with the session's diagnostics.
    fn point(&self, k: usize, mu: &DVector<f64>, diagnostics: &Diagnostics) -> CurvePoint {
        let agreement = self
            .held_out_diffs
            .iter()
            .zip(&self.truth)
            .map(|(d, t)| {
                let predicted = mu.dot(d);
                if predicted == 0.0 {
                    0.5
                } else if predicted.signum() == t.signum() {
                    1.0
                } else {
                    0.0
                }
            })
            .sum::<f64>()
            / HELD_OUT_PAIRS as f64;
        let norm = mu.norm() * self.lambda.norm();
        let (reliability, rule) = (&diagnostics.reliability, ReliabilityRule::default());
        CurvePoint {
            k,
            agreement,
            agreement_se: 0.0,
            cosine: if norm > 0.0 {
                mu.dot(&self.lambda) / norm
            } else {
                0.0
            },
            bits: diagnostics.bits,
            flagged_unreliable: f64::from(u8::from(reliability.unreliable)),
            log2_bayes_factor: diagnostics.log2_bayes_factor,
            flagged_sequential: f64::from(u8::from(
                reliability.answers >= rule.min_answers
                    && diagnostics.log2_bayes_factor < rule.min_log2_bayes_factor,
            )),
            lapse_rate: reliability.lapse_rate,
            floor_questions: None,
            floor_ratio: None,
        }
    }

    /// How strongly the simulated user states a preference for `outcome`'s side of `pair`, by
    /// the ordered logit given the side: P(clearly | side) = P(side, clearly)/P(side) under the
    /// lapse mixture (a random responder grades at random).
    fn strength(
        &self,
        task: &SimulationTask,
        pair: Pair,
        outcome: Outcome,
        threshold: f64,
        rng: &mut StdRng,
    ) -> Strength {
        let clearly = if task.responders == Responders::Random {
            0.5
        } else {
            let f = self
                .lambda
                .dot(&(self.bank.features(pair.a) - self.bank.features(pair.b)));
            let f = if outcome == Outcome::A { f } else { -f };
            let side = task.lapse / 2.0 + (1.0 - task.lapse) * sigmoid(f);
            (task.lapse / 4.0 + (1.0 - task.lapse) * sigmoid(f - threshold)) / side
        };
        if rng.random_bool(clearly.clamp(0.0, 1.0)) {
            Strength::Clearly
        } else {
            Strength::Slightly
        }
    }

    /// The simulated answer to a question of three or more `items` in the task's format: its
    /// positions best first, each pick drawn by [`World::answer`] from the items not yet placed
    /// (Plackett–Luce, with a lapse drawn for each pick, as the engine's likelihood assumes).
    fn ranking(&self, task: &SimulationTask, items: &[usize], rng: &mut StdRng) -> Vec<usize> {
        let mut left: Vec<usize> = (0..items.len()).collect();
        let mut ranking = Vec::new();
        while ranking.len() < task.answer.ranked(items.len()) {
            if let [last] = left[..] {
                ranking.push(last);
                break;
            }
            let shown: Vec<usize> = left.iter().map(|&p| items[p]).collect();
            ranking.push(left.remove(self.answer(task, &shown, rng)));
        }
        ranking
    }

    /// The simulated answer to a question showing `items`: the index of the chosen one, by the
    /// multinomial logit of λ (β = 1), or uniformly at random for a lapse or a random responder.
    fn answer(&self, task: &SimulationTask, items: &[usize], rng: &mut StdRng) -> usize {
        let random = task.responders == Responders::Random || rng.random_bool(task.lapse);
        if let &[a, b] = items {
            // Pairs draw from the stream as they always have, so pairwise figures stay put.
            let p_a = if random {
                0.5
            } else {
                sigmoid(
                    self.lambda
                        .dot(&(self.bank.features(a) - self.bank.features(b))),
                )
            };
            return usize::from(!rng.random_bool(p_a));
        }
        if random {
            return rng.random_range(0..items.len());
        }
        let utilities: Vec<f64> = items
            .iter()
            .map(|&i| self.lambda.dot(&self.bank.features(i)))
            .collect();
        let top = utilities.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = utilities.iter().map(|u| (u - top).exp()).collect();
        let mut r = rng.random::<f64>() * weights.iter().sum::<f64>();
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        items.len() - 1
    }
}

/// One user through the engine ([`Elicitation`]): pairs or sets of `--choices` items, chosen by
/// the strategy (EPIG aimed at the world's target pairs), answered by the simulated user (with a
/// strength when the task grades answers). Answers use their own random stream.
fn simulate_user(task: &SimulationTask, user: usize) -> Result<Vec<CurvePoint>, String> {
    let world = World::new(task, user)?;
    let j = task.dims;
    let prior =
        Posterior::isotropic(j, task.scale * task.scale / j as f64).map_err(|e| e.to_string())?;
    let (assumed_lapse, adaptive_lapse) = match task.model_lapse {
        ModelLapse::Fixed(rate) => (rate, None),
        ModelLapse::Auto => (0.0, Some(LapsePrior::default())),
    };
    let noise = NoiseModel {
        beta: 1.0,
        lapse: assumed_lapse,
        tie_threshold: 0.0,
    };
    let mut answers = StdRng::seed_from_u64(task.seed ^ 0xA5A5_5A5A ^ ((user as u64) << 20));
    let bank = &world.bank;
    let config = ElicitationConfig {
        noise,
        method: task.method,
        strategy: task.strategy,
        stopping: StoppingRule {
            max_questions: task.questions,
            min_information_bits: f64::NEG_INFINITY,
            target_sd: None,
        },
        adaptive_lapse,
        probes: (task.probe_every > 0).then_some(ProbeRule {
            every: task.probe_every,
            min_gap: PROBE_MIN_GAP,
        }),
        checks: (task.check_every > 0).then_some(CheckRule {
            every: task.check_every,
        }),
        choices: task.choices,
        strength_threshold: task.graded.unwrap_or(DEFAULT_STRENGTH_THRESHOLD),
        ..Default::default()
    };
    let mut run = Elicitation::new(bank, prior, config, None).map_err(|e| e.to_string())?;
    if task.strategy == Strategy::Epig {
        run = run.aim_at(epig::Targets::new(world.targets.clone()));
    }
    let mut curve = Vec::with_capacity(task.questions);
    for k in 1..=task.questions {
        let response = match run.next(&mut answers) {
            Next::Ask(question) => {
                let pair = question.pair;
                let (choice, outcome) = match world.answer(task, &[pair.a, pair.b], &mut answers) {
                    0 => (Choice::A, Outcome::A),
                    _ => (Choice::B, Outcome::B),
                };
                let strength = task
                    .graded
                    .map(|threshold| world.strength(task, pair, outcome, threshold, &mut answers));
                Some(Response::Pair {
                    pair,
                    choice,
                    strength,
                })
            }
            Next::AskSet(set) => {
                let ranking = world.ranking(task, &set.items, &mut answers);
                Some(Response::Pick {
                    shown: set.items,
                    ranking,
                })
            }
            Next::Stop(_) => None,
        };
        if let Some(response) = response {
            run.respond(response).map_err(|e| e.to_string())?;
        }
        curve.push(world.point(k, run.posterior().mean(), &run.diagnostics()));
    }
    Ok(curve)
}

/// The information floor B_J(θ) = log₂(1/cap_J(θ)) in bits (GUIDE §8): a direction known to
/// within angle θ occupies the fraction cap_J(θ) = ∫₀^θ sin^{J−2}t dt / ∫₀^π sin^{J−2}t dt of the
/// unit sphere in R^J (= ½I_{sin²θ}((J − 1)/2, ½) for θ ≤ π/2), so a perfect answerer, one bit
/// an answer, needs at least B_J(θ) answers to get there. θ = π(1 − agreement): the held-out
/// disagreement of two directions at angle θ is θ/π for isotropic pair differences.
pub fn information_floor_bits(dims: usize, agreement: f64) -> f64 {
    let theta = std::f64::consts::PI * (1.0 - agreement).clamp(0.0, 1.0);
    if dims < 2 {
        // Two directions: one bit decides, once the sign is right.
        return if agreement > 0.5 { 1.0 } else { 0.0 };
    }
    let power = (dims - 2) as i32;
    // Simpson's rule on 2,000 intervals: the integrand is smooth and bounded by 1.
    let integral = |upper: f64| {
        let n = 2000;
        let h = upper / n as f64;
        (0..=n)
            .map(|i| {
                let weight = if i == 0 || i == n {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                weight * (i as f64 * h).sin().powi(power)
            })
            .sum::<f64>()
            * h
            / 3.0
    };
    let cap = integral(theta) / integral(std::f64::consts::PI);
    if cap <= 0.0 {
        f64::INFINITY
    } else {
        -cap.log2()
    }
}
