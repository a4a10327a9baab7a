//! elicit: live adaptive preference elicitation.
//!
//! * [`model`]: the inference engine (pure maths: posterior, likelihoods, updates, selection, scoring).
//! * [`store`]: persistence behind one trait, on PostgreSQL or embedded SQLite.
//! * [`service`]: what each API operation does, in terms of the engine and the store.
//! * [`http`]: the REST API (axum), problem+json errors.
//! * [`app`]: configuration, telemetry, start-up and shutdown.
//! * [`sim`]: simulated users for `elicit simulate`.
//! * [`eval`]: offline evaluation on real users' ratings (`elicit eval`).
//! * [`bench`]: a load generator against a running server (`elicit bench`).
//! * [`client`]: an authenticated HTTP client of the API (for `eval --target`, `bench`, tests).

pub mod app;
pub mod bench;
pub mod client;
pub mod demo;
pub mod eval;
pub mod http;
pub mod model;
pub mod service;
pub mod sim;
pub mod store;
