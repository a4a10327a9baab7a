//! Choosing the next comparison from an item bank.
//!
//! For a pair (a, b), x = β(φa − φb) and the belief about f = λᵀx is N(m, s²) with
//! m = β(mₐ − m_b), s² = β²(qₐ + q_b − 2Gₐ·φ_b), where mᵢ = φᵢᵀμ, G = ΣΦᵀ (column i is Σφᵢ) and
//! qᵢ = φᵢᵀΣφᵢ are per-session bank statistics ([`BankStats`]) kept up to date in O(NJ) per answer.
//! A pair therefore costs O(J) to score.
//!
//! `bald` maximises the expected information gain I(y; λ) = I(y; f) = H[E p(y|f)] − E H[p(y|f)]:
//! a closed-form screen over the candidates ([`information_table`]), exact-bound pruning, then a
//! 16-node quadrature re-score (lapse- and tie-aware) of the best [`SelectionOptions::rescore`].

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use nalgebra::{DMatrix, DVector};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::likelihood::NoiseModel;
use super::numeric::{binary_entropy_bits, entropy_bits, gauss_hermite_16, sigmoid, sigmoid_slope};
use super::posterior::{Posterior, RankOne};

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

/// An item bank: features of N items (column i of a J×N matrix is φᵢ) and each item's group.
/// Questions only pair items of the same group.
#[derive(Debug, Clone)]
pub struct Bank {
    features: DMatrix<f64>,
    groups: Vec<u32>,
}

impl Bank {
    /// A bank from item feature vectors and group indices (all 0 when items are not grouped).
    pub fn new(features: DMatrix<f64>, groups: Vec<u32>) -> Result<Self, ModelError> {
        if groups.len() != features.ncols() {
            return Err(ModelError::invalid(
                "groups",
                "one group per item is needed",
            ));
        }
        if features.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::invalid("features", "must be finite numbers"));
        }
        Ok(Self { features, groups })
    }

    /// A bank of ungrouped items.
    pub fn ungrouped(features: DMatrix<f64>) -> Result<Self, ModelError> {
        let n = features.ncols();
        Self::new(features, vec![0; n])
    }

    pub fn len(&self) -> usize {
        self.features.ncols()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dim(&self) -> usize {
        self.features.nrows()
    }

    /// φᵢ.
    pub fn features(&self, item: usize) -> DVector<f64> {
        self.features.column(item).into_owned()
    }

    pub fn group(&self, item: usize) -> u32 {
        self.groups[item]
    }

    /// The question direction x = β(φa − φb).
    pub fn direction(&self, pair: Pair, beta: f64) -> DVector<f64> {
        (self.features.column(pair.a) - self.features.column(pair.b)) * beta
    }
}

/// A comparison between two bank items (indices into the bank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
}

impl Pair {
    /// The same pair whichever side each item is shown on.
    pub fn unordered(self) -> (usize, usize) {
        (self.a.min(self.b), self.a.max(self.b))
    }
}

/// Per-session bank statistics: mᵢ = φᵢᵀμ, G = ΣΦ (J×N) and qᵢ = φᵢᵀΣφᵢ.
#[derive(Debug, Clone)]
pub struct BankStats {
    m: DVector<f64>,
    g: DMatrix<f64>,
    q: DVector<f64>,
}

impl BankStats {
    /// Computes the statistics from scratch: O(NJ²).
    pub fn new(bank: &Bank, posterior: &Posterior) -> Self {
        let m = bank.features.tr_mul(posterior.mean());
        let g = posterior.cov() * &bank.features;
        let q = DVector::from_iterator(
            bank.len(),
            g.column_iter()
                .zip(bank.features.column_iter())
                .map(|(gi, fi)| gi.dot(&fi)),
        );
        Self { m, g, q }
    }

