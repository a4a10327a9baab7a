//! The items one question is chosen among, with their statistics under the current posterior.
//!
//! For a pair (a, b), x = β(φa − φb), the belief about f = λᵀx is N(m, s²) with
//! m = β(mₐ − m_b) and s² = β²(qₐ + q_b − 2gₐ·φ_b), where mᵢ = φᵢᵀμ, gᵢ = Σφᵢ and qᵢ = φᵢᵀΣφᵢ.
//! A pool computes them for its P items in O(P·J²), after which a pair costs O(J).
//!
//! A space of at most [`SelectionOptions::exhaustive_limit`] pairs is its own pool: every pair is
//! a candidate, as it always was. A larger one is drawn from ([`Pool::draw`]), so that a question
//! costs the same on a bank of a thousand items as on one of a million. BALD's best pairs join
//! items of large predictive variance qᵢ whose means are close (a large s², a small |m|), and its
//! value is flat among near-optimal pairs, so a drawn pool holds:
//! 1. the [`SelectionOptions::top_items`] items of largest qᵢ among the space's coreset (the items
//!    extreme along one of many fixed directions, [`super::space::Coreset`], whose mᵢ and qᵢ the
//!    session follows answer by answer, [`CoreStats`]);
//! 2. for each of the [`SelectionOptions::anchors`] widest of them, the
//!    [`SelectionOptions::partners`] items nearest its mean among the coreset's 8·top_items
//!    widest;
//! 3. the items of [`SelectionOptions::sampled_pairs`] uniformly random within-group pairs
//!    (coverage of the whole space and of every group);
//! 4. for anchors with few group mates in the pool, up to [`SelectionOptions::mates`] of them (in
//!    a bank of many groups, wide items are seldom in one group).
//!
//! and its scan pairs each anchor with every other item of its group in the pool.
//!
//! Cost of a question from a drawn pool, whatever the size N of the bank: O(K) to rank the K
//! coreset items (K ≤ 2·min(16J, 256)·8), O(W log W) for the partners (W = 8·top_items), O(P·J²)
//! for the pool's statistics with P ≤ top_items + anchors·(partners + mates) + 2·sampled_pairs
//! ([`SelectionOptions::largest_drawn_pool`]), and O(anchors·P·J) for the scan; the session's
//! coreset statistics cost O(K·J) an answer. A space scanned whole costs O(n·J²) for its
//! n ≤ 2·exhaustive_limit items and O(J) a pair.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use foldhash::fast::FixedState;
use nalgebra::{DMatrix, DVector};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use super::bank::Bank;
use super::candidates::CandidateSpace;
use super::numeric::total_order_key;
use super::pair::Pair;
use super::posterior::Posterior;
use super::space::{CoreStats, ItemSpace};

/// Tuning of the selection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SelectionOptions {
    /// Up to this many within-group pairs every pair is a candidate; above it, a pool of
    /// candidates is drawn ([`Pool::draw`]).
    pub exhaustive_limit: usize,
    /// Coreset items of largest predictive variance that enter a drawn pool.
    pub top_items: usize,
    /// Of those, the widest, which are paired with every other item of the pool and get
    /// partners and group mates.
    pub anchors: usize,
    /// Coreset items of nearest mean each anchor brings into the pool.
    pub partners: usize,
    /// Uniformly random within-group pairs whose items enter a drawn pool.
    pub sampled_pairs: usize,
    /// Group mates an anchor with few of them in the pool gets at most.
    pub mates: usize,
    /// Candidates re-scored by quadrature after the closed-form screen: the shortlist's size. The
    /// screen is within 0.095 bits of the exact information and ranks the exact best first or a
    /// few places down. With the screen's best 50 re-scored on the reference tasks (BENCHMARKS.md,
    /// issue 24, "Session 19"), the exact best was among the first 10 in all 3,000 questions at
    /// J = 16 and in 99.8 % of the 40-item and MovieLens tasks' 15,042 (10⁻⁵ bits lost a question
    /// on average); not so where every pair carries little (the 4-item rankings task, ~0.15 bits
    /// a pair: 2.8·10⁻³ bits lost a question, its bits at k = 30 0.4 % lower). A short shortlist
    /// also raises the scan's pruning floor (its 10th best screen, not its 50th): a question costs
    /// about a third less.
    pub rescore: usize,
    /// Skip pairs whose screen, by a bound, cannot reach the shortlist (exact: never changes the
    /// choice; off only to measure what it saves).
    pub prune: bool,
}

