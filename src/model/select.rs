//! Choosing the next comparison from an item bank.
//!
//! For a pair (a, b), x = β(φa − φb) and the belief about f = λᵀx is N(m, s²); a question's
//! [`Pool`] of candidate items holds what makes that O(J) a pair (mᵢ = φᵢᵀμ, Σφᵢ, qᵢ = φᵢᵀΣφᵢ).
//!
//! `bald` maximises the expected information gain I(y; λ) = I(y; f) = H[E p(y|f)] − E H[p(y|f)]:
//! a closed-form screen over the pool's pairs ([`information_table_above`]: the tabulated screen,
//! skipped where a bound shows it cannot enter the shortlist), exact-bound pruning, then a 16-node
//! quadrature re-score (lapse- and tie-aware) of the best [`SelectionOptions::rescore`].

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::bank::Bank;
use super::candidates::CandidateSpace;
use super::information::{
    CLOSED_FORM_MAX_ERROR_BITS, SCREEN_TABLE_MAX_ERROR_BITS, dopt_score, information_quadrature,
    information_quadrature_bound, information_table_above, screen_variance_needed,
};
use super::likelihood::NoiseModel;
use super::numeric::{binary_entropy_bits, sigmoid, total_order_key};
use super::pair::Pair;
use super::pool::{Pool, PoolPair, Position, SelectionOptions};
use super::top::Largest;

/// How the next question is chosen.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Expected information gain (BALD).
    #[default]
    Bald,
    /// D-optimal: the expected log-determinant reduction ½log₂(1 + b·s²) of a Fisher step.
    Dopt,
    /// A uniformly random pair not asked yet (the baseline).
    Random,
    /// Expected predictive information gain about target pairs ([`super::epig`]): pairs aimed at
    /// how the user will rank some target items. Without targets it asks like BALD (which also
    /// picks the first pair of a set).
    Epig,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Bald, Strategy::Dopt, Strategy::Random];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Bald => "bald",
            Strategy::Dopt => "dopt",
            Strategy::Random => "random",
            Strategy::Epig => "epig",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bald" => Ok(Self::Bald),
            "dopt" => Ok(Self::Dopt),
            "random" => Ok(Self::Random),
            "epig" => Ok(Self::Epig),
            other => Err(format!(
                "unknown strategy '{other}' (bald, dopt, random, epig)"
            )),
        }
    }
}

/// A chosen question and its score under the strategy (bits for bald and dopt, 0 for random).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selected {
    pub pair: Pair,
    pub score_bits: f64,
}

/// What a candidate needs to possibly enter the shortlist, a function of the shortlist's floor.
#[derive(Debug, Clone, Copy)]
struct Cutoff {
    /// The shortlist's floor the cutoff was computed for.
    floor: f64,
    /// sdₐ + sd_b below this: s² ≤ β²(sdₐ + sd_b)² is below `min_s2`.
    min_pair_sd: f64,
    /// The pair's own s² = β²(qₐ + q_b − 2φₐᵀΣφ_b) below this: its screen cannot exceed the
    /// shortlist's floor ([`screen_variance_needed`]). Its items' sds only bound s², so a pair of
    /// correlated items is rejected here, before its screen is read.
    min_s2: f64,
    /// x² = m²/(1 + πs²/8) above this: h(σ(x)), an upper bound of the screen, is below it.
    max_x2: f64,
}

impl Cutoff {
    const NONE: Cutoff = Cutoff {
        floor: f64::NEG_INFINITY,
        min_pair_sd: 0.0,
        min_s2: 0.0,
        max_x2: f64::INFINITY,
    };
}

/// x² such that h(σ(x)) = `bits`, rounded so that the cutoff is never too tight: a table over
/// bits in steps of 1/256, read at the step below.
fn largest_useful_x2(bits: f64) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=256)
            .map(|k| {
                let target = k as f64 / 256.0;
                // h(σ(x)) decreases in x ≥ 0: bisection.
                let (mut lo, mut hi) = (0.0f64, 60.0f64);
                for _ in 0..100 {
                    let mid = 0.5 * (lo + hi);
                    if binary_entropy_bits(sigmoid(mid)) > target {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                hi * hi
            })
            .collect()
    });
    if bits.is_nan() || bits <= 0.0 {
        return f64::INFINITY;
    }
    table[((bits * 256.0).floor() as usize).min(256)]
}

/// The shortlist: the best candidates by screening score, ties broken by their bank pair
/// (unordered), as every pool orders them.
type Shortlist = Largest<(usize, usize), PoolPair>;