    /// Follows a rank-one posterior step μ += c₁u, Σ −= c₂uuᵀ in O(NJ):
    /// w = Φᵀu; G −= c₂uwᵀ; q −= c₂w²; m += c₁w.
    pub fn update(&mut self, bank: &Bank, u: &DVector<f64>, step: RankOne) {
        if step == RankOne::NONE {
            return;
        }
        let w = bank.features.tr_mul(u);
        self.g.ger(-step.c2, u, &w, 1.0);
        for (qi, wi) in self.q.iter_mut().zip(w.iter()) {
            *qi -= step.c2 * wi * wi;
        }
        self.m.axpy(step.c1, &w, 1.0);
    }

    /// The belief N(m, s²) about f for the pair, with x = β(φa − φb).
    #[inline]
    pub fn pair_predictive(&self, bank: &Bank, pair: Pair, beta: f64) -> (f64, f64) {
        let j = bank.dim();
        let g = &self.g.as_slice()[pair.a * j..(pair.a + 1) * j];
        let phi = &bank.features.as_slice()[pair.b * j..(pair.b + 1) * j];
        let cross = dot(g, phi);
        let s2 = beta * beta * (self.q[pair.a] + self.q[pair.b] - 2.0 * cross);
        (beta * (self.m[pair.a] - self.m[pair.b]), s2.max(0.0))
    }

    /// The belief N(c, S) about the utility differences zᵢ = βλᵀ(φ_{items[i+1]} − φ_{items[0]})
    /// of a set of items: cᵢ = β(m_{i+1} − m₀), S_{ij} = β²(φ_{i+1} − φ₀)ᵀΣ(φ_{j+1} − φ₀), from the
    /// statistics in O(k²J).
    pub fn set_predictive(
        &self,
        bank: &Bank,
        items: &[usize],
        beta: f64,
    ) -> (DVector<f64>, DMatrix<f64>) {
        let r = items.len().saturating_sub(1);
        let j = bank.dim();
        let reference = items[0];
        let g = |i: usize| &self.g.as_slice()[i * j..(i + 1) * j];
        let phi = |i: usize| &bank.features.as_slice()[i * j..(i + 1) * j];
        // φₐᵀΣφ_b for any two items, from G's column a.
        let cross = |a: usize, b: usize| if a == b { self.q[a] } else { dot(g(a), phi(b)) };
        let center = DVector::from_fn(r, |i, _| beta * (self.m[items[i + 1]] - self.m[reference]));
        let mut cov = DMatrix::zeros(r, r);
        for x in 0..r {
            for y in x..r {
                let (a, b) = (items[x + 1], items[y + 1]);
                let value = beta
                    * beta
                    * (cross(a, b) - cross(a, reference) - cross(b, reference) + self.q[reference]);
                cov[(x, y)] = value;
                cov[(y, x)] = value;
            }
        }
        (center, cov)
    }

    /// The number of bank items these statistics describe.
    pub fn items(&self) -> usize {
        self.m.len()
    }

    /// How many floats the statistics hold: N(J + 2).
    pub fn len_floats(&self) -> usize {
        self.m.len() + self.g.len() + self.q.len()
    }

    /// Largest difference between these statistics and a recomputation (for tests).
    pub fn max_abs_difference(&self, other: &BankStats) -> f64 {
        (&self.m - &other.m)
            .amax()
            .max((&self.g - &other.g).amax())
            .max((&self.q - &other.q).amax())
    }
}

/// Dot product with four accumulators (vectorises; the bank statistics are column-major, so an
/// item's column is contiguous).
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Tuning of the selection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SelectionOptions {
    /// Up to this many candidate pairs every pair is considered; above it, candidates are generated.
    pub exhaustive_limit: usize,
    /// Random pairs drawn when candidates are generated.
    pub sampled_pairs: usize,
    /// Items with the largest qᵢ whose within-group pairs are all candidates.
    pub top_items: usize,
    /// Candidates re-scored by quadrature after the closed-form screen.
    pub rescore: usize,
    /// Skip pairs whose information upper bound cannot reach the shortlist (exact: never
    /// changes the choice; off only to measure what it saves).
    pub prune: bool,
}

