//! # medtech-federation
//!
//! The MedTech Chain committee node and the `medtech` command. So far it holds the
//! cryptographic and noise benchmarks ([`bench`]), the replicated ledger benchmark
//! ([`bench_ledger`]) and the local committee demo ([`demo`]); the node itself (hospital data,
//! the query protocol over the ledger, the researcher API) is issue 6.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bench;
pub mod bench_ledger;
pub mod data;
pub mod demo;
pub mod node;
pub mod protocol;
pub mod query;
pub mod sim;
