//! Scenarios: a real committee with crashed, partitioned, cheating and colluding parties, and
//! an oracle that checks the federation's promises afterwards (issue 8).
//!
//! * [`harness`] runs a committee in one process over the real stack (openraft over mutual
//!   TLS on loopback, durable storage, the federation's query loops) and lets a test kill,
//!   restart, partition and corrupt members;
//! * [`oracle`] checks the invariants from the ledger alone: every member ends with the same
//!   log and checkpoint, the export verifies offline, no acknowledged entry is lost, no budget
//!   is overspent or double-charged, and no result is released without `t` valid partial
//!   decryptions of an aggregate that holds enough noise;
//! * [`adversary`] holds the cheating members the scenarios play.
//!
//! The scenarios themselves are the tests in `scenarios/tests/`, each named after what it
//! shows; `docs/scenarios.md` lists them with what each checks. The multi-process and
//! container scenarios are `federation/tests/node_binary.rs` (SIGKILL of node processes) and
//! `scripts/compose-scenario.sh` (docker compose).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod adversary;
pub mod harness;
pub mod oracle;