impl Default for SelectionOptions {
    fn default() -> Self {
        Self {
            exhaustive_limit: 200_000,
            sampled_pairs: 8_192,
            top_items: 96,
            rescore: 50,
            prune: true,
        }
    }
}

/// A chosen question and its score under the strategy (bits for bald and dopt, 0 for random).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selected {
    pub pair: Pair,
    pub score_bits: f64,
}

/// Logistic-via-probit closed form of the expected information gain in bits (Houlsby et al. 2011
/// with C² = 4 ln 2): I ≈ h(σ(m/√(1 + πs²/8))) − √(C²/(s² + C²))·exp(−m²/(2(s² + C²))).
/// Within 0.09 bits of the exact value for the logistic link.
#[inline]
pub fn information_closed_form(m: f64, s2: f64) -> f64 {
    const C2: f64 = 4.0 * std::f64::consts::LN_2;
    let predictive = sigmoid(m / (1.0 + std::f64::consts::PI * s2 / 8.0).sqrt());
    let expected_conditional = (C2 / (s2 + C2)).sqrt() * (-m * m / (2.0 * (s2 + C2))).exp();
    (binary_entropy_bits(predictive) - expected_conditional).max(0.0)
}

/// [`information_closed_form`] read from a precomputed table (bilinear interpolation in
/// a = s²/(s² + 4) ∈ [0, 1) and b² = m²/(1 + πs²/8) ∈ [0, 64]): one division and four loads
/// instead of three exp/log evaluations, for the screen over tens of thousands of pairs. Within
/// [`SCREEN_TABLE_MAX_ERROR_BITS`] of the closed form (checked in `tests/inference.rs`); the
/// shortlist is re-scored exactly.
#[inline]
pub fn information_table(m: f64, s2: f64) -> f64 {
    let table = screen_table();
    let a = s2 / (s2 + 4.0);
    let b2 = m * m / (1.0 + std::f64::consts::PI * s2 / 8.0);
    if b2 >= SCREEN_B2_MAX || !a.is_finite() {
        return 0.0;
    }
    let fa = a * SCREEN_A_CELLS as f64;
    let fb = b2 * (SCREEN_B_CELLS as f64 / SCREEN_B2_MAX);
    let (ia, ib) = (
        (fa as usize).min(SCREEN_A_CELLS - 1),
        (fb as usize).min(SCREEN_B_CELLS - 1),
    );
    let (ta, tb) = (fa - ia as f64, fb - ib as f64);
    let row = SCREEN_B_CELLS + 1;
    let v = &table[ia * row + ib..];
    let w = &table[(ia + 1) * row + ib..];
    (1.0 - ta) * ((1.0 - tb) * v[0] + tb * v[1]) + ta * ((1.0 - tb) * w[0] + tb * w[1])
}

/// Largest difference between [`information_table`] and [`information_closed_form`], in bits.
pub const SCREEN_TABLE_MAX_ERROR_BITS: f64 = 0.005;
const SCREEN_A_CELLS: usize = 256;
const SCREEN_B_CELLS: usize = 512;
/// Beyond b² = 64 (|m| > 8 probit-scaled sd) the outcome is certain: the screen is below 0.002 bits.
const SCREEN_B2_MAX: f64 = 64.0;

fn screen_table() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut values = Vec::with_capacity((SCREEN_A_CELLS + 1) * (SCREEN_B_CELLS + 1));
        for ia in 0..=SCREEN_A_CELLS {
            // a = 1 is s² = ∞; the last row uses a very large s² instead.
            let a = (ia as f64 / SCREEN_A_CELLS as f64).min(1.0 - 1e-12);
            let s2 = 4.0 * a / (1.0 - a);
            for ib in 0..=SCREEN_B_CELLS {
                let b2 = ib as f64 * SCREEN_B2_MAX / SCREEN_B_CELLS as f64;
                let m = (b2 * (1.0 + std::f64::consts::PI * s2 / 8.0)).sqrt();
                values.push(information_closed_form(m, s2));
            }
        }
        values
    })
}

