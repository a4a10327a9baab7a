//! Choosing the items a question of k shows together: the best pair by the strategy, then
//! greedily the items that raise the set's information most.

use super::*;

/// Candidate sets re-scored with the finer rule at each greedy step.
pub(super) const SET_RESCORE: usize = 3;

/// Candidates whose exact set information is computed at each greedy step, after a screen by
/// their pairwise information with the items already in the set.
pub(super) const SET_SCREEN: usize = 16;

/// A chosen set of items to show, in display order, with its information in bits (0 for the
/// random strategy).
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenSet {
    pub items: Vec<usize>,
    pub score_bits: f64,
}

/// Chooses up to `choices` items of one group to show together, no two of which were compared
/// before (the caller marks every pair of an asked set, so no set or pair repeats): the best pair
/// by the strategy, then greedily the item of the question's pool that raises the set's
/// information most, among the [`SET_SCREEN`] whose smallest pairwise information with the set's
/// items is largest. Greedy keeps about 98 % of an exhaustive search's information
/// (research/questions.md) at a small fraction of its cost. When the group runs out of such
/// items the set is smaller. `random` completes its random pair with random members of the
/// pair's group.
pub fn select_set<R: Rng + ?Sized>(
    from: &Candidates,
    strategy: Strategy,
    choices: usize,
    rng: &mut R,
) -> Option<ChosenSet> {
    let first = select(from, strategy, rng)?;
    let mut items = vec![first.pair.a, first.pair.b];
    let greedy = (strategy != Strategy::Random)
        .then(|| complete_greedily(from, &mut items, choices, first.score_bits))
        .flatten();
    let score_bits = match greedy {
        Some(bits) => bits,
        None => {
            // `random`, or a fallback pair from outside the pool.
            complete_at_random(from, &mut items, choices, rng);
            if strategy == Strategy::Random {
                0.0
            } else {
                first.score_bits
            }
        }
    };
    // Show the items in a random order: the model is exchangeable, people read left to right.
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
    Some(ChosenSet { items, score_bits })
}

/// Whether `candidate` may join `items` in a set: never an item that would compare a pair again
/// (pairs asked before, or excluded: held out for evaluation, known already).
pub(super) fn may_join(from: &Candidates, items: &[usize], candidate: usize) -> bool {
    items
        .iter()
        .all(|&i| i != candidate && !from.space.was_asked(Pair { a: i, b: candidate }))
}

/// Adds random members of the group of `items` (bank indices) up to `choices`.
pub(super) fn complete_at_random<R: Rng + ?Sized>(
    from: &Candidates,
    items: &mut Vec<usize>,
    choices: usize,
    rng: &mut R,
) {
    let members = from.space.group_members(items[0]);
    while items.len() < choices.min(members.len()) {
        let candidates: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&c| may_join(from, items, c))
            .collect();
        if candidates.is_empty() {
            break;
        }
        items.push(candidates[rng.random_range(0..candidates.len())]);
    }
}

/// Adds, greedily, the pool members of the group of `items` (a pair of the pool) that raise the
/// set's information most, up to `choices`; returns the set's information (`first_bits`, the
/// pair's, while it is one), or `None` when the pair is not the pool's.
pub(super) fn complete_greedily(
    from: &Candidates,
    items: &mut Vec<usize>,
    choices: usize,
    first_bits: f64,
) -> Option<f64> {
    let (pool, noise) = (from.pool, from.noise);
    let mut set: Vec<Position> = items
        .iter()
        .map(|&i| pool.position(i))
        .collect::<Option<_>>()?;
    let members = pool.group_members(set[0]);
    let mut score_bits = first_bits;
    while set.len() < choices.min(members.len()) {
        let mut screened: Vec<(f64, Position)> = members
            .iter()
            .copied()
            .filter(|&c| may_join(from, items, pool.item(c)))
            .map(|c| {
                let weakest = set
                    .iter()
                    .map(|&i| {
                        let (m, s2) = pool.pair_predictive(PoolPair { a: i, b: c }, noise.beta);
                        information_table(m, s2)
                    })
                    .fold(f64::INFINITY, f64::min);
                (weakest, c)
            })
            .collect();
        if screened.is_empty() {
            break;
        }
        let keep = SET_SCREEN.min(screened.len());
        screened.select_nth_unstable_by(keep - 1, |x, y| y.0.total_cmp(&x.0));
        // Score the screened sets with the coarse rule, the best few with the finer one.
        let score = |c: Position, nodes: Nodes| {
            let mut candidate = set.clone();
            candidate.push(c);
            let belief = SetBelief::from_pool(pool, &candidate, noise.beta);
            (information_with(&belief, noise, nodes), c)
        };
        let mut coarse: Vec<(f64, Position)> = screened[..keep]
            .iter()
            .map(|&(_, c)| score(c, Nodes::Table(screen_rule)))
            .collect();
        let rescore = SET_RESCORE.min(coarse.len());
        coarse.select_nth_unstable_by(rescore - 1, |x, y| y.0.total_cmp(&x.0));
        let (bits, c) = coarse[..rescore]
            .iter()
            .map(|&(_, c)| score(c, Nodes::Table(information_rule)))
            .max_by(|x, y| {
                x.0.total_cmp(&y.0)
                    .then(pool.item(y.1).cmp(&pool.item(x.1)))
            })?;
        score_bits = bits;
        set.push(c);
        items.push(pool.item(c));
    }
    Some(score_bits)
}