impl Default for SelectionOptions {
    fn default() -> Self {
        Self {
            exhaustive_limit: 8_192,
            top_items: 48,
            anchors: 16,
            partners: 4,
            sampled_pairs: 8,
            mates: 8,
            rescore: 10,
            prune: true,
        }
    }
}

impl SelectionOptions {
    /// The most items a drawn pool holds: P ≤ top_items + anchors·(partners + mates) +
    /// 2·sampled_pairs.
    pub fn largest_drawn_pool(&self) -> usize {
        self.top_items + self.anchors * (self.partners + self.mates) + 2 * self.sampled_pairs
    }
}

/// The coreset items partners are drawn from: this many times `top_items`, the widest.
const PARTNER_SPREAD: usize = 8;

/// A pool item's position, and a pair of them.
pub type Position = u32;

/// Two pool items (positions in the pool), in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolPair {
    pub a: Position,
    pub b: Position,
}

/// Candidate items of one question with mᵢ, gᵢ and qᵢ under the posterior (see the module).
#[derive(Debug, Clone)]
pub struct Pool {
    dim: usize,
    /// Bank index of each position.
    items: Vec<usize>,
    /// Positions by group (groups with at least two pool members), in the space's group order.
    groups: Vec<Vec<Position>>,
    /// Index in `groups` of each position's group (`u32::MAX`: alone in the pool).
    group_of: Vec<u32>,
    m: Vec<f64>,
    q: Vec<f64>,
    /// gᵢ = Σφᵢ, J per position.
    g: Vec<f64>,
    /// φᵢ, J per position.
    phi: Vec<f64>,
    /// Position of each bank item, built on first use.
    positions: OnceLock<HashMap<usize, Position>>,
    /// The widest items of each group that are paired with every other ([`Pool::anchors`]).
    anchors: usize,
}

impl Pool {
    /// The candidates of the next question from `space` under `posterior` (`core`: the session's
    /// coreset statistics under it, computed here when `None`).
    /// Every item of the space when it has at most `options.exhaustive_limit` pairs (no random
    /// draw); else a pool drawn as the module describes.
    pub fn draw<R: Rng + ?Sized>(
        bank: &Bank,
        space: &CandidateSpace,
        core: Option<&CoreStats>,
        posterior: &Posterior,
        options: &SelectionOptions,
        rng: &mut R,
    ) -> Self {
        let items = space.items();
        if items.pair_count() <= options.exhaustive_limit {
            let all: Vec<usize> = items.groups().iter().flatten().copied().collect();
            return Self::of_items(bank, items, posterior, all);
        }
        let coreset = items.coreset(bank.feature_matrix());
        let fresh;
        let core = match core {
            Some(core) => core,
            None => {
                fresh = CoreStats::new(coreset, posterior);
                &fresh
            }
        };
        let mut chosen = Chosen::with_capacity(options.largest_drawn_pool());
        // Partners come from the coreset's wider part (a pair with a narrow item carries little),
        // ordered by mean once, so that each anchor's are its neighbours in that order.
        let wide = core.widest(options.top_items * PARTNER_SPREAD, options.top_items);
        let widest = &wide[..options.top_items.min(wide.len())];
        for &k in widest {
            chosen.add(coreset.items()[k]);
        }
        let by_mean = core.by_mean(&wide);
        for &k in widest.iter().take(options.anchors) {
            for partner in core.neighbours_in_mean(&by_mean, k, options.partners) {
                chosen.add(coreset.items()[partner]);
            }
        }
        for _ in 0..options.sampled_pairs {
            let pair = items.sample_pair(rng);
            chosen.add(pair.a);
            chosen.add(pair.b);
        }
        let pool = Self::of_items(bank, items, posterior, chosen.items.clone());
        for anchor in pool.lonely_widest(items, options.anchors, options.mates) {
            let members = items.group_members(anchor);
            if members.len() <= options.mates + 1 {
                members.iter().for_each(|&i| chosen.add(i));
            } else {
                // Random mates; a few draws may repeat an item already in.
                for _ in 0..options.mates {
                    chosen.add(members[rng.random_range(0..members.len())]);
                }
            }
        }
        let pool = if chosen.items.len() == pool.len() {
            pool
        } else {
            Self::of_items(bank, items, posterior, chosen.items)
        };
        Self {
            anchors: options.anchors,
            ..pool
        }
    }