/// The unasked pairs of a question's pool (every unasked pair of a space small enough to be its
/// own pool).
pub fn unasked_candidates(from: &Candidates) -> Vec<PoolPair> {
    from.pool.unasked_pairs(from.space)
}

/// The unasked pair whose answer the posterior predicts most surely, the largest
/// |m|/√(1 + πs²/8) (the probit approximation of the predictive's distance from a coin flip),
/// shown in a random order; `None` when every pair of the pool has been asked.
pub fn most_predictable<R: Rng + ?Sized>(from: &Candidates, rng: &mut R) -> Option<Pair> {
    let sureness = |pair: PoolPair| {
        let (m, s2) = from.pool.pair_predictive(pair, from.noise.beta);
        m.abs() / (1.0 + std::f64::consts::PI * s2 / 8.0).sqrt()
    };
    let (_, best) = unasked_candidates(from)
        .into_iter()
        .map(|p| (sureness(p), p))
        .max_by(|x, y| x.0.total_cmp(&y.0))?;
    Some(from.pool.pair(best).in_random_order(rng))
}

/// What a question is chosen from, and how: the bank, the question's pool of candidate items
/// with their statistics under the current posterior, the pairs still allowed, the answer noise
/// and the selection's settings. Every selection rule ([`select`], [`most_predictable`],
/// `epig::select_for_targets`, `kway::select_set`) takes one.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    pub bank: &'a Bank,
    pub pool: &'a Pool,
    pub space: &'a CandidateSpace,
    pub noise: &'a NoiseModel,
    pub options: &'a SelectionOptions,
}

impl<'a> Candidates<'a> {
    /// The candidates of `bank` in `pool` (drawn under the current posterior) still allowed by
    /// `space`, chosen under answer noise `noise` with `options`.
    pub fn new(
        bank: &'a Bank,
        pool: &'a Pool,
        space: &'a CandidateSpace,
        noise: &'a NoiseModel,
        options: &'a SelectionOptions,
    ) -> Self {
        Self {
            bank,
            pool,
            space,
            noise,
            options,
        }
    }
}

/// Picks the next question, or `None` when every allowed pair has been asked.
pub fn select<R: Rng + ?Sized>(
    from: &Candidates,
    strategy: Strategy,
    rng: &mut R,
) -> Option<Selected> {
    if from.space.remaining() == 0 {
        return None;
    }
    let selected = match strategy {
        Strategy::Random => from.space.random_unasked(rng).map(|pair| Selected {
            pair,
            score_bits: 0.0,
        }),
        Strategy::Bald | Strategy::Dopt | Strategy::Epig => best_pair(from, strategy, rng),
    }?;
    Some(Selected {
        pair: selected.pair.in_random_order(rng),
        ..selected
    })
}

