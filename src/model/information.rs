//! The information one comparison yields: for a pair whose f = λᵀx has belief N(m, s²), the
//! expected information gain I(y; λ) = I(y; f) = H[E p(y|f)] − E H[p(y|f)] (BALD) in closed form,
//! tabulated and by quadrature, the bounds that prune a screen, and the D-optimal score.

use std::ops::RangeInclusive;

use super::likelihood::NoiseModel;
use super::numeric::{binary_entropy_bits, entropy_bits, gauss_hermite_16, sigmoid, sigmoid_slope};

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
    TableCell::of(m, s2).map_or(0.0, |cell| cell.screen())
}

/// [`information_table`] unless a bound shows it is at most `floor`: `None` then. The bound is
/// the largest corner of the cell's block of [`SCREEN_BLOCK`]² cells (a bilinear value never
/// exceeds its corners), read from a table of 16 KiB that stays in the L1 cache, where the screen's
/// own table (half a MiB) does not: a scan whose shortlist is full reads the large table only for
/// the pairs that might enter it. Never `None` for a value above `floor`.
#[inline]
pub fn information_table_above(m: f64, s2: f64, floor: f64) -> Option<f64> {
    match TableCell::of(m, s2) {
        None => Some(0.0),
        Some(cell) if screen_block_bounds()[cell.block] <= floor => None,
        Some(cell) => Some(cell.screen()),
    }
}

/// Cells a side of a block of [`information_table_above`]'s bound.
const SCREEN_BLOCK: usize = 8;
const BLOCK_ROW: usize = SCREEN_B_CELLS / SCREEN_BLOCK;

/// Per block of [`SCREEN_BLOCK`]² cells of the screen's table, its largest corner
/// ([`largest_corner`]).
fn screen_block_bounds() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..SCREEN_A_CELLS / SCREEN_BLOCK)
            .flat_map(|block_a| {
                (0..BLOCK_ROW).map(move |block_b| {
                    largest_corner(
                        block_a * SCREEN_BLOCK..=(block_a + 1) * SCREEN_BLOCK,
                        block_b * SCREEN_BLOCK..=(block_b + 1) * SCREEN_BLOCK,
                    )
                })
            })
            .collect()
    })
}

/// The largest corner of the screen's table over these rows (of a) and columns (of b²), plus
/// 10⁻¹² bits: a bilinear value in a cell whose corners all lie there never exceeds it (the
/// rounding of a convex combination of values below 1 bit is a few ulps).
fn largest_corner(rows: RangeInclusive<usize>, columns: RangeInclusive<usize>) -> f64 {
    let table = screen_table();
    let largest = rows
        .flat_map(|row| table[row * TABLE_ROW..][columns.clone()].iter().copied())
        .fold(f32::NEG_INFINITY, f32::max);
    f64::from(largest) + 1e-12
}

/// The smallest s² at which [`information_table`] can exceed `floor`, whatever m: for any belief
/// of smaller variance the screen is at most `floor`. Read from the largest corner of each row of
/// cells (row k holds a = s²/(s² + 4) in [k/256, (k + 1)/256)), carried up the rows so that the
/// bound grows with s²: 0 while the narrowest row can exceed `floor` (while the shortlist is not
/// full, every pair), ∞ when no row can. A scan of pairs by decreasing sd stops where
/// β(sdₐ + sd_b) falls below its square root.
pub fn screen_variance_needed(floor: f64) -> f64 {
    let rows = screen_row_bounds();
    let below = rows.partition_point(|&bound| bound <= floor);
    if below == 0 {
        return 0.0;
    }
    if below == rows.len() {
        return f64::INFINITY;
    }
    let a = below as f64 / SCREEN_A_CELLS as f64;
    // Rows under `below` hold a < below/256, that is s² < 4a/(1 − a); taken a hair lower, so that
    // the rounding of a = s²/(s² + 4) cannot put a variance under it into row `below`.
    4.0 * a / (1.0 - a) * (1.0 - 1e-9)
}

/// Per row k of the screen's cells, the largest corner of rows 0 to k + 1 ([`largest_corner`]):
/// nondecreasing in k.
fn screen_row_bounds() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut running = f64::NEG_INFINITY;
        (0..SCREEN_A_CELLS)
            .map(|k| {
                running = running.max(largest_corner(k..=k + 1, 0..=SCREEN_B_CELLS));
                running
            })
            .collect()
    })
}

/// An upper bound on [`information_quadrature`] for a binary answer (no ties) with any lapse
/// rate, from a table of the lapse-free value: a lapse only adds noise to the answer, so it
/// lowers the information (the quadrature is the exact information of a 16-point f, so this
/// holds for it too), and within a cell of the table the lapse-free value stays within
/// [`QUADRATURE_BOUND_MARGIN_BITS`] of the largest of the cell's corners (a smooth function on a
/// fine grid; checked on a dense sample in `tests/inference.rs`). `None` beyond the table
/// (b² ≥ 64, an outcome almost certain). It spares the shortlist's re-scoring most quadratures.
#[inline]
pub fn information_quadrature_bound(m: f64, s2: f64) -> Option<f64> {
    TableCell::of(m, s2).map(|cell| {
        let (v, w) = (
            &quadrature_table()[cell.index..],
            &quadrature_table()[cell.index + TABLE_ROW..],
        );
        v[0].max(v[1]).max(w[0]).max(w[1]) + QUADRATURE_BOUND_MARGIN_BITS
    })
}

