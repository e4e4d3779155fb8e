//! The ceremony transcript: every broadcast of the key generation, chained by hash, the
//! resulting threshold key, and every party's Ed25519 signature over the chain head and the key.
//! [`verify`] is what `medtech-ceremony verify TRANSCRIPT` runs.
//!
//! ```json
//! { "format": "medtech-ceremony-transcript/6",
//!   "parameters": { "bits": 2048, "parties": 5, "threshold": 3, "session": "…",
//!                   "batch": 32768, "biprime_reps": 150 },
//!   "identities": [ { "party": 1, "ed25519": "…" }, … ],
//!   "earlier_batches": [ "…hash of each broadcast of the batches before the accepted one…" ],
//!   "broadcasts": [ "…hex of each broadcast of the accepted batch and the key stage…", … ],
//!   "transcript_hash": "…", "threshold_key": "…", "key_fingerprint": "…",
//!   "signatures": [ { "party": 1, "signature": "…" }, … ] }
//! ```
//!
//! The chain: `h₀ = SHA-256("medtech-ceremony/v1/transcript" ‖ canonical parameters ‖ identity
//! keys)`, `h_{i+1} = SHA-256(h_i ‖ H(m_i))` over every broadcast of the ceremony in round order,
//! where `H(m) = SHA-256("medtech-ceremony/v1/message" ‖ m)`; batches before the accepted one are
//! kept as their `H(m)` only. Each party signs
//! `"medtech-ceremony/v1/signature" ‖ h_final ‖ key fingerprint`.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use medtech_threshold::dkg::verify::replay;
use medtech_threshold::dkg::{Message, Parameters, Round};
use medtech_threshold::ThresholdPublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{unhex, Error, Result};

/// The format tag of a transcript.
pub const FORMAT: &str = "medtech-ceremony-transcript/6";

/// The parameters as written in a transcript.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ParameterRecord {
    /// Modulus size.
    pub bits: u32,
    /// n.
    pub parties: u16,
    /// t.
    pub threshold: u16,
    /// Session identifier, hex.
    pub session: String,
    /// Candidates per batch.
    pub batch: usize,
    /// Biprimality repetitions.
    pub biprime_reps: u32,
}

impl ParameterRecord {
    /// From the protocol's parameters.
    pub fn of(p: &Parameters) -> Self {
        ParameterRecord {
            bits: p.bits(),
            parties: p.parties(),
            threshold: p.threshold(),
            session: hex::encode(p.session()),
            batch: p.batch(),
            biprime_reps: p.biprime_reps(),
        }
    }

    /// Back to the protocol's parameters (validated).
    pub fn parameters(&self) -> Result<Parameters> {
        let session: [u8; 32] = unhex("session", &self.session)?
            .try_into()
            .map_err(|_| Error::format("parameters", "session must be 32 bytes"))?;
        Ok(
            Parameters::new(self.bits, self.parties, self.threshold, session)?
                .with_batch(self.batch)?
                .with_biprime_reps(self.biprime_reps)?,
        )
    }
}

/// One party's identity key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Member index.
    pub party: u16,
    /// Ed25519 public key, hex.
    pub ed25519: String,
}

/// One party's signature.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    /// Member index.
    pub party: u16,
    /// Ed25519 signature, hex.
    pub signature: String,
}

/// A ceremony transcript.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Transcript {
    /// [`FORMAT`].
    pub format: String,
    /// The parameters.
    pub parameters: ParameterRecord,
    /// The parties' identity keys.
    pub identities: Vec<Identity>,
    /// Hashes (hex) of the broadcasts of the candidate batches before the accepted one and of
    /// the accepted batch's sieve products, in order: chained but not kept (they decided nothing
    /// about the key, and a 2048-bit batch's sieve products are about 13 MB).
    #[serde(default)]
    pub earlier_batches: Vec<String>,
    /// Every broadcast of the accepted batch and of the key stage, hex, in round order.
    pub broadcasts: Vec<String>,
    /// Head of the hash chain, hex.
    pub transcript_hash: String,
    /// The threshold key (`ThresholdPublicKey::to_bytes`), hex.
    pub threshold_key: String,
    /// Its fingerprint, hex.
    pub key_fingerprint: String,
    /// Every party's signature.
    pub signatures: Vec<SignatureRecord>,
}