/// The best unasked pair of the pool by the strategy: a screen of every within-group pair (the
/// closed form for BALD, pruned by exact bounds; the D-optimal score), then BALD's shortlist
/// re-scored by quadrature. Falls back to a random unasked pair of the space when the pool has
/// none left.
fn best_pair<R: Rng + ?Sized>(
    from: &Candidates,
    strategy: Strategy,
    rng: &mut R,
) -> Option<Selected> {
    let &Candidates {
        pool,
        space,
        noise,
        options,
        ..
    } = from;
    let beta = noise.beta;
    let bald = strategy != Strategy::Dopt;
    // The bounds prune pairs whose screen cannot reach the current shortlist: bounds of the
    // screen itself, so they never drop a pair that would enter, with ties as without (the
    // shortlist is by the binary screen either way). D-optimal scores are not bits.
    let prune = options.prune && bald;
    let mut top = Shortlist::new(if bald { options.rescore } else { 1 });
    // Posterior sd of each item's reward; a pair's sd is at most β(sdₐ + sd_b).
    let sd = pool.sd();
    let mut cutoff = Cutoff::NONE;
    // Screens a candidate and offers it to the shortlist; the asked-set lookup happens only for
    // candidates good enough to enter.
    let consider = |top: &mut Shortlist, cutoff: &Cutoff, pair: PoolPair| {
        // s² ≤ β²(sdₐ + sd_b)²: a pair whose mean alone puts it past the cutoff is rejected
        // before its O(J) variance is computed.
        let m = beta * (pool.mean(pair.a) - pool.mean(pair.b));
        let widest = beta * (sd[pair.a as usize] + sd[pair.b as usize]);
        if bald && m * m >= cutoff.max_x2 * (1.0 + std::f64::consts::PI * widest * widest / 8.0) {
            return;
        }
        let (m, s2) = pool.pair_predictive(pair, beta);
        let score = if bald {
            // The screen never exceeds h(σ(x)), x² = m²/(1 + πs²/8): a few multiplications
            // reject every pair whose outcome is too predictable to enter the shortlist.
            if m * m >= cutoff.max_x2 * (1.0 + std::f64::consts::PI * s2 / 8.0)
                || s2 < cutoff.min_s2
            {
                return;
            }
            // Most pairs of a full shortlist's scan end here, on a bound read from the cache.
            let floor = if prune {
                cutoff.floor
            } else {
                f64::NEG_INFINITY
            };
            match information_table_above(m, s2, floor) {
                Some(screen) => screen,
                None => return,
            }
        } else {
            dopt_score(noise, m, s2)
        };
        if score > top.floor() {
            let items = pool.pair(pair);
            if !space.was_asked(items) {
                top.offer(score, items.unordered(), pair);
            }
        }
    };
    let cutoff_at = |threshold: f64| {
        let min_s2 = if prune {
            screen_variance_needed(threshold)
        } else {
            0.0
        };
        Cutoff {
            floor: threshold,
            min_pair_sd: min_s2.sqrt() / beta,
            min_s2,
            // The table may read up to its error above the closed form, which h(σ(x)) bounds.
            max_x2: if prune {
                largest_useful_x2(threshold - SCREEN_TABLE_MAX_ERROR_BITS)
            } else {
                f64::INFINITY
            },
        }
    };

    for members in pool.groups() {
        // Visit items by decreasing sd so that the bound decreases along both loops.
        // Ties by position: what a stable sort of the members (in pool order) gave.
        let mut keyed: Vec<(i64, Position)> = members
            .iter()
            .map(|&p| (!total_order_key(sd[p as usize]), p))
            .collect();
        keyed.sort_unstable();
        let order: Vec<Position> = keyed.into_iter().map(|(_, p)| p).collect();
        let sd_of = |p: Position| sd[p as usize];
        // A drawn pool pairs each of its widest items with every other (pairs of two narrower
        // items are seldom the best and would make the scan quadratic in the pool).
        for (i, &a) in order.iter().enumerate().take(pool.anchors()) {
            if i + 1 < order.len() && sd_of(a) + sd_of(order[i + 1]) < cutoff.min_pair_sd {
                break;
            }
            for &b in &order[i + 1..] {
                if sd_of(a) + sd_of(b) < cutoff.min_pair_sd {
                    break;
                }
                consider(&mut top, &cutoff, PoolPair { a, b });
                if top.floor() != cutoff.floor {
                    cutoff = cutoff_at(top.floor());
                }
            }
        }
    }

    let shortlist = top.into_sorted();
    if strategy == Strategy::Dopt {
        return shortlist.first().map(|s| Selected {
            pair: pool.pair(s.value),
            score_bits: s.score,
        });
    }
    // The exact information never exceeds the screen by more than the closed form's and the
    // table's errors (a lapse only lowers it): the shortlist, best screen first, is re-scored
    // until no later candidate can beat the best so far. So is the 16-node value up to s² ≈ 25;
    // beyond, it can overrate a pair by more than that slack (`information_quadrature`), and the
    // stop may pass over a later candidate the rule would have rated higher (never one whose
    // exact information is higher by more than the rule's own error). With ties the screen
    // (binary) bounds nothing, and every candidate is re-scored.
    let slack = if noise.ties_enabled() {
        f64::INFINITY
    } else {
        CLOSED_FORM_MAX_ERROR_BITS + SCREEN_TABLE_MAX_ERROR_BITS
    };
    let mut best: Option<Selected> = None;
    for s in &shortlist {
        if best.is_some_and(|b| s.score + slack < b.score_bits) {
            break;
        }
        let (m, s2) = pool.pair_predictive(s.value, beta);
        if !noise.ties_enabled()
            && let (Some(b), Some(bound)) = (best, information_quadrature_bound(m, s2))
            && bound < b.score_bits
        {
            continue;
        }
        let exact = information_quadrature(noise, m, s2);
        // `>=`: the last of equal scores, as `max_by` over the whole shortlist would choose.
        if best.is_none_or(|b| exact >= b.score_bits) {
            best = Some(Selected {
                pair: pool.pair(s.value),
                score_bits: exact,
            });
        }
    }
    best.or_else(|| {
        space.random_unasked(rng).map(|pair| Selected {
            pair,
            score_bits: 0.0,
        })
    })
}