/// What [`information_quadrature_bound`] adds to its cell's largest corner.
pub const QUADRATURE_BOUND_MARGIN_BITS: f64 = 1e-3;

/// Largest difference between [`information_table`] and [`information_closed_form`], in bits.
pub const SCREEN_TABLE_MAX_ERROR_BITS: f64 = 0.005;
const SCREEN_A_CELLS: usize = 256;
const SCREEN_B_CELLS: usize = 512;
const TABLE_ROW: usize = SCREEN_B_CELLS + 1;
/// Beyond b² = 64 (|m| > 8 probit-scaled sd) the outcome is certain: the screen is below 0.002 bits.
const SCREEN_B2_MAX: f64 = 64.0;

/// Where (m, s²) falls in the tables: the index of its cell's corner of smaller a and b², its
/// position within the cell, and its block's index in [`screen_block_bounds`].
struct TableCell {
    index: usize,
    ta: f64,
    tb: f64,
    block: usize,
}

impl TableCell {
    #[inline]
    fn of(m: f64, s2: f64) -> Option<Self> {
        let a = s2 / (s2 + 4.0);
        let b2 = m * m / (1.0 + std::f64::consts::PI * s2 / 8.0);
        if b2 >= SCREEN_B2_MAX || !a.is_finite() {
            return None;
        }
        let fa = a * SCREEN_A_CELLS as f64;
        let fb = b2 * (SCREEN_B_CELLS as f64 / SCREEN_B2_MAX);
        let (ia, ib) = (
            (fa as usize).min(SCREEN_A_CELLS - 1),
            (fb as usize).min(SCREEN_B_CELLS - 1),
        );
        Some(Self {
            index: ia * TABLE_ROW + ib,
            ta: fa - ia as f64,
            tb: fb - ib as f64,
            block: ia / SCREEN_BLOCK * BLOCK_ROW + ib / SCREEN_BLOCK,
        })
    }

    /// The screen's bilinear value in this cell.
    #[inline]
    fn screen(&self) -> f64 {
        let table = screen_table();
        let (v, w) = (&table[self.index..], &table[self.index + TABLE_ROW..]);
        let corner = |row: &[f32], k: usize| f64::from(row[k]);
        let (ta, tb) = (self.ta, self.tb);
        (1.0 - ta) * ((1.0 - tb) * corner(v, 0) + tb * corner(v, 1))
            + ta * ((1.0 - tb) * corner(w, 0) + tb * corner(w, 1))
    }
}

/// `f(m, s²)` at every corner of the tables' grid, row by row of a.
fn tabulate(f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    let mut values = Vec::with_capacity((SCREEN_A_CELLS + 1) * TABLE_ROW);
    for ia in 0..=SCREEN_A_CELLS {
        // a = 1 is s² = ∞; the last row uses a very large s² instead.
        let a = (ia as f64 / SCREEN_A_CELLS as f64).min(1.0 - 1e-12);
        let s2 = 4.0 * a / (1.0 - a);
        for ib in 0..=SCREEN_B_CELLS {
            let b2 = ib as f64 * SCREEN_B2_MAX / SCREEN_B_CELLS as f64;
            let m = (b2 * (1.0 + std::f64::consts::PI * s2 / 8.0)).sqrt();
            values.push(f(m, s2));
        }
    }
    values
}

/// The screen's table in single precision: the screen reads it at random, a few corners for
/// every candidate pair, and at 8 bytes a corner (1 MiB) it missed the cache on most reads (a
/// fifth of the scan's time, perf at 100,000 items). Rounding to f32 moves a value by less than
/// 10⁻⁷ bits, far inside [`SCREEN_TABLE_MAX_ERROR_BITS`].
fn screen_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        tabulate(information_closed_form)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    })
}

fn quadrature_table() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let lapse_free = NoiseModel::default();
        tabulate(|m, s2| information_quadrature(&lapse_free, m, s2))
    })
}

/// Largest error of [`information_closed_form`] against the exact logistic value, in bits.
pub const CLOSED_FORM_MAX_ERROR_BITS: f64 = 0.09;

/// Expected information gain in bits for the answer model `noise` by a 16-node Gauss–Hermite
/// rule: I = H[E p(y|f)] − E H[p(y|f)], f ~ N(m, s²).
///
/// Exact where the belief is a few logistic widths at most, not beyond: the rule's nodes lie
/// s·0.3 to s·0.6 apart near the centre, and once s is several times the logistic's width they
/// sample the bump h(σ(f)) with one or two nodes. Against a dense rule the value is off by at
/// most 10⁻⁸ bits at s² = 1, 0.002 at 9, 0.026 at 25 and 0.12 at 100 (over m; it overrates
/// pairs of m near 0 and underrates those of |m| near s/2). Re-scoring with the exact value
/// instead changed no outcome that could be measured (BENCHMARKS.md, issue 24, "Questions no
/// worse": 24 seeds of the 100,000-item task and 16 of the 40-item one), so the rule stays.
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
