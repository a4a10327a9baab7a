//! The items a session may ask about ([`ItemSpace`]: the whole bank's is built once and shared,
//! [`super::bank::Bank::space`]). What a session asked already is its own
//! ([`super::candidates::CandidateSpace`]). The space reads a bank's features and groups, not the
//! bank itself, so that the bank can keep its shared space without the two modules importing
//! each other.
//!
//! An [`ItemSpace`] also carries a [`Coreset`] for drawing a question's candidates from a large
//! space without looking at every item: for D = min(16J, 256) fixed unit directions of feature
//! space (the space's principal axes, the coordinate axes and random directions from a fixed
//! seed), the [`EXTREMES_PER_END`] items with the largest and with the smallest projection, at
//! most 2·D·8 items in all (4,096 at J ≥ 16). An item of large predictive variance
//! qᵢ = φᵢᵀΣφᵢ under a posterior is far out along the posterior's directions of large variance,
//! and so, with many directions, nearly always far out along one of them: the coreset's items of
//! largest qᵢ stand in for the bank's (`elicit simulate --bank 100000` keeps 99.7 % of the bits
//! of a scan of every item, BENCHMARKS.md). Built once per bank version in O(N·D·J).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::numeric::total_order_key;
use super::pair::Pair;
use super::posterior::{Posterior, RankOne};
use super::top::Largest;

/// Items kept at each end of each indexed direction.
pub const EXTREMES_PER_END: usize = 8;
/// Directions of the index at most (16J below J = 16).
pub const MAX_INDEX_DIRECTIONS: usize = 256;
/// Items projected at once when the index is built (bounds its working memory).
const INDEX_CHUNK: usize = 2048;
/// Marks an item that is in no group of at least two members of the space.
const NO_GROUP: u32 = u32::MAX;

/// The items that may be asked about, by group (questions pair items of one group), with the
/// structures that drawing candidates from them needs. The whole bank's is built once and shared
/// ([`super::bank::Bank::space`]); a session restricted to some items builds its own over them.
#[derive(Debug)]
pub struct ItemSpace {
    /// Groups with at least two members (bank indices), in a canonical order.
    groups: Vec<Vec<usize>>,
    membership: Membership,
    /// cumulative_pairs[g] = pairs within groups 0..=g: a uniformly random pair in O(log G).
    cumulative_pairs: Vec<usize>,
    pair_count: usize,
    item_count: usize,
    /// Items of the bank the space was built over (to recognise a state made for another bank).
    bank_len: usize,
    coreset: OnceLock<Coreset>,
}

/// The group (an index into `groups`) of each member.
#[derive(Debug)]
enum Membership {
    /// The whole bank: a group index for every bank item.
    Dense(Vec<u32>),
    /// Some items: only theirs, so that the space's size follows the restriction's.
    Sparse(HashMap<usize, u32>),
}

impl ItemSpace {
    /// The space of the `allowed` items (`None`: every item) of a bank whose item i is in group
    /// `item_groups[i]`; items alone in their group are not candidates. O(n log n) for n items.
    pub fn new(item_groups: &[u32], allowed: Option<&[usize]>) -> Self {
        let bank_len = item_groups.len();
        let mut by_group: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut push = |i: usize| by_group.entry(item_groups[i]).or_default().push(i);
        match allowed {
            Some(items) => items.iter().copied().for_each(&mut push),
            None => (0..bank_len).for_each(&mut push),
        }
        let mut groups: Vec<Vec<usize>> = by_group.into_values().filter(|g| g.len() >= 2).collect();
        groups.sort();
        let mut cumulative_pairs = Vec::with_capacity(groups.len());
        let mut pair_count = 0;
        for g in &groups {
            pair_count += g.len() * (g.len() - 1) / 2;
            cumulative_pairs.push(pair_count);
        }
        let members = groups
            .iter()
            .enumerate()
            .flat_map(|(g, members)| members.iter().map(move |&i| (i, g as u32)));
        let membership = match allowed {
            None => {
                let mut dense = vec![NO_GROUP; bank_len];
                members.for_each(|(i, g)| dense[i] = g);
                Membership::Dense(dense)
            }
            Some(_) => Membership::Sparse(members.collect()),
        };
        Self {
            item_count: groups.iter().map(Vec::len).sum(),
            groups,
            membership,
            cumulative_pairs,
            pair_count,
            bank_len,
            coreset: OnceLock::new(),
        }
    }

    /// Groups of at least two items, each a list of bank indices.
    pub fn groups(&self) -> &[Vec<usize>] {
        &self.groups
    }

