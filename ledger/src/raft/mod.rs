//! Replication of the ledger over Raft (openraft 0.9).
//!
//! * [`log_store`] — the Raft log, vote and purge marks over a [`RaftLogBackend`] (sled);
//! * [`state_machine`] — applies committed proposals: validates each entry deterministically
//!   ([`crate::state`]), gives accepted entries their sequence number in the Merkle log, and
//!   persists entries and the applied Raft position in one durable step; snapshots;
//! * [`network`] — tonic gRPC over mutually authenticated TLS; a Raft RPC is accepted only from
//!   the member whose certificate is pinned for the node id the RPC claims;
//! * [`node`] — a committee member's ledger: start, bootstrap, propose (forwarded to the leader),
//!   cosign checkpoints, read proofs, export.
//!
//! Sequence numbers are assigned in `apply`, never taken from Raft indexes: rejected proposals
//! and membership entries occupy Raft slots but not Merkle leaves.
//!
//! [`RaftLogBackend`]: crate::store::RaftLogBackend

// openraft's `StorageError` (over 200 bytes) is the error type its storage traits impose; the
// helpers around them return it too rather than converting back and forth.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub mod local;
pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;

/// A Raft node id.
pub type NodeId = u64;

/// A committee member as Raft knows it: its name (as in the ledger's committee), its address, and
/// the SHA-256 of its TLS certificate (DER), hex. Raft RPCs from a peer are accepted only when
/// the peer's client certificate has this digest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeNode {
    /// Member name.
    pub name: String,
    /// `host:port` of its committee gRPC endpoint.
    pub addr: String,
    /// SHA-256 of its certificate (DER), lowercase hex.
    pub cert_sha256: String,
}

impl fmt::Display for CommitteeNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// A proposed entry: the bytes of a signed entry ([`crate::entry`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal(pub Vec<u8>);

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proposal({} bytes)", self.0.len())
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying a proposal did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Its position in the Merkle log, when accepted.
    pub sequence: Option<u64>,
    /// Why it was rejected, when it was.
    pub rejection: Option<String>,
}

openraft::declare_raft_types!(
    /// openraft type configuration of the ledger.
    pub TypeConfig:
        D = Proposal,
        R = Receipt,
        NodeId = NodeId,
        Node = CommitteeNode,
);

/// openraft's storage error for this configuration.
pub type StorageError = openraft::StorageError<NodeId>;

pub(crate) fn io_err(
    f: impl FnOnce(openraft::AnyError) -> openraft::StorageIOError<NodeId>,
    e: impl fmt::Display,
) -> StorageError {
    f(openraft::AnyError::error(e.to_string())).into()
}
