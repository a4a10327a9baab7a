//! elicit: live adaptive preference elicitation.
//!
//! * [`model`]: the inference engine (pure maths: posterior, likelihoods, updates, selection, scoring).
//! * [`store`]: persistence behind one trait, on PostgreSQL or embedded SQLite.
//! * [`sim`]: simulated users for `elicit simulate`.

pub mod model;
pub mod service;
pub mod sim;
pub mod store;
