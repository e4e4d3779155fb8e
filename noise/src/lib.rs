//! Distributed differential privacy: exact integer noise shares and privacy budgets (issue 4).
//!
//! **Not implemented yet.** This crate is a placeholder in the fixed workspace layout; it exports
//! nothing, and nothing in the project relies on it until its issue lands.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