/// SHA-256 of one encoded message: what the chain links.
pub fn message_hash(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"medtech-ceremony/v1/message");
    h.update(bytes);
    h.finalize().into()
}

fn chain(params: &ParameterRecord, identities: &[Identity], hashes: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"medtech-ceremony/v1/transcript");
    h.update(serde_json::to_vec(params).unwrap_or_default());
    for id in identities {
        h.update(id.party.to_be_bytes());
        h.update(id.ed25519.as_bytes());
    }
    let mut head: [u8; 32] = h.finalize().into();
    for m in hashes {
        let mut h = Sha256::new();
        h.update(head);
        h.update(m);
        head = h.finalize().into();
    }
    head
}

pub(crate) fn signed_bytes(head: &[u8; 32], fingerprint: &[u8; 32]) -> Vec<u8> {
    let mut b = b"medtech-ceremony/v1/signature".to_vec();
    b.extend_from_slice(head);
    b.extend_from_slice(fingerprint);
    b
}

impl Transcript {
    /// Builds and signs a transcript. `signers[i]` is party `i + 1`'s identity key (in a
    /// multi-host ceremony each party signs on its own host; here they are passed together).
    pub fn build(
        params: &Parameters,
        broadcasts: &[Message],
        key: &ThresholdPublicKey,
        signers: &[SigningKey],
    ) -> Self {
        let identities: Vec<Identity> = signers
            .iter()
            .enumerate()
            .map(|(i, s)| Identity {
                party: i as u16 + 1,
                ed25519: hex::encode(s.verifying_key().as_bytes()),
            })
            .collect();
        let mut t = Self::build_with(params, broadcasts, key, identities, Vec::new());
        debug_assert!(t.signatures.is_empty());
        let head: [u8; 32] = hex::decode(&t.transcript_hash)
            .ok()
            .and_then(|h| h.try_into().ok())
            .unwrap_or([0; 32]);
        let to_sign = signed_bytes(&head, &key.fingerprint());
        t.signatures = signers
            .iter()
            .enumerate()
            .map(|(i, s)| SignatureRecord {
                party: i as u16 + 1,
                signature: hex::encode(s.sign(&to_sign).to_bytes()),
            })
            .collect();
        t
    }

    /// A transcript with the given identities and signatures (collected from the parties over
    /// the network); the hash chain is computed here.
    pub fn build_with(
        params: &Parameters,
        broadcasts: &[Message],
        key: &ThresholdPublicKey,
        identities: Vec<Identity>,
        signatures: Vec<SignatureRecord>,
    ) -> Self {
        let (earlier, kept) = split_batches(broadcasts);
        Self::build_from_parts(params, earlier, &kept, key, identities, signatures)
    }

    /// As [`Transcript::build_with`], with the earlier batches already reduced to their hashes
    /// (how `join` keeps its memory flat across batches).
    pub fn build_from_parts(
        params: &Parameters,
        earlier: Vec<[u8; 32]>,
        kept: &[&Message],
        key: &ThresholdPublicKey,
        identities: Vec<Identity>,
        signatures: Vec<SignatureRecord>,
    ) -> Self {
        let parameters = ParameterRecord::of(params);
        let mut hashes: Vec<[u8; 32]> = earlier.clone();
        let kept_bytes: Vec<Vec<u8>> = kept.iter().map(|m| m.to_bytes()).collect();
        hashes.extend(kept_bytes.iter().map(|b| message_hash(b)));
        let head = chain(&parameters, &identities, &hashes);
        Transcript {
            format: FORMAT.into(),
            parameters,
            identities,
            earlier_batches: earlier.iter().map(hex::encode).collect(),
            broadcasts: kept_bytes.iter().map(hex::encode).collect(),
            transcript_hash: hex::encode(head),
            threshold_key: hex::encode(key.to_bytes()),
            key_fingerprint: hex::encode(key.fingerprint()),
            signatures,
        }
    }
}