/// Largest error of [`information_closed_form`] against the exact logistic value, in bits.
pub const CLOSED_FORM_MAX_ERROR_BITS: f64 = 0.09;

/// What a candidate needs to possibly enter the shortlist.
#[derive(Debug, Clone, Copy)]
struct Cutoff {
    /// β(sdₐ + sd_b) below this: the information bound is below the threshold.
    min_pair_sd: f64,
    /// x² = m²/(1 + πs²/8) above this: h(σ(x)), an upper bound of the screen, is below it.
    max_x2: f64,
}

impl Cutoff {
    const NONE: Cutoff = Cutoff {
        min_pair_sd: 0.0,
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

/// The smallest sd of f whose information bound reaches `bits` (the inverse of
/// [`information_upper_bound`]): s² = (π²/3)(2^{2(bits − 0.0206)} − 1).
fn smallest_useful_sd(bits: f64) -> f64 {
    if bits <= 0.0206 {
        return 0.0;
    }
    if bits >= 1.0 {
        return f64::INFINITY;
    }
    (std::f64::consts::PI.powi(2) / 3.0 * ((2.0 * (bits - 0.0206)).exp2() - 1.0)).sqrt()
}

/// An upper bound on the information (bits) of any binary answer whose latent f has variance s²:
/// I ≤ min(1, ½log₂(1 + 3s²/π²) + 0.0206). It also holds with a lapse rate (a noisier channel).
#[inline]
pub fn information_upper_bound(s2: f64) -> f64 {
    (0.5 * (1.0 + 3.0 * s2 / (std::f64::consts::PI.powi(2))).log2() + 0.0206).min(1.0)
}

/// Exact (16-node quadrature) expected information gain in bits for the answer model `noise`:
/// I = H[E p(y|f)] − E H[p(y|f)], f ~ N(m, s²).
pub fn information_quadrature(noise: &NoiseModel, m: f64, s2: f64) -> f64 {
    let mut marginal = [0.0f64; 3];
    let mut conditional_entropy = 0.0;
    let mut p = [0.0f64; 3];
    let binary = !noise.ties_enabled();
    let k = noise.outcomes().len();
    for (f, w) in gauss_hermite_16().points(m, s2) {
        if binary {
            // P(a) = ε/2 + (1 − ε)σ(f), the common case, without building likelihoods.
            p[0] = noise.lapse / 2.0 + (1.0 - noise.lapse) * sigmoid(f);
            p[1] = 1.0 - p[0];
        } else {
            noise.outcome_probabilities(f, &mut p);
        }
        for (acc, pi) in marginal.iter_mut().zip(&p[..k]) {
            *acc += w * pi;
        }
        conditional_entropy += w * entropy_bits(&p[..k]);
    }
    (entropy_bits(&marginal[..k]) - conditional_entropy).max(0.0)
}

/// D-optimal score ½log₂(1 + b·s²) with the expected Fisher weight of the answer at the probit-
/// corrected mean κm, κ = (1 + πs²/8)^{−½}; with a lapse rate b = ((1 − ε)κσ′)² / (p(1 − p)).
pub fn dopt_score(noise: &NoiseModel, m: f64, s2: f64) -> f64 {
    let kappa = (1.0 + std::f64::consts::PI * s2 / 8.0).sqrt().recip();
    let slope = kappa * sigmoid_slope(kappa * m);
    let b = if noise.lapse > 0.0 {
        let p = noise.lapse / 2.0 + (1.0 - noise.lapse) * sigmoid(kappa * m);
        ((1.0 - noise.lapse) * slope).powi(2) / (p * (1.0 - p)).max(1e-300)
    } else {
        slope
    };
    0.5 * (1.0 + b * s2).log2()
}

/// The candidate space of one session: the items it may ask about, by group, and the pairs
/// already asked.
#[derive(Debug, Clone)]
pub struct CandidateSpace {
    groups: Vec<Vec<usize>>,
    /// The index in `groups` of every item that can be asked about.
    group_of: HashMap<usize, usize>,
    asked: HashSet<(usize, usize)>,
    /// How many of the asked pairs are candidates (asked or excluded pairs may lie outside).
    asked_candidates: usize,
    pair_count: usize,
}

impl CandidateSpace {
    /// `allowed`: the items the session may use (`None`: the whole bank).
    pub fn new(bank: &Bank, allowed: Option<&[usize]>) -> Self {
        let mut by_group: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut push = |i: usize| by_group.entry(bank.group(i)).or_default().push(i);
        match allowed {
            Some(items) => items.iter().copied().for_each(&mut push),
            None => (0..bank.len()).for_each(&mut push),
        }
        let mut groups: Vec<Vec<usize>> = by_group.into_values().filter(|g| g.len() >= 2).collect();
        groups.sort();
        let pair_count = groups.iter().map(|g| g.len() * (g.len() - 1) / 2).sum();
        let group_of = groups
            .iter()
            .enumerate()
            .flat_map(|(g, members)| members.iter().map(move |&i| (i, g)))
            .collect();
        Self {
            groups,
            group_of,
            asked: HashSet::new(),
            asked_candidates: 0,
            pair_count,
        }
    }

    /// Records a pair as asked, so it is never proposed again.
    pub fn mark_asked(&mut self, pair: Pair) {
        let newly = self.asked.insert(pair.unordered());
        let candidate = pair.a != pair.b
            && matches!((self.group_of.get(&pair.a), self.group_of.get(&pair.b)), (Some(x), Some(y)) if x == y);
        if newly && candidate {
            self.asked_candidates += 1;
        }
    }

    /// The items that may share a question with `item` (its group, `item` included); empty
    /// when `item` is not a candidate.
    pub fn group_members(&self, item: usize) -> &[usize] {
        self.group_of
            .get(&item)
            .map_or(&[], |&g| self.groups[g].as_slice())
    }

    /// Every candidate pair not asked yet.
    pub fn unasked_pairs(&self) -> impl Iterator<Item = Pair> + '_ {
        all_pairs(&self.groups).filter(|p| !self.was_asked(*p))
    }

    pub fn was_asked(&self, pair: Pair) -> bool {
        self.asked.contains(&pair.unordered())
    }

    /// Candidate pairs not asked yet.
    pub fn remaining(&self) -> usize {
        self.pair_count - self.asked_candidates
    }

    /// Approximate heap size in bytes (hash tables counted at about twice their entries).
    pub fn size_bytes(&self) -> usize {
        let word = std::mem::size_of::<usize>();
        self.groups.iter().map(|g| g.len() * word).sum::<usize>()
            + self.group_of.len() * 4 * word
            + self.asked.len() * 4 * word
    }
}

/// A candidate with its screening score, ordered so that a `BinaryHeap` of them is a min-heap.
#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f64,
    pair: Pair,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| other.pair.unordered().cmp(&self.pair.unordered()))
    }
}

