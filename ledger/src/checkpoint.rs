//! Checkpoints: `(origin, size, root)` of the Merkle log in the C2SP `tlog-checkpoint` format,
//! signed as C2SP signed notes with Ed25519, and cosigned by the committee. A checkpoint counts
//! once `t` of the `n` members have signed it.
//!
//! Note format (C2SP `signed-note`): the body (`<origin>\n<size>\n<base64 root>\n`), an empty
//! line, then one line per signature: `— <name> <base64(key ID ‖ signature)>\n`, where the key ID
//! is the first 4 bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)` (0x01: Ed25519) and the
//! signature is over the body bytes.
//!
//! An auditor holding an old checkpoint checks that a newer one extends it with a consistency
//! proof ([`verify_extends`]); two checkpoints of the same origin and size with different roots
//! are equivocation, and every member that signed both is named ([`equivocators`]).

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::merkle::{verify_consistency, Hash, ProofError};

/// Why a checkpoint or note was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text is not a well-formed checkpoint or signed note.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// Fewer than `t` distinct committee members validly signed it.
    #[error("checkpoint has {valid} valid committee signatures; {needed} needed")]
    NoQuorum {
        /// Distinct valid committee signatures.
        valid: usize,
        /// The threshold t.
        needed: usize,
    },
    /// The newer checkpoint does not extend the older one.
    #[error("checkpoint does not extend the older one: {0}")]
    NotAnExtension(ProofError),
    /// Different origins.
    #[error("checkpoints of different logs ({0} vs {1})")]
    OriginMismatch(String, String),
}

