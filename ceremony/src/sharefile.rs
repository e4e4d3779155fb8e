//! Key-share files: one member's [`KeyShare`] encrypted at rest.
//!
//! The share's bytes (`KeyShare::to_secret_bytes`) are sealed with ChaCha20-Poly1305 under a
//! 256-bit key that comes either from a **key file** (32 random bytes, hex, mode 0600 — for
//! rehearsals and for operators who keep the key in a hardware-backed store) or from a
//! **passphrase** through Argon2id (64 MiB, 3 passes). The associated data binds the format, the
//! member index and the key fingerprint, so a file cannot be passed off as another member's or
//! another key's. The plaintext share is never printed or logged; buffers holding it are wiped.
//!
//! ```json
//! { "format": "medtech-key-share/1", "party": 2, "key_fingerprint": "…",
//!   "kdf": { "alg": "argon2id", "salt": "…", "m_kib": 65536, "t": 3, "p": 1 } | { "alg": "key-file" },
//!   "aead": "chacha20poly1305", "nonce": "…", "ciphertext": "…" }
//! ```

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use medtech_threshold::{KeyShare, ThresholdPublicKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{unhex, Error, Result};

/// The format tag of a key-share file.
pub const FORMAT: &str = "medtech-key-share/1";

/// What unlocks a share file.
pub enum Unlock<'a> {
    /// A 32-byte key (from a key file).
    Key(&'a [u8; 32]),
    /// A passphrase, stretched with Argon2id.
    Passphrase(&'a [u8]),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "alg", rename_all = "kebab-case")]
enum Kdf {
    Argon2id {
        salt: String,
        m_kib: u32,
        t: u32,
        p: u32,
    },
    KeyFile,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareFile {
    format: String,
    party: u16,
    key_fingerprint: String,
    kdf: Kdf,
    aead: String,
    nonce: String,
    ciphertext: String,
}

fn aad(party: u16, fingerprint: &[u8]) -> Vec<u8> {
    let mut a = FORMAT.as_bytes().to_vec();
    a.extend_from_slice(&party.to_be_bytes());
    a.extend_from_slice(fingerprint);
    a
}

fn derive(kdf: &Kdf, unlock: &Unlock<'_>) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    match (kdf, unlock) {
        (Kdf::KeyFile, Unlock::Key(k)) => key.copy_from_slice(&k[..]),
        (Kdf::Argon2id { salt, m_kib, t, p }, Unlock::Passphrase(pw)) => {
            let salt = unhex("share file salt", salt)?;
            if !(8 * 1024..=1024 * 1024).contains(m_kib) || !(1..=10).contains(t) || *p != 1 {
                return Err(Error::format(
                    "share file",
                    "Argon2id parameters out of range",
                ));
            }
            let params = argon2::Params::new(*m_kib, *t, *p, Some(32))
                .map_err(|e| Error::format("share file", e.to_string()))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(pw, &salt, &mut key[..])
                .map_err(|e| Error::format("share file", e.to_string()))?;
        }
        (Kdf::KeyFile, Unlock::Passphrase(_)) => {
            return Err(Error::format(
                "share file",
                "sealed with a key file, not a passphrase",
            ))
        }
        (Kdf::Argon2id { .. }, Unlock::Key(_)) => {
            return Err(Error::format(
                "share file",
                "sealed with a passphrase, not a key file",
            ))
        }
    }
    Ok(key)
}

/// Seals `share` (a share of `key`) into the JSON of a share file.
pub fn seal(share: &KeyShare, key: &ThresholdPublicKey, unlock: &Unlock<'_>) -> Result<String> {
    if share.key_fingerprint() != key.fingerprint() {
        return Err(medtech_threshold::Error::Mismatch("key share belongs to another key").into());
    }
    let kdf = match unlock {
        Unlock::Key(_) => Kdf::KeyFile,
        Unlock::Passphrase(_) => {
            let mut salt = [0u8; 16];
            OsRng.fill_bytes(&mut salt);
            Kdf::Argon2id {
                salt: hex::encode(salt),
                m_kib: 64 * 1024,
                t: 3,
                p: 1,
            }
        }
    };
    let k = derive(&kdf, unlock)?;
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let party = share.index().0;
    let plain = share.to_secret_bytes();
    let ct = ChaCha20Poly1305::new(Key::from_slice(&k[..]))
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad(party, &key.fingerprint()),
            },
        )
        .map_err(|_| Error::Decrypt)?;
    let file = ShareFile {
        format: FORMAT.into(),
        party,
        key_fingerprint: hex::encode(key.fingerprint()),
        kdf,
        aead: "chacha20poly1305".into(),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ct),
    };
    serde_json::to_string_pretty(&file).map_err(|e| Error::format("share file", e.to_string()))
}