/// Keeps the `capacity` best candidates seen and the pruning threshold they imply.
struct TopK {
    heap: BinaryHeap<Scored>,
    capacity: usize,
}

impl TopK {
    fn new(capacity: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(capacity + 1),
            capacity: capacity.max(1),
        }
    }

    /// The smallest screening score a candidate needs to enter, −∞ until full.
    fn threshold(&self) -> f64 {
        if self.heap.len() < self.capacity {
            f64::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f64::NEG_INFINITY, |s| s.score)
        }
    }

    fn offer(&mut self, score: f64, pair: Pair) {
        if score > self.threshold() {
            self.heap.push(Scored { score, pair });
            if self.heap.len() > self.capacity {
                self.heap.pop();
            }
        }
    }

    fn into_sorted(self) -> Vec<Scored> {
        // `into_sorted_vec` is ascending in `Ord`, which is reversed: best score first.
        self.heap.into_sorted_vec()
    }
}

/// The unasked pairs a scan over the bank considers: every one up to the selection's exhaustive
/// limit, else the unasked ones among the generated candidates ([`generate_candidates`]).
pub fn unasked_candidates<R: Rng + ?Sized>(
    stats: &BankStats,
    space: &CandidateSpace,
    options: &SelectionOptions,
    rng: &mut R,
) -> Vec<Pair> {
    if space.pair_count <= options.exhaustive_limit {
        space.unasked_pairs().collect()
    } else {
        generate_candidates(stats, space, options, rng)
            .into_iter()
            .filter(|p| !space.was_asked(*p))
            .collect()
    }
}