    /// The index in [`ItemSpace::groups`] of `item`'s group; `None` when it is not a candidate.
    pub fn group_of(&self, item: usize) -> Option<u32> {
        let g = match &self.membership {
            Membership::Dense(groups) => groups.get(item).copied().unwrap_or(NO_GROUP),
            Membership::Sparse(groups) => groups.get(&item).copied().unwrap_or(NO_GROUP),
        };
        (g != NO_GROUP).then_some(g)
    }

    /// The items that may share a question with `item` (its group, `item` included); empty when
    /// `item` is not a candidate.
    pub fn group_members(&self, item: usize) -> &[usize] {
        self.group_of(item)
            .map_or(&[], |g| self.groups[g as usize].as_slice())
    }

    /// Within-group pairs.
    pub fn pair_count(&self) -> usize {
        self.pair_count
    }

    /// Items in groups of at least two.
    pub fn item_count(&self) -> usize {
        self.item_count
    }

    /// A uniformly random within-group pair (the space must have one): O(log G).
    pub fn sample_pair<R: Rng + ?Sized>(&self, rng: &mut R) -> Pair {
        let r = rng.random_range(0..self.pair_count);
        let g = self.cumulative_pairs.partition_point(|&c| c <= r);
        let members = &self.groups[g];
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

    /// Every within-group pair, group by group.
    pub fn pairs(&self) -> impl Iterator<Item = Pair> + '_ {
        self.groups.iter().flat_map(|g| {
            (0..g.len()).flat_map(move |i| (i + 1..g.len()).map(move |j| Pair { a: g[i], b: g[j] }))
        })
    }

    /// The space's coreset, built on the first call from the bank's J×N feature matrix (column i
    /// is φᵢ): O(n·D·J) once.
    pub fn coreset(&self, features: &DMatrix<f64>) -> &Coreset {
        self.coreset.get_or_init(|| Coreset::build(features, self))
    }

    /// Builds the coreset now (see [`Bank::prepare`]).
    pub fn prepare(&self, features: &DMatrix<f64>) {
        self.coreset(features);
    }

    /// Whether the space was built over a bank of this many items.
    pub fn fits(&self, bank_len: usize) -> bool {
        self.bank_len == bank_len
    }

    /// Whether the space is of some items only (a restricted session's own), not a whole bank's.
    pub fn is_restricted(&self) -> bool {
        matches!(self.membership, Membership::Sparse(_))
    }

    /// Approximate heap size in bytes.
    pub fn size_bytes(&self) -> usize {
        let word = std::mem::size_of::<usize>();
        let membership = match &self.membership {
            Membership::Dense(groups) => groups.len() * 4,
            Membership::Sparse(groups) => groups.len() * 4 * word,
        };
        let coreset = self.coreset.get().map_or(0, Coreset::size_bytes);
        self.item_count * word + self.groups.len() * 4 * word + membership + coreset
    }
}

/// The items of a space that are extreme along some of many fixed directions (see the module's
/// documentation), with their features side by side: a few thousand items at most whatever the
/// size of the space, among which the items of largest predictive variance under any posterior
/// are found ([`CoreStats`]).
#[derive(Debug)]
pub struct Coreset {
    /// Bank indices, ascending.
    items: Vec<usize>,
    /// Column k is φ of `items[k]`.
    features: DMatrix<f64>,
    /// The statistics under the last prior a session started from ([`CoreStats::at_start`]):
    /// every new session on the bank needs them, and at O(K·J²) they were 2.7 % of the server's
    /// CPU under `elicit bench --bank 100000` (perf; BENCHMARKS.md), half of session creation's.
    at_prior: Mutex<Option<(Posterior, CoreStats)>>,
}

/// The [`EXTREMES_PER_END`] items of largest projection offered, ties to the smaller index (so
/// that the coreset is the same on every replica).
type Extremes = Largest<Reverse<usize>, ()>;

impl Coreset {
    /// Projects every item of `space` on the index's directions, in chunks: O(n·D·J).
    fn build(features: &DMatrix<f64>, space: &ItemSpace) -> Self {
        let directions = index_directions(features, space);
        let d = directions.nrows();
        let j = features.nrows();
        let mut high: Vec<Extremes> = (0..d).map(|_| Extremes::new(EXTREMES_PER_END)).collect();
        let mut low: Vec<Extremes> = (0..d).map(|_| Extremes::new(EXTREMES_PER_END)).collect();
        let mut chunk = DMatrix::zeros(j, INDEX_CHUNK);
        let members: Vec<usize> = space.groups.iter().flatten().copied().collect();
        for block in members.chunks(INDEX_CHUNK) {
            for (c, &item) in block.iter().enumerate() {
                chunk.column_mut(c).copy_from(&features.column(item));
            }
            let projections = &directions * chunk.columns(0, block.len());
            for (c, &item) in block.iter().enumerate() {
                let column = projections.column(c);
                for r in 0..d {
                    high[r].offer(column[r], Reverse(item), ());
                    low[r].offer(-column[r], Reverse(item), ());
                }
            }
        }
        let mut items: Vec<usize> = high
            .iter()
            .chain(&low)
            .flat_map(|extremes| extremes.iter().map(|e| e.key.0))
            .collect();
        items.sort_unstable();
        items.dedup();
        let features = features.select_columns(&items);
        Self {
            items,
            features,
            at_prior: Mutex::new(None),
        }
    }

