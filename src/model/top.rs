//! The k greatest entries of a stream, by a score and then a tie-break key: question selection
//! keeps its shortlist in one, the coreset's index the extremes along each direction in others.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// An entry, ordered by `score` (IEEE total order), then by `key` (so that ties are broken the
/// same way on every replica); `value` rides along and takes no part in the order.
#[derive(Debug, Clone, Copy)]
pub struct Ranked<K, V> {
    pub score: f64,
    pub key: K,
    pub value: V,
}

impl<K: Ord, V> PartialEq for Ranked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord, V> Eq for Ranked<K, V> {}
impl<K: Ord, V> PartialOrd for Ranked<K, V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord, V> Ord for Ranked<K, V> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| self.key.cmp(&other.key))
    }
}

/// The `capacity` greatest entries offered so far, in a min-heap. The floor (the least kept
/// score once full) is kept apart from the heap, so that most offers cost one comparison.
#[derive(Debug)]
pub struct Largest<K, V> {
    heap: BinaryHeap<Reverse<Ranked<K, V>>>,
    capacity: usize,
    floor: f64,
}

impl<K: Ord, V> Largest<K, V> {
    /// Keeps at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            heap: BinaryHeap::with_capacity(capacity + 1),
            capacity,
            floor: f64::NEG_INFINITY,
        }
    }

    /// The score an entry needs to be kept: −∞ until full, then the least kept score.
    #[inline]
    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// Keeps the entry if it is among the `capacity` greatest so far. O(log capacity).
    #[inline]
    pub fn offer(&mut self, score: f64, key: K, value: V) {
        if score < self.floor {
            return;
        }
        let entry = Ranked { score, key, value };
        if self.heap.len() < self.capacity {
            self.heap.push(Reverse(entry));
        } else if let Some(mut least) = self.heap.peek_mut()
            && entry > least.0
        {
            // Replaced in place: one sift down, where a pop and a push took two.
            *least = Reverse(entry);
        } else {
            return;
        }
        if self.heap.len() == self.capacity {
            self.floor = self
                .heap
                .peek()
                .map_or(f64::NEG_INFINITY, |Reverse(l)| l.score);
        }
    }

    /// The kept entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Ranked<K, V>> {
        self.heap.iter().map(|Reverse(entry)| entry)
    }

    /// The kept entries, greatest first.
    pub fn into_sorted(self) -> Vec<Ranked<K, V>> {
        // Ascending in `Reverse` is descending in the entries' own order.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(entry)| entry)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_greatest_by_score_then_key() {
        let mut top = Largest::new(3);
        for (score, key) in [(1.0, 5), (3.0, 1), (2.0, 2), (3.0, 0), (0.5, 9), (2.0, 7)] {
            top.offer(score, key, ());
        }
        let kept: Vec<(f64, i32)> = top.into_sorted().iter().map(|r| (r.score, r.key)).collect();
        assert_eq!(kept, vec![(3.0, 1), (3.0, 0), (2.0, 7)]);
    }

    #[test]
    fn the_floor_is_the_least_kept_score_once_full() {
        let mut top = Largest::new(2);
        top.offer(1.0, 0, ());
        assert_eq!(top.floor(), f64::NEG_INFINITY);
        top.offer(4.0, 1, ());
        assert_eq!(top.floor(), 1.0);
        top.offer(2.0, 2, ());
        assert_eq!(top.floor(), 2.0);
    }
}
