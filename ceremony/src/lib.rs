//! The dealer-free key ceremony (issue 3).
//!
//! The protocol lives in [`medtech_threshold::dkg`] as a transport-agnostic state machine. This
//! crate is the tool around it. What exists today: [`bench`], which runs every party in one
//! process with real message encoding and reports the figures issue 3 asks for. Still to come
//! (see docs/ceremony.md): `run` and `join` over mutually authenticated TLS with signed
//! messages, the JSON transcript and `verify`, `test-decrypt`, and encrypted key-share files.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bench;