/// Opens a share file's JSON for `key`.
pub fn open(json: &[u8], key: &ThresholdPublicKey, unlock: &Unlock<'_>) -> Result<KeyShare> {
    let file: ShareFile =
        serde_json::from_slice(json).map_err(|e| Error::format("share file", e.to_string()))?;
    if file.format != FORMAT || file.aead != "chacha20poly1305" {
        return Err(Error::format(
            "share file",
            format!("unsupported format {:?}", file.format),
        ));
    }
    if unhex("share file fingerprint", &file.key_fingerprint)? != key.fingerprint() {
        return Err(Error::format(
            "share file",
            "belongs to another threshold key",
        ));
    }
    let nonce = unhex("share file nonce", &file.nonce)?;
    if nonce.len() != 12 {
        return Err(Error::format("share file", "nonce must be 12 bytes"));
    }
    let ct = unhex("share file ciphertext", &file.ciphertext)?;
    let k = derive(&file.kdf, unlock)?;
    let plain = Zeroizing::new(
        ChaCha20Poly1305::new(Key::from_slice(&k[..]))
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad(file.party, &key.fingerprint()),
                },
            )
            .map_err(|_| Error::Decrypt)?,
    );
    let share = KeyShare::from_secret_bytes(&plain, key)?;
    if share.index().0 != file.party {
        return Err(Error::format(
            "share file",
            "member index does not match its contents",
        ));
    }
    Ok(share)
}

/// Reads a key file: 64 hex digits (surrounding whitespace ignored).
pub fn parse_key_file(bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let text = Zeroizing::new(String::from_utf8_lossy(bytes).trim().to_string());
    let raw = Zeroizing::new(unhex("key file", &text)?);
    if raw.len() != 32 {
        return Err(Error::format(
            "key file",
            "must hold 32 bytes (64 hex digits)",
        ));
    }
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&raw);
    Ok(k)
}

/// A fresh key file's contents.
pub fn new_key_file() -> (Zeroizing<[u8; 32]>, Zeroizing<String>) {
    let mut k = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut k[..]);
    let text = Zeroizing::new(format!("{}\n", hex::encode(&k[..])));
    (k, text)
}

