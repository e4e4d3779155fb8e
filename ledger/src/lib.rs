//! # medtech-ledger
//!
//! The committee's shared memory and audit trail. So far:
//!
//! * [`merkle`] — the tamper-evident RFC 6962 Merkle log with inclusion and consistency proofs;
//! * [`checkpoint`] — C2SP checkpoints as Ed25519 signed notes, counted once `t` of `n` members
//!   cosigned, with extension checks for auditors and equivocation evidence naming the signer;
//! * [`export`] — the ledger as one file and its offline verification in numbered steps;
//! * [`store`] — durable entry storage behind a trait (sled), with the tree rebuilt on open.
//!
//! Replication with openraft, typed signed entries and the Fabric connector are the rest of
//! issue 5 and are not built yet.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod checkpoint;
pub mod export;
pub mod merkle;
pub mod store;