/// The unasked pair whose answer the posterior predicts most surely, the largest
/// |m|/√(1 + πs²/8) (the probit approximation of the predictive's distance from a coin flip),
/// shown in a random order; `None` when every allowed pair has been asked. Scans
/// [`unasked_candidates`].
pub fn most_predictable<R: Rng + ?Sized>(from: &Candidates, rng: &mut R) -> Option<Pair> {
    let sureness = |pair: Pair| {
        let (m, s2) = from.stats.pair_predictive(from.bank, pair, from.noise.beta);
        m.abs() / (1.0 + std::f64::consts::PI * s2 / 8.0).sqrt()
    };
    let (_, best) = unasked_candidates(from.stats, from.space, from.options, rng)
        .into_iter()
        .map(|p| (sureness(p), p))
        .max_by(|x, y| x.0.total_cmp(&y.0))?;
    Some(if rng.random_bool(0.5) {
        best
    } else {
        Pair {
            a: best.b,
            b: best.a,
        }
    })
}

/// What a question is chosen from, and how: the bank with its statistics under the current
/// posterior, the pairs still allowed, the answer noise and the selection's settings. Every
/// selection rule ([`select`], [`most_predictable`], `epig::select_for_targets`,
/// `kway::select_set`) takes one.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    pub bank: &'a Bank,
    pub stats: &'a BankStats,
    pub space: &'a CandidateSpace,
    pub noise: &'a NoiseModel,
    pub options: &'a SelectionOptions,
}