    /// How many of each group's items, widest first, a scan pairs with every other item of the
    /// group: all of them in a space that is its own pool; the `anchors` widest in a drawn pool,
    /// so that its scan costs O(anchors·P·J) rather than O(P²·J).
    pub fn anchors(&self) -> usize {
        self.anchors
    }

    /// The pool of these items (each a member of `space`), with their statistics: O(P·J²).
    fn of_items(bank: &Bank, space: &ItemSpace, posterior: &Posterior, items: Vec<usize>) -> Self {
        let dim = bank.dim();
        let n = items.len();
        let mut phi = DMatrix::zeros(dim, n);
        for (c, &i) in items.iter().enumerate() {
            phi.column_mut(c).copy_from_slice(bank.feature_slice(i));
        }
        let g = posterior.cov() * &phi;
        let m: Vec<f64> = phi.tr_mul(posterior.mean()).iter().copied().collect();
        let q: Vec<f64> = g
            .column_iter()
            .zip(phi.column_iter())
            .map(|(gi, fi)| gi.dot(&fi))
            .collect();
        // Positions by the space's group index, in pool order within a group.
        let mut by_space_group: Vec<(u32, Position)> = items
            .iter()
            .enumerate()
            .filter_map(|(p, &i)| Some((space.group_of(i)?, p as Position)))
            .collect();
        by_space_group.sort_unstable_by_key(|&(g, p)| (g, p));
        let mut groups: Vec<Vec<Position>> = Vec::new();
        let mut group_of = vec![u32::MAX; n];
        for chunk in by_space_group.chunk_by(|x, y| x.0 == y.0) {
            if chunk.len() >= 2 {
                for &(_, p) in chunk {
                    group_of[p as usize] = groups.len() as u32;
                }
                groups.push(chunk.iter().map(|&(_, p)| p).collect());
            }
        }
        Self {
            dim,
            items,
            groups,
            group_of,
            m,
            q,
            g: g.data.into(),
            phi: phi.data.into(),
            positions: OnceLock::new(),
            anchors: usize::MAX,
        }
    }

