//! An item bank: the items a model's questions show, as base-reward features, and their groups.

use std::sync::{Arc, OnceLock};

use nalgebra::{DMatrix, DVector};

use super::ModelError;
use super::pair::Pair;
use super::space::ItemSpace;

/// An item bank: features of N items (column i of a J×N matrix is φᵢ) and each item's group.
/// Questions only pair items of the same group.
///
/// The bank also carries, built once on first use and shared by every session that may ask
/// about any of its items, that whole-bank [`ItemSpace`] (the groups and the index a question's
/// candidates are drawn from), so that what a session keeps does not grow with the bank.
#[derive(Debug, Clone)]
pub struct Bank {
    features: DMatrix<f64>,
    groups: Vec<u32>,
    space: OnceLock<Arc<ItemSpace>>,
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
        Ok(Self {
            features,
            groups,
            space: OnceLock::new(),
        })
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

    /// φᵢ as a slice (the matrix is column-major, so an item's features are contiguous).
    #[inline]
    pub fn feature_slice(&self, item: usize) -> &[f64] {
        let j = self.dim();
        &self.features.as_slice()[item * j..(item + 1) * j]
    }

    /// The J×N feature matrix.
    pub fn feature_matrix(&self) -> &DMatrix<f64> {
        &self.features
    }

    pub fn group(&self, item: usize) -> u32 {
        self.groups[item]
    }

    /// Each item's group.
    pub fn groups(&self) -> &[u32] {
        &self.groups
    }

    /// The question direction x = β(φa − φb).
    pub fn direction(&self, pair: Pair, beta: f64) -> DVector<f64> {
        (self.features.column(pair.a) - self.features.column(pair.b)) * beta
    }

    /// Every item of the bank as a candidate space, built on the first call (O(N)) and shared.
    pub fn space(&self) -> &Arc<ItemSpace> {
        self.space
            .get_or_init(|| Arc::new(ItemSpace::new(&self.groups, None)))
    }

    /// Builds, now rather than on the first question that needs them, the whole-bank space and
    /// its index of extreme items (O(N·J²)); a service calls it when it loads a bank, so that no
    /// session's first question pays for it.
    pub fn prepare(&self) {
        self.space().prepare(&self.features);
    }
}
