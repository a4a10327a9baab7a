//! The candidate space of one session: the items it may ask about (an [`ItemSpace`], the
//! bank's shared one unless the session is restricted to some items) and the pairs it has asked
//! already, O(answers).

use std::collections::HashSet;
use std::sync::Arc;

use foldhash::fast::FixedState;

use rand::{Rng, RngExt};

use super::bank::Bank;
use super::pair::Pair;
use super::space::ItemSpace;

/// The candidate space of one session: the items it may ask about ([`ItemSpace`], shared when it
/// is the whole bank) and the pairs already asked.
#[derive(Debug, Clone)]
pub struct CandidateSpace {
    items: Arc<ItemSpace>,
    /// Hashed with foldhash's fixed-seed hasher: bank indices are the service's own, and SipHash
    /// (the default, proof against chosen keys) was a visible share of a question's cost.
    asked: HashSet<(usize, usize), FixedState>,
    /// How many of the asked pairs are candidates (asked or excluded pairs may lie outside).
    asked_candidates: usize,
}

impl CandidateSpace {
    /// `allowed`: the items the session may use (`None`: the whole bank, whose space is shared).
    pub fn new(bank: &Bank, allowed: Option<&[usize]>) -> Self {
        let items = match allowed {
            None => bank.space().clone(),
            Some(items) => Arc::new(ItemSpace::new(bank.groups(), Some(items))),
        };
        Self {
            items,
            asked: HashSet::default(),
            asked_candidates: 0,
        }
    }

    /// The items the session may ask about.
    pub fn items(&self) -> &ItemSpace {
        &self.items
    }

    /// Records a pair as asked, so it is never proposed again.
    pub fn mark_asked(&mut self, pair: Pair) {
        let newly = self.asked.insert(pair.unordered());
        let candidate = pair.a != pair.b
            && matches!((self.items.group_of(pair.a), self.items.group_of(pair.b)), (Some(x), Some(y)) if x == y);
        if newly && candidate {
            self.asked_candidates += 1;
        }
    }

    /// Marks every pair of an asked set as asked, so that no later question repeats the set.
    pub fn mark_set_asked(&mut self, items: &[usize]) {
        for (x, &a) in items.iter().enumerate() {
            for &b in &items[x + 1..] {
                self.mark_asked(Pair { a, b });
            }
        }
    }

    /// The items that may share a question with `item` (its group, `item` included).
    pub fn group_members(&self, item: usize) -> &[usize] {
        self.items.group_members(item)
    }

    /// Every candidate pair not asked yet: O(pairs of the space).
    pub fn unasked_pairs(&self) -> impl Iterator<Item = Pair> + '_ {
        self.items.pairs().filter(|p| !self.was_asked(*p))
    }

    pub fn was_asked(&self, pair: Pair) -> bool {
        self.asked.contains(&pair.unordered())
    }

    /// Candidate pairs not asked yet.
    pub fn remaining(&self) -> usize {
        self.items.pair_count() - self.asked_candidates
    }

    /// Whether this space was made over `bank` (its size, at least).
    pub fn fits(&self, bank: &Bank) -> bool {
        self.items.fits(bank.len())
    }

    /// Approximate heap size in bytes of what this session holds on its own: the asked pairs
    /// (hash tables counted at about twice their entries) and a restricted item space; the whole
    /// bank's space is shared by every session and counted with the bank.
    pub fn size_bytes(&self) -> usize {
        let word = std::mem::size_of::<usize>();
        let own = if self.items.is_restricted() {
            self.items.size_bytes()
        } else {
            0
        };
        own + self.asked.len() * 4 * word
    }

    /// A uniformly random unasked pair: rejection sampling while most pairs are unasked, else an
    /// enumeration of the rest; `None` when none is left.
    pub fn random_unasked<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<Pair> {
        if self.remaining() == 0 {
            return None;
        }
        for _ in 0..256 {
            let pair = self.items.sample_pair(rng);
            if !self.was_asked(pair) {
                return Some(pair);
            }
        }
        let unasked: Vec<Pair> = self.unasked_pairs().collect();
        (!unasked.is_empty()).then(|| unasked[rng.random_range(0..unasked.len())])
    }
}
