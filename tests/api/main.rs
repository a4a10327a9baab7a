//! End-to-end tests: the real server on a random port, over HTTP, against both stores.
//!
//! Every scenario runs twice, on the embedded SQLite store (a temporary file) and on PostgreSQL
//! (a fresh database per test on `ELICIT_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`). PostgreSQL being unreachable fails the
//! PostgreSQL variants; it never skips them silently.

mod audit;
mod bad_input;
mod bench;
mod concurrency;
mod connections;
mod demo;
mod eval;
mod harness;
mod keys;
mod onboarding;
mod ops;
mod personalisation;
mod prior;
mod questions;
mod restart;
mod store_contract;
mod summary;