    /// The coreset's items (bank indices).
    pub fn items(&self) -> &[usize] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn size_bytes(&self) -> usize {
        self.items.len() * std::mem::size_of::<usize>() + self.features.len() * 8
    }
}

/// A session's statistics of the coreset's items under its posterior: mᵢ = φᵢᵀμ and
/// qᵢ = φᵢᵀΣφᵢ, followed through each rank-one step μ += c₁u, Σ −= c₂uuᵀ in O(K·J)
/// (w = Cᵀu, m += c₁w, q −= c₂w²) for the K ≤ 2·D·[`EXTREMES_PER_END`] coreset items, and
/// computed afresh in O(K·J²). K is bounded whatever the size of the bank.
#[derive(Debug, Clone)]
pub struct CoreStats {
    m: Vec<f64>,
    q: Vec<f64>,
}

impl CoreStats {
    /// The statistics under `posterior`: O(K·J²).
    pub fn new(core: &Coreset, posterior: &Posterior) -> Self {
        let g = posterior.cov() * &core.features;
        Self {
            m: core
                .features
                .tr_mul(posterior.mean())
                .iter()
                .copied()
                .collect(),
            q: g.column_iter()
                .zip(core.features.column_iter())
                .map(|(gk, fk)| gk.dot(&fk))
                .collect(),
        }
    }

    /// [`CoreStats::new`] for a session's first question (under its prior, or the posterior it
    /// was created with): kept with the coreset for the next session that starts from the same
    /// (compared whole, O(J²)).
    pub fn at_start(core: &Coreset, prior: &Posterior) -> Self {
        let mut cached = core.at_prior.lock().expect("coreset cache lock");
        match cached.as_ref() {
            Some((p, stats)) if p.mean() == prior.mean() && p.cov() == prior.cov() => stats.clone(),
            _ => {
                let stats = Self::new(core, prior);
                *cached = Some((prior.clone(), stats.clone()));
                stats
            }
        }
    }

    /// Follows the posterior's rank-one step: O(K·J).
    pub fn update(&mut self, core: &Coreset, u: &DVector<f64>, step: RankOne) {
        if step == RankOne::NONE {
            return;
        }
        // w = φₖᵀu item by item (what `tr_mul` computes, to the bit), with no K-vector between.
        for ((m, q), phi) in self
            .m
            .iter_mut()
            .zip(&mut self.q)
            .zip(core.features.column_iter())
        {
            let w = phi.dot(u);
            *m += step.c1 * w;
            *q -= step.c2 * w * w;
        }
    }

    /// The coreset positions of the `count` items of largest qᵢ (ties by index): the first
    /// `ordered` of them largest first, the rest in no particular order. O(K + count +
    /// ordered·log ordered): a pool needs the order of its anchors only.
    pub fn widest(&self, count: usize, ordered: usize) -> Vec<usize> {
        widest_of(&self.q, count, ordered)
    }

    /// `positions` ordered by mᵢ (ties by position).
    pub fn by_mean(&self, positions: &[usize]) -> Vec<usize> {
        let mut order: Vec<(i64, usize)> = positions
            .iter()
            .map(|&k| (total_order_key(self.m[k]), k))
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, k)| k).collect()
    }

    /// Up to `count` positions of `by_mean` (an order of [`CoreStats::by_mean`] holding
    /// `position`) nearest `position` in that order, alternately above and below: partners whose
    /// pair with it has a mean near 0, the most uncertain outcome. O(log W + count).
    pub fn neighbours_in_mean(
        &self,
        by_mean: &[usize],
        position: usize,
        count: usize,
    ) -> Vec<usize> {
        let key = |&k: &usize| (self.m[k], k);
        let at = by_mean.partition_point(|k| {
            let (m, k) = key(k);
            m.total_cmp(&self.m[position])
                .then(k.cmp(&position))
                .is_lt()
        });
        let mut neighbours = Vec::with_capacity(count);
        for step in 1..=by_mean.len() {
            if neighbours.len() >= count {
                break;
            }
            if let Some(&k) = by_mean.get(at + step) {
                neighbours.push(k);
            }
            if neighbours.len() < count
                && let Some(&k) = at.checked_sub(step).and_then(|i| by_mean.get(i))
            {
                neighbours.push(k);
            }
            if at + step >= by_mean.len() && step > at {
                break;
            }
        }
        neighbours
    }

    /// mᵢ of a coreset position.
    pub fn mean_of(&self, position: usize) -> f64 {
        self.m[position]
    }

    /// Heap size in bytes.
    pub fn size_bytes(&self) -> usize {
        (self.m.len() + self.q.len()) * 8
    }
}