/// Splits a ceremony's broadcasts (in round order) into the hashes of the batches before the
/// last one and of the last batch's sieve products, and the remaining messages of the last batch
/// and the key stage.
pub fn split_batches(broadcasts: &[Message]) -> (Vec<[u8; 32]>, Vec<&Message>) {
    let last = broadcasts
        .iter()
        .filter(|m| m.round < Round::KeyShares)
        .map(|m| m.batch)
        .max()
        .unwrap_or(0);
    let mut earlier = Vec::new();
    let mut kept = Vec::new();
    for m in broadcasts {
        // The sieve products (M2) are the bulk of a batch (three field elements per candidate and
        // group from each product party); the opened moduli (M4) say which candidates survived,
        // so the verifier does not need them.
        if (m.round < Round::KeyShares && m.batch < last) || m.round == Round::SieveProducts {
            earlier.push(message_hash(&m.to_bytes()));
        } else {
            kept.push(m);
        }
    }
    (earlier, kept)
}

/// One check of the verification and its outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Short name.
    pub name: &'static str,
    /// Passed?
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// The verdict of [`verify`].
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The verified key's fingerprint, when everything passed.
    pub key_fingerprint: Option<String>,
}

impl Verdict {
    /// Did every check pass?
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// `Ok` if every check passed, else an error about `what` listing the failed checks.
    pub fn require(&self, what: &str) -> Result<()> {
        if self.ok() {
            return Ok(());
        }
        let failed: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        Err(Error::format(
            what,
            format!("does not verify: {}", failed.join("; ")),
        ))
    }
}

/// Parses a versioned transcript: JSON of type `T` whose `format` field (read by `of`) is
/// `format`.
pub(crate) fn parse_format<T: serde::de::DeserializeOwned>(
    json: &[u8],
    format: &str,
    of: impl Fn(&T) -> &str,
) -> Result<T> {
    let t: T =
        serde_json::from_slice(json).map_err(|e| Error::format("transcript", e.to_string()))?;
    if of(&t) != format {
        return Err(Error::format(
            "transcript",
            format!("unsupported format {:?}", of(&t)),
        ));
    }
    Ok(t)
}

