//! Protobuf schemas and generated types for the committee's wire formats.
//!
//! * `medtech.ledger.v1` (`proto/medtech/ledger/v1/entry.proto`): the ledger's typed entries.
//!   A [`ledger::v1::SignedEntry`] carries the bytes of an [`ledger::v1::EntryBody`] exactly as
//!   its author signed them; verifiers decode those bytes and never re-encode, so protobuf's
//!   freedom of encoding cannot change what a signature covers.
//! * `medtech.ledger.v1.RaftService` (`raft.proto`): the Raft transport between members.
//! * [`fabric`] (`proto/fabric/gateway.proto`): the Hyperledger Fabric Gateway messages used to
//!   anchor checkpoints to a Fabric channel.
//!
//! The schemas are the contract; the rules an entry must satisfy to be applied (signatures,
//! author sequence numbers, references) are enforced by `medtech-ledger`'s state machine and
//! documented in docs/ledger.md.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// `medtech.*` packages.
pub mod ledger {
    /// `medtech.ledger.v1`.
    pub mod v1 {
        #![allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]
        tonic::include_proto!("medtech.ledger.v1");
    }
}

/// `medtech.data.v1` (`proto/medtech/data/v1/device.proto`): a hospital's device records as
/// they are ingested (the original's `DeviceData`, 15 fields, keyed by UDI).
pub mod data {
    /// `medtech.data.v1`.
    pub mod v1 {
        #![allow(missing_docs, clippy::doc_markdown)]
        tonic::include_proto!("medtech.data.v1");
    }
}

/// The subset of Hyperledger Fabric's wire format spoken by the ledger's Fabric connector
/// (`proto/fabric/gateway.proto`): the `gateway.Gateway` service and the proposal, transaction
/// and identity messages a client builds and signs. Byte-compatible with Fabric >= 2.4 peers.
pub mod fabric {
    #![allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]
    tonic::include_proto!("gateway");
}

// The shim's generated code names the gateway package's messages `super::gateway::…`.
use fabric as gateway;

/// The subset of Fabric's chaincode shim protocol (`proto/fabric/chaincode_shim.proto`,
/// package `protos`) spoken by the anchoring chaincode when the peer dials it as a service:
/// the `protos.Chaincode` service and the state messages. Byte-compatible with Fabric 2.x–3.x
/// peers (checked field by field by `tests/fabric_schema.rs`).
pub mod fabric_shim {
    #![allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]
    tonic::include_proto!("protos");
}

pub use prost::Message;
