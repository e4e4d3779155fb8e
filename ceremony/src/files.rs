//! The small public files around a ceremony: the threshold key, a reviewer's challenge
//! ciphertext, and a member's partial decryption of it (`test-decrypt`).

use std::path::Path;

use medtech_threshold::{Ciphertext, PartialDecryption, Plaintext, ThresholdPublicKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{read, unhex, Error, Result};

/// `threshold-key.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// `medtech-threshold-key/1`.
    pub format: String,
    /// `ThresholdPublicKey::to_bytes`, hex.
    pub threshold_key: String,
    /// Its fingerprint, hex.
    pub fingerprint: String,
    /// Modulus size.
    pub bits: u32,
    /// n.
    pub parties: u16,
    /// t.
    pub threshold: u16,
}

impl KeyFile {
    /// For a key.
    pub fn of(key: &ThresholdPublicKey) -> Self {
        KeyFile {
            format: "medtech-threshold-key/1".into(),
            threshold_key: hex::encode(key.to_bytes()),
            fingerprint: hex::encode(key.fingerprint()),
            bits: key.public_key().bits(),
            parties: key.parties(),
            threshold: key.threshold(),
        }
    }
}

impl KeyFile {
    /// The key it holds, validated (`what` names the file in errors).
    pub fn key(&self, what: &str) -> Result<ThresholdPublicKey> {
        if self.format != "medtech-threshold-key/1" {
            return Err(Error::format(what, "unsupported format"));
        }
        let key = ThresholdPublicKey::from_bytes(&unhex("threshold key", &self.threshold_key)?)?;
        if hex::encode(key.fingerprint()) != self.fingerprint {
            return Err(Error::format(what, "fingerprint does not match the key"));
        }
        Ok(key)
    }
}

/// Loads and validates `threshold-key.json`.
pub fn load_key(path: &Path) -> Result<ThresholdPublicKey> {
    let f: KeyFile = serde_json::from_slice(&read(path)?)
        .map_err(|e| Error::format(path.display().to_string(), e.to_string()))?;
    f.key(&path.display().to_string())
}

/// A reviewer's challenge: a ciphertext of a value only the reviewer knows.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    /// `medtech-challenge/1`.
    pub format: String,
    /// The key it is encrypted under.
    pub key_fingerprint: String,
    /// The context partial decryptions are bound to, hex.
    pub context: String,
    /// The ciphertext, hex.
    pub ciphertext: String,
}

/// Encrypts a fresh random 62-bit value; returns the challenge and the value (for the reviewer
/// only).
pub fn challenge(key: &ThresholdPublicKey) -> Result<(Challenge, i64)> {
    let value = (OsRng.next_u64() >> 2) as i64;
    let c = key
        .public_key()
        .encrypt(&Plaintext::from_i64(value), &mut OsRng)?;
    let mut context = [0u8; 16];
    OsRng.fill_bytes(&mut context);
    let mut ctx = b"medtech-ceremony/test-decrypt/".to_vec();
    ctx.extend_from_slice(&context);
    Ok((
        Challenge {
            format: "medtech-challenge/1".into(),
            key_fingerprint: hex::encode(key.fingerprint()),
            context: hex::encode(ctx),
            ciphertext: hex::encode(c.to_bytes()),
        },
        value,
    ))
}

/// Loads a challenge for `key`: `(context, ciphertext)`.
pub fn load_challenge(path: &Path, key: &ThresholdPublicKey) -> Result<(Vec<u8>, Ciphertext)> {
    let c: Challenge = serde_json::from_slice(&read(path)?)
        .map_err(|e| Error::format(path.display().to_string(), e.to_string()))?;
    if c.format != "medtech-challenge/1" || c.key_fingerprint != hex::encode(key.fingerprint()) {
        return Err(Error::format(
            path.display().to_string(),
            "not a challenge for this key",
        ));
    }
    let ct = Ciphertext::from_bytes(key.public_key(), &unhex("ciphertext", &c.ciphertext)?)?;
    Ok((unhex("context", &c.context)?, ct))
}

/// One member's partial decryption of a challenge.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialFile {
    /// `medtech-partial/1`.
    pub format: String,
    /// The member.
    pub party: u16,
    /// `PartialDecryption::to_bytes`, hex.
    pub partial: String,
}

/// Loads partial-decryption files (decoding only; the combination verifies every proof).
pub fn load_partials(
    paths: &[std::path::PathBuf],
    key: &ThresholdPublicKey,
) -> Result<Vec<PartialDecryption>> {
    paths
        .iter()
        .map(|p| {
            let f: PartialFile = serde_json::from_slice(&read(p)?)
                .map_err(|e| Error::format(p.display().to_string(), e.to_string()))?;
            if f.format != "medtech-partial/1" {
                return Err(Error::format(p.display().to_string(), "unsupported format"));
            }
            Ok(PartialDecryption::from_bytes(
                key,
                &unhex("partial", &f.partial)?,
            )?)
        })
        .collect()
}