/// Destroys a share file (and its key file) that a re-sharing replaced, after checking that it
/// did: `transcript` must verify with `new_key` as its new key, and the share file must belong
/// to the key that transcript re-shared. Each file is overwritten in place with random bytes of
/// its length, synced, and removed. This defeats reading the file back through the file system
/// only: journaling, copy-on-write snapshots, SSD wear levelling and backups can keep old
/// blocks (docs/ceremony.md, "What leaving does and does not give").
pub fn destroy_replaced_share(
    share_json: &std::path::Path,
    share_key: Option<&std::path::Path>,
    transcript: &[u8],
    new_key: &ThresholdPublicKey,
    config_json: &[u8],
) -> Result<()> {
    crate::reshare::verify_reshare(transcript, Some(new_key)).require("re-sharing transcript")?;
    let t: crate::reshare::ReshareTranscript = serde_json::from_slice(transcript)
        .map_err(|e| Error::format("re-sharing transcript", e.to_string()))?;
    // The one irreversible command: the transcript must be of the re-sharing this operator
    // took part in (its own configuration, which pins every participant's identity key and
    // the old key), not merely some verifying re-sharing of the same key.
    let config: crate::reshare::ReshareConfig = serde_json::from_slice(config_json)
        .map_err(|e| Error::format("reshare config", e.to_string()))?;
    if t.config != config {
        return Err(Error::format(
            "re-sharing transcript",
            "is not of the re-sharing this configuration describes; nothing destroyed",
        ));
    }
    let file: ShareFile = serde_json::from_slice(&crate::error::read(share_json)?)
        .map_err(|e| Error::format("share file", e.to_string()))?;
    if !file
        .key_fingerprint
        .eq_ignore_ascii_case(&t.config.key.fingerprint)
    {
        return Err(Error::format(
            share_json.display().to_string(),
            "is not a share of the key this re-sharing replaced; nothing destroyed",
        ));
    }
    for path in std::iter::once(share_json).chain(share_key) {
        overwrite_and_remove(path)?;
    }
    Ok(())
}

fn overwrite_and_remove(path: &std::path::Path) -> Result<()> {
    use std::io::Write;
    let io = |e| Error::io(path, e);
    let len = std::fs::metadata(path).map_err(io)?.len();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut left = len;
    let mut block = Zeroizing::new([0u8; 4096]);
    while left > 0 {
        OsRng.fill_bytes(&mut block[..]);
        // `left` is below 4096 whenever it is the smaller, so the cast cannot truncate.
        let n = left.min(4096) as usize;
        f.write_all(&block[..n]).map_err(io)?;
        left -= n as u64;
    }
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::remove_file(path).map_err(io)
}

/// Refuses an output directory that already holds a share file (`share.json` or `share.key`):
/// a run writing there would replace a share that may still be the only copy (for example the
/// current share a re-sharing deals from). Checked before the run starts.
pub(crate) fn refuse_share_files(out: &std::path::Path) -> Result<()> {
    for f in [
        "share.json",
        "share.key",
        "pending/share.json",
        "pending/share.key",
    ] {
        if out.join(f).exists() {
            return Err(Error::format(
                out.display().to_string(),
                format!("already holds a share file ({f}); choose another --out"),
            ));
        }
    }
    Ok(())
}

/// Writes a member's outputs to `out`: `threshold-key.json` and, when it holds one, its sealed
/// `share.json` (with a new `share.key`, mode 0600, unless `passphrase` seals it).
pub(crate) fn write_key_and_share(
    out: &std::path::Path,
    key: &ThresholdPublicKey,
    share: Option<&KeyShare>,
    passphrase: Option<&Zeroizing<String>>,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::error::write(
        &out.join("threshold-key.json"),
        &serde_json::to_vec_pretty(&crate::files::KeyFile::of(key))
            .map_err(|e| Error::format("key", e.to_string()))?,
        false,
    )?;
    if let Some(share) = share {
        let sealed = match passphrase {
            Some(pw) => seal(share, key, &Unlock::Passphrase(pw.as_bytes()))?,
            None => {
                let (k, text) = new_key_file();
                crate::error::write(&out.join("share.key"), text.as_bytes(), true)?;
                seal(share, key, &Unlock::Key(&k))?
            }
        };
        crate::error::write(&out.join("share.json"), sealed.as_bytes(), true)?;
    }
    Ok(())
}

/// Where (inside `--out`) a member keeps its sealed share, and the key, between the protocol's
/// end and the last transcript signature (issue 30 §5). A member that never receives every
/// signature — the last signer may withhold its own while holding the finished transcript —
/// keeps its share here instead of losing it, and installs it with `medtech-ceremony finish`
/// once any member hands it the finished transcript.
pub const PENDING: &str = "pending";