    /// The `count` items of largest qᵢ that have fewer than `mates` group mates in the pool.
    fn lonely_widest(&self, space: &ItemSpace, count: usize, mates: usize) -> Vec<usize> {
        // The pool's groups are the space's groups with two or more items in the pool: an item
        // of the space outside them is the only one of its group here.
        let in_pool = |p: Position| self.group_members(p).len().max(1);
        // qᵢ descending (`!` reverses a key's order), ties by position.
        let mut lonely: Vec<(i64, Position)> = (0..self.len() as Position)
            .filter(|&p| space.group_of(self.items[p as usize]).is_some() && in_pool(p) <= mates)
            .map(|p| (!total_order_key(self.q[p as usize]), p))
            .collect();
        lonely.sort_unstable();
        lonely.truncate(count);
        lonely
            .into_iter()
            .map(|(_, p)| self.items[p as usize])
            .collect()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The bank index of a position.
    pub fn item(&self, position: Position) -> usize {
        self.items[position as usize]
    }

    /// The position of a bank item, if it is in the pool.
    pub fn position(&self, item: usize) -> Option<Position> {
        self.positions
            .get_or_init(|| {
                self.items
                    .iter()
                    .enumerate()
                    .map(|(p, &i)| (i, p as Position))
                    .collect()
            })
            .get(&item)
            .copied()
    }

    /// The bank pair of two positions.
    pub fn pair(&self, pair: PoolPair) -> Pair {
        Pair {
            a: self.item(pair.a),
            b: self.item(pair.b),
        }
    }

    /// Positions by group: questions pair positions of one group.
    pub fn groups(&self) -> &[Vec<Position>] {
        &self.groups
    }

    /// The positions in `position`'s group (itself included); empty when it has no mate.
    pub fn group_members(&self, position: Position) -> &[Position] {
        match self.group_of[position as usize] {
            u32::MAX => &[],
            g => &self.groups[g as usize],
        }
    }

    /// Every within-group pair of the pool not asked yet, group by group.
    pub fn unasked_pairs(&self, space: &CandidateSpace) -> Vec<PoolPair> {
        self.groups
            .iter()
            .flat_map(|g| {
                (0..g.len()).flat_map(move |x| (x + 1..g.len()).map(move |y| (g[x], g[y])))
            })
            .map(|(a, b)| PoolPair { a, b })
            .filter(|&p| !space.was_asked(self.pair(p)))
            .collect()
    }

    /// mᵢ = φᵢᵀμ of a position.
    #[inline]
    pub fn mean(&self, position: Position) -> f64 {
        self.m[position as usize]
    }

    /// Predictive sd √qᵢ of each position's reward.
    pub fn sd(&self) -> Vec<f64> {
        self.q.iter().map(|q| q.max(0.0).sqrt()).collect()
    }

    /// φ of a position.
    pub fn features(&self, position: Position) -> &[f64] {
        let j = self.dim;
        &self.phi[position as usize * j..(position as usize + 1) * j]
    }

    fn g(&self, position: Position) -> &[f64] {
        let j = self.dim;
        &self.g[position as usize * j..(position as usize + 1) * j]
    }

    /// φₐᵀΣφ_b.
    #[inline(always)]
    fn cross(&self, a: Position, b: Position) -> f64 {
        if a == b {
            self.q[a as usize]
        } else {
            dot(self.g(a), self.features(b))
        }
    }

    /// The belief N(m, s²) about f for the pair, with x = β(φa − φb).
    #[inline(always)]
    pub fn pair_predictive(&self, pair: PoolPair, beta: f64) -> (f64, f64) {
        let (a, b) = (pair.a as usize, pair.b as usize);
        let s2 = beta * beta * (self.q[a] + self.q[b] - 2.0 * self.cross(pair.a, pair.b));
        (beta * (self.m[a] - self.m[b]), s2.max(0.0))
    }

    /// The belief N(c, S) about the utility differences zᵢ = βλᵀ(φ_{set[i+1]} − φ_{set[0]}) of a
    /// set of positions: cᵢ = β(m_{i+1} − m₀), S_{ij} = β²(φ_{i+1} − φ₀)ᵀΣ(φ_{j+1} − φ₀): O(k²J).
    pub fn set_predictive(&self, set: &[Position], beta: f64) -> (DVector<f64>, DMatrix<f64>) {
        let r = set.len().saturating_sub(1);
        let reference = set[0];
        let m = |p: Position| self.m[p as usize];
        let center = DVector::from_fn(r, |i, _| beta * (m(set[i + 1]) - m(reference)));
        let mut cov = DMatrix::zeros(r, r);
        for x in 0..r {
            for y in x..r {
                let (a, b) = (set[x + 1], set[y + 1]);
                let value = beta
                    * beta
                    * (self.cross(a, b) - self.cross(a, reference) - self.cross(b, reference)
                        + self.q[reference as usize]);
                cov[(x, y)] = value;
                cov[(y, x)] = value;
            }
        }
        (center, cov)
    }
}

/// Items added to a drawn pool, each once, in the order they came.
struct Chosen {
    items: Vec<usize>,
    seen: HashSet<usize, FixedState>,
}

impl Chosen {
    /// Room for `capacity` items, so that drawing a pool never grows the set.
    fn with_capacity(capacity: usize) -> Self {
        Self {
            items: Vec::with_capacity(capacity),
            seen: HashSet::with_capacity_and_hasher(capacity, FixedState::default()),
        }
    }

    fn add(&mut self, item: usize) {
        if self.seen.insert(item) {
            self.items.push(item);
        }
    }
}

/// Dot product with four accumulators (vectorises).
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
