//! Anchoring the ledger to a Hyperledger Fabric channel.
//!
//! Each cosigned checkpoint (and optionally more) is written to a Fabric channel through a small
//! chaincode ([`contract`]: `RegisterCommittee`, `AnchorCheckpoint`, `GetCheckpoint`; run as a
//! service by [`chaincode`]), so that the
//! committee's log is pinned in a ledger run by other parties: once a checkpoint is in a Fabric
//! block, the committee cannot present a different history of that size without the anchor
//! contradicting it.
//!
//! * [`identity`] — the client's Fabric MSP identity (X.509 certificate + ECDSA P-256 key;
//!   low-S DER signatures over SHA-256, as Fabric requires);
//! * [`transaction`] — proposals, transaction IDs, the checks on a prepared transaction before
//!   signing it, commit-status requests (pure, no I/O);
//! * [`client`] — the Fabric Gateway gRPC client (tonic): `Evaluate`, `Endorse`, `Submit`,
//!   `CommitStatus`;
//! * [`anchor`] — the anchoring of checkpoints, and the loop a ledger node runs;
//! * [`chaincode`] — the anchoring chaincode behind Fabric's chaincode shim protocol, for a
//!   peer's chaincode-as-a-service builder (the `medtech-anchor-chaincode` binary);
//! * [`sim`] — an in-process gateway and peer that check every signature on the exact bytes,
//!   for fast tests; `tests/fabric_real.rs` runs the same client against a real Fabric peer.
//!
//! The wire format is `medtech_protos::fabric` and `fabric_shim`
//! (`protos/proto/fabric/{gateway,chaincode_shim}.proto`), the subset of Fabric's published
//! schema this client and chaincode need, checked field by field against the real one.
//! docs/ledger.md, "Anchoring to Fabric", has the chaincode interface and how to deploy it.

pub mod anchor;
pub mod chaincode;
pub mod client;
pub mod contract;
pub mod identity;
pub mod sim;
pub mod transaction;

pub use anchor::{AnchorOutcome, Anchorer};
pub use client::{Committed, GatewayClient, GatewayEndpoint};
pub use identity::MspIdentity;

/// What went wrong talking to Fabric.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FabricError {
    /// The MSP identity (certificate or key) is unusable.
    #[error("identity: {0}")]
    Identity(String),
    /// A signature did not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// Could not reach the gateway, or it failed the call.
    #[error("gateway transport: {0}")]
    Transport(String),
    /// The gateway answered with something this client refuses (for example a prepared
    /// transaction that is not the one it proposed).
    #[error("gateway misbehaved: {0}")]
    Gateway(String),
    /// The chaincode refused the invocation.
    #[error("chaincode returned {status}: {message}")]
    Chaincode {
        /// Status (HTTP-like).
        status: i32,
        /// Its message.
        message: String,
    },
    /// The transaction was ordered but the committing peers invalidated it.
    #[error("transaction {tx_id} invalid: {code}")]
    Invalid {
        /// Transaction ID.
        tx_id: String,
        /// The validation code's name.
        code: String,
    },
    /// The commit status did not arrive in time.
    #[error("transaction {0} not committed in time")]
    CommitTimeout(String),
    /// Fabric already holds a different checkpoint of the same size: the committee (or the
    /// anchoring node) equivocated. Carries the anchored note as evidence.
    #[error("Fabric holds a different checkpoint of size {size}: equivocation")]
    Equivocation {
        /// The size.
        size: u64,
        /// The note anchored on Fabric.
        anchored_note: String,
    },
}
