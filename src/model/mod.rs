//! The inference engine: pure maths, no I/O.
//!
//! A user's taste is a vector λ ∈ R^J of coefficients over J named base rewards; a candidate y
//! scores λᵀφ(y). The engine keeps a Gaussian belief N(μ, Σ) over λ ([`posterior`]), updates it
//! after each answer with a rank-one step ([`update`], [`ep`]) under the answer model of
//! [`likelihood`], picks the next most informative comparison ([`select`], by the information of
//! [`information`]) among a bounded pool of candidates
//! drawn from the bank ([`pool`], [`space`]), decides when to stop
//! ([`elicitation`]), judges a log of answers (replay, refinement, diagnostics: [`history`]), and
//! scores candidates ([`score`]). Questions that
//! show k items and are answered with one have their own likelihood, update and set search
//! ([`kway`]); [`epig`] aims pair questions at target items instead of at λ.

pub mod bank;
pub mod basis;
pub mod candidates;
pub mod elicitation;
pub mod ep;
pub mod epig;
pub mod guard;
pub mod history;
pub mod information;
pub mod kway;
pub mod likelihood;
pub mod numeric;
pub mod pair;
pub mod pool;
pub mod population;
pub mod posterior;
pub mod reliability;
pub mod score;
pub mod select;
pub mod space;
pub mod summary;
pub mod top;
pub mod update;

pub use bank::Bank;
pub use elicitation::{Elicitation, ElicitationConfig, RunState, StopReason, StoppingRule};
pub use likelihood::{Choice, NoiseModel, Outcome, Strength};
pub use pair::Pair;
pub use posterior::{MAX_DIMENSIONS, Posterior, RankOne};
pub use select::Strategy;
pub use update::UpdateMethod;

/// An input the engine cannot work with; `field` names what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("this model has no tie threshold, so 'tie' is not a valid answer")]
    TiesDisabled,
}

impl ModelError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