impl<'a> Candidates<'a> {
    /// The candidates of `bank` (with `stats` under the current posterior) still allowed by
    /// `space`, chosen under answer noise `noise` with `options`.
    pub fn new(
        bank: &'a Bank,
        stats: &'a BankStats,
        space: &'a CandidateSpace,
        noise: &'a NoiseModel,
        options: &'a SelectionOptions,
    ) -> Self {
        Self {
            bank,
            stats,
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
        Strategy::Random => random_pair(from.space, rng).map(|pair| Selected {
            pair,
            score_bits: 0.0,
        }),
        Strategy::Bald | Strategy::Dopt | Strategy::Epig => best_pair(from, strategy, rng),
    }?;
    // Show the two items in a random order: the model is symmetric, people are not.
    let pair = if rng.random_bool(0.5) {
        selected.pair
    } else {
        Pair {
            a: selected.pair.b,
            b: selected.pair.a,
        }
    };
    Some(Selected { pair, ..selected })
}

fn random_pair<R: Rng + ?Sized>(space: &CandidateSpace, rng: &mut R) -> Option<Pair> {
    let weights: Vec<usize> = space
        .groups
        .iter()
        .map(|g| g.len() * (g.len() - 1) / 2)
        .collect();
    // Rejection sampling is fast while most pairs are unasked; enumerate when it is not.
    for _ in 0..256 {
        let pair = sample_pair(&space.groups, &weights, space.pair_count, rng);
        if !space.was_asked(pair) {
            return Some(pair);
        }
    }
    let unasked: Vec<Pair> = all_pairs(&space.groups)
        .filter(|p| !space.was_asked(*p))
        .collect();
    (!unasked.is_empty()).then(|| unasked[rng.random_range(0..unasked.len())])
}

/// A uniformly random within-group pair.
fn sample_pair<R: Rng + ?Sized>(
    groups: &[Vec<usize>],
    weights: &[usize],
    total: usize,
    rng: &mut R,
) -> Pair {
    let mut r = rng.random_range(0..total);
    let mut g = 0;
    while r >= weights[g] {
        r -= weights[g];
        g += 1;
    }
    let members = &groups[g];
    let i = rng.random_range(0..members.len());
    let mut j = rng.random_range(0..members.len() - 1);
    if j >= i {
        j += 1;
    }
    Pair {
        a: members[i],
        b: members[j],
    }
}

fn all_pairs(groups: &[Vec<usize>]) -> impl Iterator<Item = Pair> + '_ {
    groups.iter().flat_map(|g| {
        (0..g.len()).flat_map(move |i| (i + 1..g.len()).map(move |j| Pair { a: g[i], b: g[j] }))
    })
}

fn best_pair<R: Rng + ?Sized>(
    from: &Candidates,
    strategy: Strategy,
    rng: &mut R,
) -> Option<Selected> {
    let &Candidates {
        bank,
        stats,
        space,
        noise,
        options,
    } = from;
    let beta = noise.beta;
    let bald = strategy != Strategy::Dopt;
    // The s²-only bound prunes pairs that cannot reach the current top list. It bounds the true
    // information, so it is compared with the screen threshold less the screen's own error. With
    // ties (three outcomes) the binary bound does not hold, and D-optimal scores are not bits.
    let prune = options.prune && bald && !noise.ties_enabled();
    let mut top = TopK::new(if bald { options.rescore } else { 1 });
    // Posterior sd of each item's reward; a pair's sd is at most β(sdₐ + sd_b).
    let sd: Vec<f64> = stats.q.iter().map(|q| q.max(0.0).sqrt()).collect();
    let mut cutoff = Cutoff::NONE;
    // Screens a candidate and offers it to the shortlist; the asked-set lookup happens only for
    // candidates good enough to enter. Returns true when the threshold (hence the cutoff) moved.
    let consider = |top: &mut TopK, cutoff: &Cutoff, pair: Pair| {
        let (m, s2) = stats.pair_predictive(bank, pair, beta);
        let score = if bald {
            // The screen never exceeds h(σ(x)), x² = m²/(1 + πs²/8): a few multiplications
            // reject every pair whose outcome is too predictable to enter the shortlist.
            if m * m >= cutoff.max_x2 * (1.0 + std::f64::consts::PI * s2 / 8.0) {
                return false;
            }
            information_table(m, s2)
        } else {
            dopt_score(noise, m, s2)
        };
        if score > top.threshold() && !space.was_asked(pair) {
            top.offer(score, pair);
            return true;
        }
        false
    };
    let refresh = |top: &TopK| {
        let threshold = top.threshold();
        Cutoff {
            min_pair_sd: if prune {
                smallest_useful_sd(
                    threshold - CLOSED_FORM_MAX_ERROR_BITS - SCREEN_TABLE_MAX_ERROR_BITS,
                ) / beta
            } else {
                0.0
            },
            // The table may read up to its error above the closed form, which h(σ(x)) bounds.
            max_x2: if bald && options.prune {
                largest_useful_x2(threshold - SCREEN_TABLE_MAX_ERROR_BITS)
            } else {
                f64::INFINITY
            },
        }
    };

    if space.pair_count <= options.exhaustive_limit {
        for members in &space.groups {
            // Visit items by decreasing sd so that the bound decreases along both loops.
            let mut order = members.clone();
            order.sort_by(|&x, &y| sd[y].total_cmp(&sd[x]));
            for (i, &a) in order.iter().enumerate() {
                if i + 1 < order.len() && sd[a] + sd[order[i + 1]] < cutoff.min_pair_sd {
                    break;
                }
                for &b in &order[i + 1..] {
                    if sd[a] + sd[b] < cutoff.min_pair_sd {
                        break;
                    }
                    if consider(&mut top, &cutoff, Pair { a, b }) {
                        cutoff = refresh(&top);
                    }
                }
            }
        }
    } else {
        for pair in generate_candidates(stats, space, options, rng) {
            if sd[pair.a] + sd[pair.b] >= cutoff.min_pair_sd && consider(&mut top, &cutoff, pair) {
                cutoff = refresh(&top);
            }
        }
    }

    let shortlist = top.into_sorted();
    if strategy == Strategy::Dopt {
        return shortlist.first().map(|s| Selected {
            pair: s.pair,
            score_bits: s.score,
        });
    }
    shortlist
        .iter()
        .map(|s| {
            let (m, s2) = stats.pair_predictive(bank, s.pair, beta);
            Selected {
                pair: s.pair,
                score_bits: information_quadrature(noise, m, s2),
            }
        })
        .max_by(|x, y| x.score_bits.total_cmp(&y.score_bits))
        .or_else(|| {
            random_pair(space, rng).map(|pair| Selected {
                pair,
                score_bits: 0.0,
            })
        })
}

