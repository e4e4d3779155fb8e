//! Typed, signed ledger entries (`medtech.ledger.v1`, protos/proto/medtech/ledger/v1/entry.proto).
//!
//! An entry travels and is stored as the bytes of a [`SignedEntry`]: the [`EntryBody`] bytes
//! exactly as signed, and an Ed25519 signature over
//! `"medtech-ledger/entry/v1" ‖ 0x00 ‖ body`. The body names the ledger's origin and carries the
//! author's sequence number, so a signed entry can be replayed neither into another ledger nor a
//! second time into this one. Verifiers decode the signed bytes and never re-encode them.
//!
//! This module builds and parses entries; whether an entry may be *applied* (the author is known,
//! its sequence number is next, what it refers to exists) is decided by [`crate::state`].

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use medtech_protos::ledger::v1 as pb;
use medtech_protos::Message as _;
use rand_core::{CryptoRng, RngCore};

use crate::checkpoint::NodeKey;

pub use pb::entry_body::Kind;
pub use pb::{EntryBody, SignedEntry};

/// The entry format version this build writes and accepts.
pub const ENTRY_VERSION: u32 = 1;

/// Domain separator of entry signatures.
pub const ENTRY_DOMAIN: &[u8] = b"medtech-ledger/entry/v1\0";

/// Domain separator of committee-change approvals.
pub const CONFIG_DOMAIN: &[u8] = b"medtech-ledger/config/v1\0";

/// Largest entry accepted, in bytes (a grouped count's packed ciphertexts with proofs fit many
/// times over).
pub const MAX_ENTRY_BYTES: usize = 4 << 20;

/// Who signed an entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthorId {
    /// A committee member, by name.
    Node(String),
    /// A registered researcher, by id.
    Researcher(String),
}

impl std::fmt::Display for AuthorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthorId::Node(n) => write!(f, "node {n}"),
            AuthorId::Researcher(r) => write!(f, "researcher {r}"),
        }
    }
}

impl AuthorId {
    fn to_pb(&self) -> pb::Author {
        pb::Author {
            kind: Some(match self {
                AuthorId::Node(n) => pb::author::Kind::Node(n.clone()),
                AuthorId::Researcher(r) => pb::author::Kind::Researcher(r.clone()),
            }),
        }
    }

    fn from_pb(a: Option<&pb::Author>) -> Option<Self> {
        match a?.kind.as_ref()? {
            pb::author::Kind::Node(n) => Some(AuthorId::Node(n.clone())),
            pb::author::Kind::Researcher(r) => Some(AuthorId::Researcher(r.clone())),
        }
    }
}

/// Why bytes are not a well-formed entry (before any check against the ledger's state).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Larger than [`MAX_ENTRY_BYTES`].
    #[error("entry of {0} bytes exceeds the {MAX_ENTRY_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not protobuf of the expected shape.
    #[error("entry does not decode: {0}")]
    Malformed(String),
    /// A version this build does not read.
    #[error("entry version {0} is not supported (this build reads {ENTRY_VERSION})")]
    Version(u32),
    /// No author, or no kind.
    #[error("entry has no {0}")]
    Missing(&'static str),
}

/// A decoded entry: the signed bytes with their parsed body.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedEntry {
    /// The signed body bytes.
    pub body_bytes: Vec<u8>,
    /// The body.
    pub body: EntryBody,
    /// The author.
    pub author: AuthorId,
    /// The signature.
    pub signature: [u8; 64],
}

impl ParsedEntry {
    /// Decodes `bytes` (an encoded [`SignedEntry`]), checking shape and version only.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        let signed =
            SignedEntry::decode(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        let signature: [u8; 64] = signed
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| EntryError::Malformed("signature is not 64 bytes".into()))?;
        let body = EntryBody::decode(signed.body.as_slice())
            .map_err(|e| EntryError::Malformed(format!("body: {e}")))?;
        if body.version != ENTRY_VERSION {
            return Err(EntryError::Version(body.version));
        }
        let author =
            AuthorId::from_pb(body.author.as_ref()).ok_or(EntryError::Missing("author"))?;
        if body.kind.is_none() {
            return Err(EntryError::Missing("kind"));
        }
        Ok(ParsedEntry {
            body_bytes: signed.body,
            body,
            author,
            signature,
        })
    }

    /// The entry's kind (present: [`Self::decode`] checked it).
    pub fn kind(&self) -> Option<&Kind> {
        self.body.kind.as_ref()
    }

    /// The message its signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(&self.body_bytes)
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ENTRY_DOMAIN.len() + body.len());
    m.extend_from_slice(ENTRY_DOMAIN);
    m.extend_from_slice(body);
    m
}

/// A researcher's signing key (secret: redacted in `Debug`, zeroized on drop by ed25519-dalek).
pub struct ResearcherKey {
    id: String,
    key: SigningKey,
}

impl ResearcherKey {
    /// A fresh key for researcher `id`.
    pub fn generate<R: RngCore + CryptoRng>(id: &str, rng: &mut R) -> Self {
        ResearcherKey {
            id: id.to_owned(),
            key: SigningKey::generate(rng),
        }
    }

    /// From its 32-byte secret.
    pub fn from_secret_bytes(id: &str, secret: &[u8; 32]) -> Self {
        ResearcherKey {
            id: id.to_owned(),
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The public key to register.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The researcher's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for ResearcherKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResearcherKey {{ id: {:?}, key: <redacted> }}", self.id)
    }
}

/// Something that signs entries: a member's [`NodeKey`] or a [`ResearcherKey`].
pub trait EntrySigner {
    /// The author this key signs as.
    fn author(&self) -> AuthorId;
    /// Ed25519 over `message`.
    fn sign_message(&self, message: &[u8]) -> [u8; 64];
}

impl EntrySigner for NodeKey {
    fn author(&self) -> AuthorId {
        AuthorId::Node(self.name().to_owned())
    }
    fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.sign_raw(message)
    }
}

impl EntrySigner for ResearcherKey {
    fn author(&self) -> AuthorId {
        AuthorId::Researcher(self.id.clone())
    }
    fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

/// Builds and signs an entry; returns the encoded [`SignedEntry`].
///
/// `author_seq` must be the author's next sequence number on this ledger (see
/// [`crate::state::LedgerState::next_seq`]).
pub fn sign_entry(
    signer: &dyn EntrySigner,
    origin: &str,
    author_seq: u64,
    timestamp_ms: u64,
    kind: Kind,
) -> Vec<u8> {
    let body = EntryBody {
        version: ENTRY_VERSION,
        origin: origin.to_owned(),
        author: Some(signer.author().to_pb()),
        author_seq,
        timestamp_ms,
        kind: Some(kind),
    }
    .encode_to_vec();
    let signature = signer.sign_message(&signed_message(&body)).to_vec();
    SignedEntry { body, signature }.encode_to_vec()
}

/// The message a committee-change approval signs.
pub fn config_message(origin: &str, committee: &[u8]) -> Vec<u8> {
    let mut m = CONFIG_DOMAIN.to_vec();
    m.extend_from_slice(origin.as_bytes());
    m.push(0);
    m.extend_from_slice(committee);
    m
}

/// A member's approval of an encoded committee for a [`pb::ConfigChange`].
pub fn approve_committee(key: &NodeKey, origin: &str, committee: &[u8]) -> pb::Approval {
    pb::Approval {
        member: key.name().to_owned(),
        signature: key.sign_raw(&config_message(origin, committee)).to_vec(),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