/// The unit directions of the index, one a row: the principal axes of the items' features
/// (where the bank spreads), the coordinate axes (each base reward on its own) and random
/// directions from a fixed seed (everything between), 16J in all but at most
/// [`MAX_INDEX_DIRECTIONS`], so that every replica builds the same index.
fn index_directions(features: &DMatrix<f64>, space: &ItemSpace) -> DMatrix<f64> {
    let j = features.nrows();
    let n = space.item_count.max(1) as f64;
    let mut mean = DVector::zeros(j);
    for &i in space.groups.iter().flatten() {
        mean += features.column(i);
    }
    mean /= n;
    let mut scatter = DMatrix::zeros(j, j);
    for &i in space.groups.iter().flatten() {
        let centred = features.column(i) - &mean;
        scatter.ger(1.0 / n, &centred, &centred, 1.0);
    }
    let principal = SymmetricEigen::new(scatter.symmetric_part()).eigenvectors;
    let mut rows: Vec<DVector<f64>> = principal.column_iter().map(|c| c.into_owned()).collect();
    rows.extend((0..j).map(|axis| DVector::from_fn(j, |r, _| f64::from(u8::from(r == axis)))));
    let total = (16 * j).clamp(rows.len(), MAX_INDEX_DIRECTIONS.max(rows.len()));
    let mut rng = StdRng::seed_from_u64(0x5EED_1DE0);
    while rows.len() < total {
        let v = DVector::<f64>::from_fn(j, |_, _| StandardNormal.sample(&mut rng));
        let norm = v.norm();
        if norm > 0.0 {
            rows.push(v / norm);
        }
    }
    DMatrix::from_fn(rows.len(), j, |r, c| rows[r][c])
}

/// [`CoreStats::widest`] over the values `q`. The `count`-th largest value is found among the
/// bare keys (8 bytes each, half of a (key, position) pair, over the whole coreset); the positions
/// above it, and those at it by position until `count` are in, are the first `count` of the order
/// qᵢ descending, ties by position. Only those `count` become (key, position) pairs.
fn widest_of(q: &[f64], count: usize, ordered: usize) -> Vec<usize> {
    let count = count.min(q.len());
    let ordered = ordered.min(count);
    if count == 0 {
        return Vec::new();
    }
    // `!` reverses a key's order: ascending keys are qᵢ descending.
    let key = |k: usize| !total_order_key(q[k]);
    let mut keys: Vec<i64> = (0..q.len()).map(key).collect();
    let (before, &mut threshold, _) = keys.select_nth_unstable(count - 1);
    let mut at_threshold = count - before.iter().filter(|&&k| k < threshold).count();
    let mut chosen: Vec<(i64, usize)> = Vec::with_capacity(count);
    for k in 0..q.len() {
        let x = key(k);
        if x < threshold || (x == threshold && at_threshold > 0) {
            at_threshold -= usize::from(x == threshold);
            chosen.push((x, k));
        }
    }
    if ordered > 0 {
        chosen.select_nth_unstable(ordered - 1);
        // A total order (ties by position), so an unstable sort gives the one order.
        chosen[..ordered].sort_unstable();
    }
    chosen.into_iter().map(|(_, k)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `count` positions of the order qᵢ descending, ties by position.
    fn widest_by_sorting(q: &[f64], count: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..q.len()).collect();
        order.sort_by(|&a, &b| q[b].total_cmp(&q[a]).then(a.cmp(&b)));
        order.truncate(count);
        order
    }

    #[test]
    fn widest_takes_the_first_of_the_sorted_order_with_ties_by_position() {
        let mut rng = StdRng::seed_from_u64(7);
        for trial in 0..200 {
            let n = rng.random_range(1..300);
            // Few distinct values in half the trials: many ties at the threshold.
            let distinct = if trial % 2 == 0 { 4 } else { 1_000_000 };
            let q: Vec<f64> = (0..n)
                .map(|_| f64::from(rng.random_range(0..distinct)) / 7.0)
                .collect();
            let count = rng.random_range(0..n + 3);
            let ordered = rng.random_range(0..count + 2);
            let expected = widest_by_sorting(&q, count);
            let got = widest_of(&q, count, ordered);
            let head = ordered.min(expected.len());
            assert_eq!(
                got[..head],
                expected[..head],
                "the ordered head, trial {trial}"
            );
            let mut rest = got.clone();
            rest.sort_unstable();
            let mut wanted = expected.clone();
            wanted.sort_unstable();
            assert_eq!(rest, wanted, "the set, trial {trial}");
        }
    }
}
