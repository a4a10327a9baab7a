//! A question of two items: a pair of bank indices.

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

    /// The same pair with the sides swapped.
    pub fn swapped(self) -> Self {
        Pair {
            a: self.b,
            b: self.a,
        }
    }

    /// The pair with its sides in a random order (one draw of `rng`): the model is symmetric,
    /// people are not.
    pub fn in_random_order<R: rand::Rng + ?Sized>(self, rng: &mut R) -> Self {
        use rand::RngExt;
        if rng.random_bool(0.5) {
            self
        } else {
            self.swapped()
        }
    }
}