/// Verifies a transcript offline: format and parameters; that the hash chain recomputes; every
/// party's signature (against `pinned` identity keys when given); a full public replay of the
/// protocol whose derived key must equal the transcript's key (and `expected_key`, when given).
pub fn verify(
    json: &[u8],
    pinned: Option<&[Identity]>,
    expected_key: Option<&ThresholdPublicKey>,
) -> Verdict {
    let mut checks = Vec::new();
    let mut push = |name, r: Result<String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        checks.push(Check { name, ok, detail });
        ok
    };
    let t = match parse_format::<Transcript>(json, FORMAT, |t| &t.format) {
        Ok(t) => {
            push("format", Ok(FORMAT.to_string()));
            t
        }
        Err(e) => {
            push("format", Err(e));
            return Verdict {
                checks,
                key_fingerprint: None,
            };
        }
    };
    let params = t.parameters.parameters();
    let params_ok = push(
        "parameters",
        params
            .as_ref()
            .map(|p| {
                format!(
                    "{}-bit modulus, n = {}, t = {}, {} biprimality repetitions",
                    p.bits(),
                    p.parties(),
                    p.threshold(),
                    p.biprime_reps()
                )
            })
            .map_err(|e| Error::format("parameters", e.to_string())),
    );
    let decoded: Result<Vec<(Vec<u8>, Message)>> = t
        .broadcasts
        .iter()
        .map(|h| {
            let b = unhex("broadcast", h)?;
            let m = Message::from_bytes(&b)?;
            Ok((b, m))
        })
        .collect();
    let (raw, messages): (Vec<Vec<u8>>, Vec<Message>) = match decoded {
        Ok(v) => v.into_iter().unzip(),
        Err(e) => {
            push("messages", Err(e));
            (Vec::new(), Vec::new())
        }
    };
    let earlier: Result<Vec<[u8; 32]>> = t
        .earlier_batches
        .iter()
        .map(|h| {
            unhex("earlier batch hash", h)?
                .try_into()
                .map_err(|_| Error::format("transcript", "an earlier-batch hash is not 32 bytes"))
        })
        .collect();
    let mut hashes = match earlier {
        Ok(h) => h,
        Err(e) => {
            push("messages", Err(e));
            Vec::new()
        }
    };
    hashes.extend(raw.iter().map(|b| message_hash(b)));
    let head = chain(&t.parameters, &t.identities, &hashes);
    push(
        "hash chain",
        if hex::encode(head) == t.transcript_hash {
            Ok(format!(
                "{} broadcasts, head {}",
                raw.len(),
                &t.transcript_hash[..16.min(t.transcript_hash.len())]
            ))
        } else {
            Err(Error::format(
                "transcript",
                "the hash chain does not recompute to transcript_hash",
            ))
        },
    );
    let key = unhex("threshold key", &t.threshold_key)
        .and_then(|b| Ok(ThresholdPublicKey::from_bytes(&b)?));
    let key_ok = push(
        "threshold key",
        key.as_ref()
            .map_err(|e| Error::format("threshold key", e.to_string()))
            .and_then(|k| {
                if hex::encode(k.fingerprint()) == t.key_fingerprint {
                    Ok(format!(
                        "{}-bit N, fingerprint {}",
                        k.public_key().bits(),
                        &t.key_fingerprint[..16]
                    ))
                } else {
                    Err(Error::format("threshold key", "fingerprint does not match"))
                }
            }),
    );
    let sigs = (|| -> Result<String> {
        let key = key
            .as_ref()
            .map_err(|_| Error::format("signatures", "no valid key to sign"))?;
        let n = usize::from(t.parameters.parties);
        if t.identities.len() != n || t.signatures.len() != n {
            return Err(Error::format(
                "signatures",
                format!("expected {n} identities and {n} signatures"),
            ));
        }
        if let Some(pinned) = pinned {
            if pinned != t.identities.as_slice() {
                return Err(Error::format(
                    "signatures",
                    "identity keys differ from the pinned ones",
                ));
            }
        }
        let to_sign = signed_bytes(&head, &key.fingerprint());
        for (k, (id, sig)) in t.identities.iter().zip(&t.signatures).enumerate() {
            let party = k as u16 + 1;
            if id.party != party || sig.party != party {
                return Err(Error::format(
                    "signatures",
                    "identities and signatures must be in party order",
                ));
            }
            let vk: [u8; 32] = unhex("identity", &id.ed25519)?
                .try_into()
                .map_err(|_| Error::format("identity", "must be 32 bytes"))?;
            let vk = VerifyingKey::from_bytes(&vk).map_err(|_| {
                Error::format("identity", format!("party {party}: not a valid key"))
            })?;
            let s: [u8; 64] = unhex("signature", &sig.signature)?
                .try_into()
                .map_err(|_| Error::format("signature", "must be 64 bytes"))?;
            vk.verify(&to_sign, &Signature::from_bytes(&s))
                .map_err(|_| {
                    Error::format(
                        "signatures",
                        format!("party {party}'s signature does not verify"),
                    )
                })?;
        }
        Ok(format!(
            "all {n} parties signed{}",
            if pinned.is_some() {
                " with their pinned keys"
            } else {
                ""
            }
        ))
    })();
    push("signatures", sigs);
    let mut fingerprint = None;
    if params_ok && key_ok {
        let replayed = (|| -> Result<String> {
            let p = params
                .as_ref()
                .map_err(|e| Error::format("parameters", e.to_string()))?;
            let v = replay(p, &messages)?;
            let key = key
                .as_ref()
                .map_err(|e| Error::format("threshold key", e.to_string()))?;
            if v.key != *key {
                return Err(Error::format(
                    "replay",
                    "the broadcasts determine a different key than the transcript states",
                ));
            }
            if let Some(expected) = expected_key {
                if v.key != *expected {
                    return Err(Error::format(
                        "replay",
                        "the transcript's key is not the published key",
                    ));
                }
            }
            fingerprint = Some(hex::encode(v.key.fingerprint()));
            Ok(format!(
                "{} batches, {} moduli opened, {} tested for biprimality; N has no prime factor below 2^16; θ and all {} verification keys recomputed",
                v.batches, v.moduli_opened, v.moduli_tested, t.parameters.parties
            ))
        })();
        push("replay", replayed);
    }
    Verdict {
        checks,
        key_fingerprint: fingerprint,
    }
}