/// A log checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's permanent identity, e.g. `medtech-chain.example/committee-1`.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// The Merkle root at that size.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a note body.
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::Malformed(m.to_owned());
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("missing origin"))?;
        let size_text = lines.next().ok_or_else(|| bad("missing size"))?;
        let size = size_text
            .parse::<u64>()
            .map_err(|_| bad("size is not a decimal integer"))?;
        // One spelling per size ("+5" and "005" parse too): the body is signed as written.
        if size.to_string() != size_text {
            return Err(bad("size is not in canonical decimal form"));
        }
        let root_b64 = lines.next().ok_or_else(|| bad("missing root"))?;
        let root: Hash = B64
            .decode(root_b64)
            .map_err(|_| bad("root is not base64"))?
            .try_into()
            .map_err(|_| bad("root is not 32 bytes"))?;
        // C2SP allows extension lines; we write none and accept none, so a body is canonical.
        if lines.next() != Some("") || lines.next().is_some() {
            return Err(bad("unexpected lines after the root"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// A committee member's public signing identity, pinned in the committee configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The member's name in notes (e.g. `hospital-a`).
    pub name: String,
    /// Its Ed25519 public key.
    pub key: VerifyingKey,
}

impl NodeIdentity {
    /// Checks an Ed25519 signature by this member over `message`.
    pub(crate) fn verify_raw(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// C2SP key ID: `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[..4]`.
    pub fn key_id(&self) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update([0x0A, 0x01]);
        h.update(self.key.as_bytes());
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }
}

/// A member's signing key (secret: redacted in `Debug`, zeroized on drop by ed25519-dalek).
pub struct NodeKey {
    name: String,
    key: SigningKey,
}

impl NodeKey {
    /// A fresh key.
    pub fn generate<R: RngCore + CryptoRng>(name: &str, rng: &mut R) -> Self {
        NodeKey {
            name: name.to_owned(),
            key: SigningKey::generate(rng),
        }
    }

    /// A key from its 32-byte secret (as stored in a node's key file).
    pub fn from_secret_bytes(name: &str, secret: &[u8; 32]) -> Self {
        NodeKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte secret, for writing the node's key file (wiped when dropped).
    pub fn to_secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.key.to_bytes())
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs `message` (callers add their own domain separation; see [`crate::entry`]).
    pub(crate) fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Signs an API session token's claims: Ed25519 over [`API_TOKEN_DOMAIN`] ‖ `claims`. The
    /// domain keeps a token signature from ever verifying as an entry (whose messages start with
    /// `medtech-ledger/entry/v1\0`) or as a checkpoint (whose bodies start with the origin).
    pub fn sign_api_token(&self, claims: &[u8]) -> [u8; 64] {
        self.key.sign(&api_token_message(claims)).to_bytes()
    }

    /// The signature line this key puts on `checkpoint`.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> NoteSignature {
        let id = self.identity();
        NoteSignature {
            key_id: id.key_id(),
            name: id.name,
            signature: self.key.sign(checkpoint.body().as_bytes()).to_bytes(),
        }
    }

    /// The public identity.
    pub fn identity(&self) -> NodeIdentity {
        NodeIdentity {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey {{ name: {:?}, key: <redacted> }}", self.name)
    }
}

/// Domain separator of API session-token signatures.
pub const API_TOKEN_DOMAIN: &[u8] = b"medtech-api-token/v1\0";

fn api_token_message(claims: &[u8]) -> Vec<u8> {
    let mut m = API_TOKEN_DOMAIN.to_vec();
    m.extend_from_slice(claims);
    m
}

/// Whether `signature` is `member`'s signature on API token `claims`
/// (see [`NodeKey::sign_api_token`]).
pub fn verify_api_token(member: &NodeIdentity, claims: &[u8], signature: &[u8; 64]) -> bool {
    member
        .key
        .verify(
            &api_token_message(claims),
            &ed25519_dalek::Signature::from_bytes(signature),
        )
        .is_ok()
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// Signer name.
    pub name: String,
    /// Key ID.
    pub key_id: [u8; 4],
    /// Ed25519 signature over the body.
    pub signature: [u8; 64],
}

/// A checkpoint with its signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

impl SignedCheckpoint {
    /// An unsigned checkpoint.
    pub fn new(checkpoint: Checkpoint) -> Self {
        SignedCheckpoint {
            checkpoint,
            signatures: Vec::new(),
        }
    }

    /// Adds `key`'s signature (replacing an earlier one by the same key).
    pub fn sign(&mut self, key: &NodeKey) {
        let line = key.sign_checkpoint(&self.checkpoint);
        self.signatures
            .retain(|s| !(s.name == line.name && s.key_id == line.key_id));
        self.signatures.push(line);
    }

    /// The committee members (by name) whose signature on this checkpoint is valid.
    pub fn valid_signers(&self, committee: &[NodeIdentity]) -> BTreeSet<String> {
        let body = self.checkpoint.body();
        let mut out = BTreeSet::new();
        for s in &self.signatures {
            let Some(member) = committee
                .iter()
                .find(|m| m.name == s.name && m.key_id() == s.key_id)
            else {
                continue; // unknown signers are ignored, as C2SP prescribes
            };
            if member
                .key
                .verify_strict(body.as_bytes(), &Signature::from_bytes(&s.signature))
                .is_ok()
            {
                out.insert(member.name.clone());
            }
        }
        out
    }

    /// Checks that at least `threshold` distinct committee members validly signed it.
    pub fn verify_quorum(
        &self,
        committee: &[NodeIdentity],
        threshold: usize,
    ) -> Result<BTreeSet<String>, CheckpointError> {
        let signers = self.valid_signers(committee);
        if signers.len() < threshold {
            return Err(CheckpointError::NoQuorum {
                valid: signers.len(),
                needed: threshold,
            });
        }
        Ok(signers)
    }

    /// The signed note text.
    pub fn to_note(&self) -> String {
        let mut s = self.checkpoint.body();
        s.push('\n');
        for sig in &self.signatures {
            let mut blob = sig.key_id.to_vec();
            blob.extend_from_slice(&sig.signature);
            s.push_str(&format!("— {} {}\n", sig.name, B64.encode(blob)));
        }
        s
    }

    /// Parses a signed note (signatures are not checked here; see [`Self::verify_quorum`]).
    pub fn from_note(note: &str) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::Malformed(m.to_owned());
        if note.len() > 1 << 20 {
            return Err(bad("note larger than 1 MiB"));
        }
        let (body, sigs) = note
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let checkpoint = Checkpoint::parse_body(&format!("{body}\n"))?;
        let sigs = sigs
            .strip_suffix('\n')
            .ok_or_else(|| bad("note must end with a newline"))?;
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            let rest = line
                .strip_prefix("— ")
                .ok_or_else(|| bad("signature line must start with an em dash"))?;
            let (name, blob) = rest
                .rsplit_once(' ')
                .ok_or_else(|| bad("signature line needs a name and a signature"))?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(bad("signer name must be non-empty without spaces"));
            }
            let blob = B64
                .decode(blob)
                .map_err(|_| bad("signature is not base64"))?;
            if blob.len() != 68 {
                return Err(bad("an Ed25519 signature line carries 4 + 64 bytes"));
            }
            let mut key_id = [0u8; 4];
            key_id.copy_from_slice(&blob[..4]);
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&blob[4..]);
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id,
                signature,
            });
        }
        if signatures.is_empty() {
            return Err(bad("a signed note needs at least one signature"));
        }
        Ok(SignedCheckpoint {
            checkpoint,
            signatures,
        })
    }
}

/// Checks that `new` extends `old` (same origin; the consistency proof from `old.size` to
/// `new.size` leads from `old.root` to `new.root`).
pub fn verify_extends(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &[Hash],
) -> Result<(), CheckpointError> {
    if old.origin != new.origin {
        return Err(CheckpointError::OriginMismatch(
            old.origin.clone(),
            new.origin.clone(),
        ));
    }
    verify_consistency(old.size, new.size, proof, &old.root, &new.root)
        .map_err(CheckpointError::NotAnExtension)
}

/// Members that validly signed two conflicting checkpoints of the same log and size: proof of
/// equivocation, to be recorded against them. Empty when the checkpoints do not conflict.
pub fn equivocators(
    a: &SignedCheckpoint,
    b: &SignedCheckpoint,
    committee: &[NodeIdentity],
) -> Vec<String> {
    let (ca, cb) = (&a.checkpoint, &b.checkpoint);
    if ca.origin != cb.origin || ca.size != cb.size || ca.root == cb.root {
        return Vec::new();
    }
    a.valid_signers(committee)
        .intersection(&b.valid_signers(committee))
        .cloned()
        .collect()
}
