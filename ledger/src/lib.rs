//! # medtech-ledger
//!
//! The committee's shared memory and audit trail. So far: the tamper-evident RFC 6962 Merkle log
//! ([`merkle`]) with inclusion and consistency proofs. Replication with openraft, typed signed
//! entries, cosigned checkpoints, export and offline verification, and the Fabric connector are
//! the rest of issue 5 and are not built yet.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod merkle;
