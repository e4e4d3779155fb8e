//! Protobuf schemas and generated types for the committee's wire formats (issues 5 and 6).
//!
//! **Not implemented yet.** This crate is a placeholder in the fixed workspace layout; it exports
//! nothing, and nothing in the project relies on it until its issue lands.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
