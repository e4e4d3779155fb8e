//! The dealer-free key ceremony (issue 3).
//!
//! The protocol lives in [`medtech_threshold::dkg`] as a transport-agnostic state machine. This
//! crate is the tool around it:
//! * [`rehearsal`] — `run`: a whole ceremony on one machine with the outputs a real one leaves
//!   (key, signed transcript, pinned identities, sealed share files, summary);
//! * [`transcript`] — the transcript and `verify`, which re-runs every public step offline;
//! * [`sharefile`] — key shares sealed at rest (key file or Argon2id passphrase,
//!   ChaCha20-Poly1305);
//! * [`files`] — the key file, a reviewer's challenge and partial decryptions (`test-decrypt`);
//! * [`bench`] — the benchmark;
//! * [`echo`] — the echo round that makes the mesh's broadcasts checked, and its evidence.
//!
//! * [`net`] — `keygen` and `join`: one party per host over mutually authenticated TLS;
//! * [`reshare`] — `reshare`: the same key to fresh shares or a new committee, over that transport.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod bench;
pub mod echo;
mod error;
pub mod files;
pub mod net;
pub mod progress;
pub mod rehearsal;
pub mod reshare;
pub mod sharefile;
pub mod transcript;

pub use error::{Error, Result};
