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

use crate::model::elicitation::{Next, ProbeRule};
use crate::model::numeric::sigmoid;
use crate::model::reliability::LapsePrior;
use crate::model::{
    Bank, Choice, Elicitation, ElicitationConfig, NoiseModel, Posterior, StoppingRule, Strategy,
    UpdateMethod,
};

/// A probe repeats an answer at least this many questions old (GUIDE §6).
const PROBE_MIN_GAP: usize = 5;

/// Held-out evaluation: this many fresh items, this many random pairs among them.
const HELD_OUT_ITEMS: usize = 200;
const HELD_OUT_PAIRS: usize = 2000;

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
    /// cos(μ, λ).
    pub cosine: f64,
    /// ½log₂det(Σ₀Σ⁻¹).
    pub bits: f64,
    /// Fraction of users whose session the reliability rule flags as unreliable.
    pub flagged_unreliable: f64,
    /// Mean estimated lapse rate.
    pub lapse_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimulationReport {
    pub task: SimulationTask,
    pub curve: Vec<CurvePoint>,
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
            CurvePoint {
                k: i + 1,
                agreement: mean(|p| p.agreement),
                cosine: mean(|p| p.cosine),
                bits: mean(|p| p.bits),
                flagged_unreliable: mean(|p| p.flagged_unreliable),
                lapse_rate: mean(|p| p.lapse_rate),
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

/// One user: the bank, λ and the held-out pairs come from a stream that depends only on the seed
/// and the user (so every strategy and method meets the same users); answers use a second stream.
fn simulate_user(task: &SimulationTask, user: usize) -> Result<Vec<CurvePoint>, String> {
    let j = task.dims;
    let mut world =
        StdRng::seed_from_u64(task.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (user as u64));
    let bank =
        Bank::ungrouped(gaussian_matrix(&mut world, j, task.bank)).map_err(|e| e.to_string())?;
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
    let truth: Vec<f64> = held_out_diffs.iter().map(|d| lambda.dot(d)).collect();

    let prior =
        Posterior::isotropic(j, task.scale * task.scale / j as f64).map_err(|e| e.to_string())?;
    let (assumed_lapse, adaptive_lapse) = match task.model_lapse {
        ModelLapse::Fixed(rate) => (rate, None),
        ModelLapse::Auto => (0.0, Some(LapsePrior::default())),
    };
    let config = ElicitationConfig {
        noise: NoiseModel {
            beta: 1.0,
            lapse: assumed_lapse,
            tie_threshold: 0.0,
        },
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
        ..Default::default()
    };
    let mut run = Elicitation::new(&bank, prior, config, None).map_err(|e| e.to_string())?;
    let mut answers = StdRng::seed_from_u64(task.seed ^ 0xA5A5_5A5A ^ ((user as u64) << 20));
    let mut curve = Vec::with_capacity(task.questions);
    for k in 1..=task.questions {
        if let Next::Ask(question) = run.next(&mut answers) {
            let x = bank.direction(question.pair, 1.0);
            let p_a = sigmoid(lambda.dot(&x));
            let random = task.responders == Responders::Random || answers.random_bool(task.lapse);
            let choice = if random {
                if answers.random_bool(0.5) {
                    Choice::A
                } else {
                    Choice::B
                }
            } else if answers.random_bool(p_a) {
                Choice::A
            } else {
                Choice::B
            };
            run.answer(question.pair, choice)
                .map_err(|e| e.to_string())?;
        }
        let mu = run.posterior().mean();
        let diagnostics = run.diagnostics();
        let agreement = held_out_diffs
            .iter()
            .zip(&truth)
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
        let norm = mu.norm() * lambda.norm();
        curve.push(CurvePoint {
            k,
            agreement,
            cosine: if norm > 0.0 {
                mu.dot(&lambda) / norm
            } else {
                0.0
            },
            bits: diagnostics.bits,
            flagged_unreliable: f64::from(u8::from(diagnostics.reliability.unreliable)),
            lapse_rate: diagnostics.reliability.lapse_rate,
        });
    }
    Ok(curve)
}