/// Before signing: seals the share (and writes the key) in `out/pending`.
pub(crate) fn write_pending(
    out: &std::path::Path,
    key: &ThresholdPublicKey,
    share: Option<&KeyShare>,
    passphrase: Option<&Zeroizing<String>>,
) -> Result<()> {
    write_key_and_share(&out.join(PENDING), key, share, passphrase)
}

/// After every signature: writes the transcript to `out/transcript_name` and moves the pending
/// key and share into `out` (renames within one directory tree: no copy of the share is left
/// behind), then removes `out/pending`.
pub(crate) fn promote_pending(
    out: &std::path::Path,
    transcript_name: &str,
    transcript_json: &[u8],
) -> Result<()> {
    let pending = out.join(PENDING);
    // The share first, the key next, the transcript last: an interrupted promotion is
    // finished by running `finish` again (it moves what is still pending), and never leaves a
    // transcript claiming a share that is not in place.
    for f in ["share.key", "share.json", "threshold-key.json"] {
        let from = pending.join(f);
        if from.exists() {
            std::fs::rename(&from, out.join(f)).map_err(|e| Error::io(&from, e))?;
        }
    }
    crate::error::write(&out.join(transcript_name), transcript_json, false)?;
    std::fs::remove_dir(&pending).map_err(|e| Error::io(&pending, e))
}

/// `medtech-ceremony finish`: a member whose ceremony or re-sharing ended without every
/// signature, given the finished transcript later (from any member), checks it — against the
/// member's own configuration (its pinned identities) and the key in `out/pending` — and only
/// then installs the pending share. Returns the key fingerprint (hex).
pub fn finish(out: &std::path::Path, config_json: &[u8], transcript: &[u8]) -> Result<String> {
    let pending = out.join(PENDING);
    // A share in `out` that is not the pending one is never overwritten.
    for f in ["share.json", "share.key"] {
        if out.join(f).exists() && pending.join(f).exists() {
            return Err(Error::format(
                out.display().to_string(),
                format!("already holds {f} besides the pending one; nothing installed"),
            ));
        }
    }
    // An interrupted earlier `finish` may have moved the key already.
    let key_path = if pending.join("threshold-key.json").exists() {
        pending.join("threshold-key.json")
    } else {
        out.join("threshold-key.json")
    };
    let key = crate::files::load_key(&key_path)?;
    let format = |json: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.get("format").and_then(|f| f.as_str()).map(String::from))
            .unwrap_or_default()
    };
    let format = format(transcript);
    if format.starts_with(crate::reshare::TRANSCRIPT_FORMAT_PREFIX)
        && format != crate::reshare::TRANSCRIPT_FORMAT
    {
        return Err(Error::format(
            "reshare transcript",
            format!(
                "format {format:?} is not {:?}: made by another version",
                crate::reshare::TRANSCRIPT_FORMAT
            ),
        ));
    }
    let name = if format == crate::reshare::TRANSCRIPT_FORMAT {
        let config: crate::reshare::ReshareConfig = serde_json::from_slice(config_json)
            .map_err(|e| Error::format("reshare config", e.to_string()))?;
        let t: crate::reshare::ReshareTranscript = serde_json::from_slice(transcript)
            .map_err(|e| Error::format("reshare transcript", e.to_string()))?;
        if t.config != config {
            return Err(Error::format(
                "reshare transcript",
                "is not of this configuration's re-sharing",
            ));
        }
        crate::reshare::verify_reshare(transcript, Some(&key)).require("reshare transcript")?;
        "reshare-transcript.json"
    } else {
        let config: crate::net::CeremonyConfig = serde_json::from_slice(config_json)
            .map_err(|e| Error::format("ceremony config", e.to_string()))?;
        crate::transcript::verify(transcript, Some(&config.identities()), Some(&key))
            .require("transcript")?;
        "transcript.json"
    };
    promote_pending(out, name, transcript)?;
    Ok(hex::encode(key.fingerprint()))
}