/// Candidates for banks with too many pairs to score them all:
/// 1. `sampled_pairs` uniformly random within-group pairs (coverage of the whole bank);
/// 2. every within-group pair among the `top_items` items of largest qᵢ (where s² can be large);
/// 3. for those top items, their neighbours in the order of mᵢ within their group (pairs with
///    small |m|, the most uncertain outcomes).
fn generate_candidates<R: Rng + ?Sized>(
    stats: &BankStats,
    space: &CandidateSpace,
    options: &SelectionOptions,
    rng: &mut R,
) -> Vec<Pair> {
    let weights: Vec<usize> = space
        .groups
        .iter()
        .map(|g| g.len() * (g.len() - 1) / 2)
        .collect();
    let mut candidates: Vec<Pair> = (0..options.sampled_pairs)
        .map(|_| sample_pair(&space.groups, &weights, space.pair_count, rng))
        .collect();

    let mut by_q: Vec<(usize, usize)> = space
        .groups
        .iter()
        .enumerate()
        .flat_map(|(g, members)| members.iter().map(move |&i| (g, i)))
        .collect();
    let top = options.top_items.min(by_q.len());
    if top > 0 {
        by_q.select_nth_unstable_by(top - 1, |x, y| stats.q[y.1].total_cmp(&stats.q[x.1]));
    }
    let top_items = &by_q[..top];
    for (x, &(gx, a)) in top_items.iter().enumerate() {
        for &(gy, b) in &top_items[x + 1..] {
            if gx == gy {
                candidates.push(Pair { a, b });
            }
        }
    }
    let mut touched: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(g, i) in top_items {
        touched.entry(g).or_default().push(i);
    }
    for (g, items) in touched {
        let mut by_m = space.groups[g].clone();
        by_m.sort_by(|&x, &y| stats.m[x].total_cmp(&stats.m[y]));
        let position: HashMap<usize, usize> =
            by_m.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        for a in items {
            let p = position[&a];
            for offset in [1usize, 2, 3] {
                if p >= offset {
                    candidates.push(Pair {
                        a,
                        b: by_m[p - offset],
                    });
                }
                if p + offset < by_m.len() {
                    candidates.push(Pair {
                        a,
                        b: by_m[p + offset],
                    });
                }
            }
        }
    }
    candidates
}
