//! # medtech-ledger
//!
//! The committee's shared memory and audit trail:
//!
//! * [`entry`] — typed entries (`medtech.ledger.v1` protobuf), signed by their author (a member,
//!   or a researcher for their queries), bound to the ledger's origin and the author's sequence;
//! * [`state`] — the deterministic rules an entry must satisfy to be applied, and what applying
//!   it changes (committee, researchers, queries, cosignatures);
//! * [`rules`] — the hook through which the application adds its own rules to the state
//!   machine (the committee node's release check);
//! * [`book`] — the per-query records of the state, spilled to a scratch file beyond a bound;
//! * [`merkle`] — the tamper-evident RFC 6962 Merkle log with inclusion and consistency proofs;
//! * [`checkpoint`] — C2SP checkpoints as Ed25519 signed notes, counted once `t` of `n` members
//!   cosigned, with extension checks for auditors and equivocation evidence naming the signer;
//! * [`store`] — durable storage behind small traits of our own (sled);
//! * [`raft`] — replication with openraft 0.9 over tonic gRPC with mutual TLS;
//! * [`tls`] — the committee CA and member certificates;
//! * [`export`] — the ledger as one file and its offline verification in numbered steps;
//! * [`fabric`] — anchoring cosigned checkpoints to a Hyperledger Fabric channel through the
//!   Fabric Gateway.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod book;
pub mod budget;
pub mod checkpoint;
pub mod entry;
pub mod export;
pub mod fabric;
pub mod merkle;
pub mod raft;
pub mod redb_store;
pub mod rules;
pub mod state;
pub mod store;
pub mod tls;

/// Errors of a running ledger node.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Durable storage failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// openraft's storage layer failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A Raft operation failed.
    #[error("raft: {0}")]
    Raft(String),
    /// No leader could take the proposal in time.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// Network or file I/O.
    #[error("i/o: {0}")]
    Io(String),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Anchoring to Fabric.
    #[error(transparent)]
    Fabric(#[from] fabric::FabricError),
}
