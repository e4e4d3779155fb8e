//! # medtech-federation
//!
//! The MedTech Chain committee node and the `medtech` command: hospital data ([`data`]), the
//! query interface ([`query`]), the private query protocol as a pure per-member driver
//! ([`protocol`], simulated in [`sim`]), the query loop over the replicated ledger ([`node`]),
//! committee changes ([`change`]), the application rules every member's ledger applies ([`rules`]), the HTTP API ([`api`]), the benchmarks ([`bench`], [`bench_ledger`]) and the local
//! committee demo ([`demo`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod bench;
pub mod bench_ledger;
pub mod bench_query;
pub mod bundle;
pub mod change;
pub mod config;
pub mod data;
pub mod demo;
pub mod node;
pub mod protocol;
pub mod query;
pub mod rules;
pub mod service;
pub mod sim;
pub mod web;
