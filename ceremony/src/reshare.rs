//! `medtech-ceremony reshare`: moving the committee's key to fresh shares or to a new committee
//! (a hospital joins or leaves) over the ceremony's transport, without a new public key.
//!
//! The protocol is [`medtech_threshold::dkg::reshare`] (Herzberg et al. refresh, Desmedt–Jajodia
//! redistribution, over the integers); this module runs it between hosts and leaves a transcript
//! anyone can check.
//!
//! * **Configuration** ([`ReshareConfig`], JSON, identical at every participant): the current
//!   threshold key (embedded), the `t` current members who deal, the new threshold, a session
//!   nonce, and the participants. A participant is a current member (`old_index`), a member of
//!   the new committee (`new_index`), or both; each has the address, TLS pins and identity key of
//!   a ceremony member (`medtech-ceremony keygen`). The session identifier is the SHA-256 of the
//!   canonical configuration.
//! * **Run**: each dealer broadcasts its Feldman commitments and sends every new member its
//!   share over the mesh (mutually authenticated TLS, pinned certificates, signed frames — the
//!   transport of `join`). A new member checks every dealing against the dealer's current
//!   verification key (a failure names the dealer) and its share against the commitments and
//!   its public range; it then broadcasts its **complaints** (R1b, usually none), every dealer
//!   broadcasts its **answers** (R1c: the disputed shares, in public), and everyone checks
//!   them — a dealer that cannot answer is named by every participant, an answered complaint
//!   repairs the run (issue 30 §1). Each of the three rounds ends with an echo round. Every
//!   participant derives the new public key from the public messages alone
//!   ([`medtech_threshold::dkg::reshare::reshared_key`]), signs the transcript head and the new
//!   key's fingerprint, and collects every participant's signature.
//! * **Outputs** in `--out`: `reshare-transcript.json` (identical everywhere), the new
//!   `threshold-key.json`, and for a new member its sealed `share.json` (with `share.key`
//!   unless a passphrase seals it).
//! * **Verification** ([`verify_reshare`], `medtech-ceremony verify`): the configuration and the
//!   old key, every dealing against the old verification keys, the new key recomputed from the
//!   dealings, the hash, and every participant's signature.
//!
//! Transcript head: `SHA-256("medtech-reshare/v1/transcript" ‖ session ‖ old fingerprint ‖
//! Σ (len ‖ dealing) in dealer order ‖ new fingerprint)`; each participant signs
//! `"medtech-ceremony/v1/signature" ‖ head ‖ new fingerprint`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, Verifier};
use medtech_threshold::dkg::reshare::{
    answer, check_public, check_test, complain, deal, receive, reshared_key, test_partial,
    ReshareParameters,
};
use medtech_threshold::dkg::{Message, Round};
use medtech_threshold::{KeyShare, PartyIndex, ThresholdPublicKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::echo::Signed;
use crate::error::{unhex, Error, Result};
use crate::files::KeyFile;
use crate::net::{member_key, Inbound, LocalSecrets, MemberConfig, Mesh};
use crate::transcript::{parse_format, signed_bytes, Check, Identity, SignatureRecord, Verdict};

/// The format tag of a re-sharing configuration.
pub const CONFIG_FORMAT: &str = "medtech-reshare-config/1";
/// The echo-round tags of the dealings, the complaints and the answers.
const ECHO_DEALINGS: u64 = 1;
const ECHO_COMPLAINTS: u64 = 2;
const ECHO_ANSWERS: u64 = 3;
const ECHO_TEST: u64 = 4;
/// The format tag of a re-sharing transcript (`/3`: the public messages include the
/// complaints and answers of R1b–R1c and the test partials of R2, and dealt constants carry
/// `max(n, n')!`).
pub const TRANSCRIPT_FORMAT: &str = "medtech-reshare-transcript/3";
/// The prefix every re-sharing transcript format shares (an older one is refused by name).
pub const TRANSCRIPT_FORMAT_PREFIX: &str = "medtech-reshare-transcript/";

/// One participant of a re-sharing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    /// Its connection and pinned identity; `member.index` is its position in the list, from 1.
    pub member: MemberConfig,
    /// Its index in the current committee, if it is a current member.
    pub old_index: Option<u16>,
    /// Its index in the new committee, if it will be a member.
    pub new_index: Option<u16>,
}

/// The configuration every participant holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReshareConfig {
    /// [`CONFIG_FORMAT`].
    pub format: String,
    /// The key being re-shared (its `threshold-key.json`).
    pub key: KeyFile,
    /// The `t` current members (old indices) who deal.
    pub dealers: Vec<u16>,
    /// `t'` of the new committee.
    pub new_threshold: u16,
    /// A nonce agreed when the configuration was written (hex).
    pub session_nonce: String,
    /// Every participant, in order.
    pub participants: Vec<Participant>,
}

impl ReshareConfig {
    /// The session identifier: SHA-256 of the canonical configuration.
    pub fn session(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"medtech-reshare/v1/session");
        h.update(serde_json::to_vec(self).unwrap_or_default());
        h.finalize().into()
    }

    /// The key being re-shared.
    pub fn old_key(&self) -> Result<ThresholdPublicKey> {
        self.key.key("reshare config key")
    }

    /// The protocol parameters, after checking the participants: listed in order, every old
    /// index a member of the current committee at most once, the new indices exactly
    /// `1..=n'`, and every dealer present.
    pub fn parameters(&self) -> Result<ReshareParameters> {
        let bad = |why: String| Error::format("reshare config", why);
        if self.format != CONFIG_FORMAT {
            return Err(bad(format!("unsupported format {:?}", self.format)));
        }
        let key = self.old_key()?;
        let mut old = Vec::new();
        let mut new = Vec::new();
        for (k, p) in self.participants.iter().enumerate() {
            if usize::from(p.member.index) != k + 1 {
                return Err(bad(
                    "participants must be listed in index order from 1".into()
                ));
            }
            if p.old_index.is_none() && p.new_index.is_none() {
                return Err(bad(format!(
                    "participant {} is neither a current nor a new member",
                    k + 1
                )));
            }
            if let Some(i) = p.old_index {
                if i == 0 || i > key.parties() || old.contains(&i) {
                    return Err(bad(format!(
                        "old index {i} is not a member of the current {}-member committee, or is listed twice",
                        key.parties()
                    )));
                }
                old.push(i);
            }
            new.extend(p.new_index);
        }
        crate::net::distinct_members(&self.members())?;
        new.sort_unstable();
        let n_new = u16::try_from(new.len()).map_err(|_| bad("too many participants".into()))?;
        if new != (1..=n_new).collect::<Vec<u16>>() {
            return Err(bad(format!(
                "the new indices must be exactly 1..={n_new}, each once; got {new:?}"
            )));
        }
        if let Some(d) = self.dealers.iter().find(|d| !old.contains(d)) {
            return Err(bad(format!("dealer {d} is not a participant")));
        }
        if usize::from(self.new_threshold) * 2 > usize::from(n_new) + 1 {
            return Err(bad(format!(
                "threshold {} of {n_new} breaks the honest majority (2t − 1 ≤ n)",
                self.new_threshold
            )));
        }
        let dealers: Vec<PartyIndex> = self.dealers.iter().map(|&d| PartyIndex(d)).collect();
        Ok(ReshareParameters::new(
            self.session(),
            &key,
            &dealers,
            n_new,
            self.new_threshold,
        )?)
    }

    /// The participant (1-based) holding old index `old`.
    pub fn participant_of_old(&self, old: u16) -> Option<u16> {
        self.participants
            .iter()
            .find(|p| p.old_index == Some(old))
            .map(|p| p.member.index)
    }

    /// The participant (1-based) taking new index `new`.
    pub fn participant_of_new(&self, new: u16) -> Option<u16> {
        self.participants
            .iter()
            .find(|p| p.new_index == Some(new))
            .map(|p| p.member.index)
    }

    fn members(&self) -> Vec<MemberConfig> {
        self.participants.iter().map(|p| p.member.clone()).collect()
    }

    /// The participants' identity keys (by participant index), as evidence lists them.
    pub fn identities(&self) -> Vec<crate::transcript::Identity> {
        self.participants
            .iter()
            .map(|p| crate::transcript::Identity {
                party: p.member.index,
                ed25519: p.member.ed25519.clone(),
            })
            .collect()
    }
}

/// The transcript of a re-sharing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReshareTranscript {
    /// [`TRANSCRIPT_FORMAT`].
    pub format: String,
    /// The configuration (with the old key).
    pub config: ReshareConfig,
    /// Every public message (encoded, hex): the dealers' broadcasts in dealer order, then every
    /// new member's complaint (new-index order), every dealer's answer (dealer order), and every
    /// new member's test partial decryption (new-index order).
    pub dealings: Vec<String>,
    /// The new key.
    pub new_key: KeyFile,
    /// The head every participant signed, hex.
    pub transcript_hash: String,
    /// Every participant's signature (`party` = participant index).
    pub signatures: Vec<SignatureRecord>,
}

fn head(session: &[u8; 32], old: &[u8; 32], dealings: &[Vec<u8>], new: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"medtech-reshare/v1/transcript");
    h.update(session);
    h.update(old);
    for d in dealings {
        h.update((d.len() as u64).to_be_bytes());
        h.update(d);
    }
    h.update(new);
    h.finalize().into()
}

/// Verifies a re-sharing transcript offline; `expected_key`, when given, must be its new key.
pub fn verify_reshare(json: &[u8], expected_key: Option<&ThresholdPublicKey>) -> Verdict {
    let mut checks = Vec::new();
    let mut push = |name, r: Result<String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        checks.push(Check { name, ok, detail });
        ok
    };
    let t = match parse_format::<ReshareTranscript>(json, TRANSCRIPT_FORMAT, |t| &t.format) {
        Ok(t) => {
            push("format", Ok(TRANSCRIPT_FORMAT.into()));
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
    let done = |checks| Verdict {
        checks,
        key_fingerprint: None,
    };
    let params = match t.config.parameters() {
        Ok(p) => {
            push(
                "parameters",
                Ok(format!(
                    "key {} (n = {}, t = {}) dealt by {:?} to n' = {}, t' = {}",
                    t.config.key.fingerprint,
                    p.key().parties(),
                    p.key().threshold(),
                    p.dealers(),
                    p.new_parties(),
                    p.new_threshold()
                )),
            );
            p
        }
        Err(e) => {
            push("parameters", Err(e));
            return done(checks);
        }
    };
    let dealings: Result<Vec<Vec<u8>>> = t.dealings.iter().map(|d| unhex("dealing", d)).collect();
    let derived = dealings.and_then(|bytes| {
        let msgs = bytes
            .iter()
            .map(|b| Message::from_bytes(b).map_err(Error::from))
            .collect::<Result<Vec<_>>>()?;
        let order: Vec<(Round, u16)> = msgs.iter().map(|m| (m.round, m.from.0)).collect();
        if order != public_order(&params) || msgs.iter().any(|m| m.to.is_some()) {
            return Err(Error::format(
                "dealings",
                format!(
                    "must be the dealers' broadcasts in order {:?}, every new member's complaint \
                     and every dealer's answer, got {order:?}",
                    params.dealers()
                ),
            ));
        }
        let key = reshared_key(&params, &msgs)?;
        check_test(&params, &key, &msgs)?;
        Ok((bytes, key))
    });
    let (bytes, new_key) = match derived {
        Ok(d) => {
            push(
                "dealings",
                Ok(format!(
                    "{} dealings, each committing to its dealer's current share; every \
                     complaint answered; every {} new members decrypt the test ciphertext",
                    params.dealers().len(),
                    params.new_threshold()
                )),
            );
            d
        }
        Err(e) => {
            push("dealings", Err(e));
            return done(checks);
        }
    };
    let key_ok = t.new_key.key("new key").and_then(|k| {
        if k != new_key {
            return Err(Error::format(
                "new key",
                "is not the key the dealings determine",
            ));
        }
        if k.public_key() != params.key().public_key() {
            return Err(Error::format("new key", "has another modulus"));
        }
        if let Some(e) = expected_key {
            if *e != k {
                return Err(Error::format("new key", "is not the expected key"));
            }
        }
        Ok(format!(
            "{} (same modulus; n = {}, t = {})",
            t.new_key.fingerprint,
            k.parties(),
            k.threshold()
        ))
    });
    if !push("new key", key_ok) {
        return done(checks);
    }
    let h = head(
        &params.session(),
        &params.key().fingerprint(),
        &bytes,
        &new_key.fingerprint(),
    );
    let hash_ok = if hex::encode(h) == t.transcript_hash {
        Ok(t.transcript_hash.clone())
    } else {
        Err(Error::format("transcript hash", "does not recompute"))
    };
    if !push("transcript hash", hash_ok) {
        return done(checks);
    }
    let signed = signed_bytes(&h, &new_key.fingerprint());
    let sigs = (|| {
        let mut by: BTreeMap<u16, &SignatureRecord> = BTreeMap::new();
        for s in &t.signatures {
            if by.insert(s.party, s).is_some() {
                return Err(Error::format(
                    "signatures",
                    format!("participant {} signed twice", s.party),
                ));
            }
        }
        for p in &t.config.participants {
            let i = p.member.index;
            let s = by.get(&i).ok_or_else(|| {
                Error::format("signatures", format!("participant {i} did not sign"))
            })?;
            let sig: [u8; 64] = unhex("signature", &s.signature)?
                .try_into()
                .map_err(|_| Error::format("signatures", "must be 64 bytes"))?;
            member_key(&p.member)?
                .verify(&signed, &Signature::from_bytes(&sig))
                .map_err(|_| {
                    Error::format("signatures", format!("participant {i}'s does not verify"))
                })?;
        }
        if by.len() != t.config.participants.len() {
            return Err(Error::format("signatures", "a non-participant signed"));
        }
        Ok(format!(
            "all {} participants signed",
            t.config.participants.len()
        ))
    })();
    let ok = push("signatures", sigs);
    Verdict {
        checks,
        key_fingerprint: ok.then(|| t.new_key.fingerprint.clone()),
    }
}

/// What a reviewer must bring from outside a re-sharing transcript (issue 30 §4): without it,
/// a transcript under invented identities can verify for a real old key, since with
/// `n' ≥ n` anyone can compute dealings that pass the public check (`D_{i,0} =
/// v_i^(λ'_i·Δ'/Δ)`) from the old key alone.
pub struct ResharePins<'a> {
    /// The key being re-shared, as the reviewer knows it (its own `threshold-key.json`).
    pub old_key: &'a ThresholdPublicKey,
    /// Every participant's identity key, by participant index, as the reviewer knows them.
    pub identities: &'a [Identity],
    /// The transcript that produced the old key (a ceremony or an earlier re-sharing), to chain
    /// to: the old members' identity keys must be the ones it lists.
    pub previous: Option<&'a [u8]>,
}

/// [`verify_reshare`] plus the pins: the configuration's old key must be the pinned one, every
/// participant's identity key the pinned one for its index, and — given the previous
/// transcript — every current member's identity key the one that transcript gave it, and its
/// key the old key. The previous transcript is checked as a link, not verified: verify each
/// transcript of the chain, oldest first.
pub fn verify_reshare_pinned(
    json: &[u8],
    expected_key: Option<&ThresholdPublicKey>,
    pins: &ResharePins<'_>,
) -> Verdict {
    let mut verdict = verify_reshare(json, expected_key);
    let pinned = serde_json::from_slice::<ReshareTranscript>(json)
        .map_err(|e| Error::format("reshare transcript", e.to_string()))
        .and_then(|t| check_pins(&t.config, pins));
    let ok = pinned.is_ok();
    verdict.checks.push(Check {
        name: "pins",
        ok,
        detail: match pinned {
            Ok(d) => d,
            Err(e) => e.to_string(),
        },
    });
    if !ok {
        verdict.key_fingerprint = None;
    }
    verdict
}

fn check_pins(config: &ReshareConfig, pins: &ResharePins<'_>) -> Result<String> {
    let old = config.old_key()?;
    if old.fingerprint() != pins.old_key.fingerprint() {
        return Err(Error::format(
            "pins",
            "the configuration re-shares another key than the pinned old key",
        ));
    }
    // Exactly the participants: no extra, no duplicate, no missing entry.
    let mut parties: Vec<u16> = pins.identities.iter().map(|id| id.party).collect();
    parties.sort_unstable();
    let expected: Vec<u16> = config.participants.iter().map(|p| p.member.index).collect();
    if parties != expected {
        return Err(Error::format(
            "pins",
            format!(
                "the pinned identities are for parties {parties:?}, the participants are \
                 {expected:?}"
            ),
        ));
    }
    for p in &config.participants {
        let i = p.member.index;
        let pinned = pins
            .identities
            .iter()
            .find(|id| id.party == i)
            .ok_or_else(|| Error::format("pins", format!("participant {i} is not pinned")))?;
        if !pinned.ed25519.eq_ignore_ascii_case(&p.member.ed25519) {
            return Err(Error::format(
                "pins",
                format!("participant {i}'s identity key is not the pinned one"),
            ));
        }
    }
    let chained = match pins.previous {
        Some(prev) => {
            let (fingerprint, members) = previous_link(prev)?;
            if !fingerprint.eq_ignore_ascii_case(&hex::encode(old.fingerprint())) {
                return Err(Error::format(
                    "previous transcript",
                    "produced another key than the one re-shared",
                ));
            }
            for p in &config.participants {
                let Some(i) = p.old_index else { continue };
                match members.iter().find(|(m, _)| *m == i) {
                    Some((_, key)) if key.eq_ignore_ascii_case(&p.member.ed25519) => {}
                    _ => {
                        return Err(Error::format(
                            "previous transcript",
                            format!(
                                "current member {i} (participant {}) has another identity key \
                                 there",
                                p.member.index
                            ),
                        ))
                    }
                }
            }
            "; linked to the previous transcript (its key and its members' identity keys; \
             verify that transcript on its own)"
        }
        None => "",
    };
    Ok(format!(
        "old key {} and all {} participants' identity keys as pinned{chained}",
        hex::encode(old.fingerprint()),
        config.participants.len()
    ))
}

/// From the transcript that produced a key: its fingerprint and every member's identity key by
/// member index (a ceremony transcript's identities, or a re-sharing's new members).
fn previous_link(json: &[u8]) -> Result<(String, Vec<(u16, String)>)> {
    let bad = |why: &str| Error::format("previous transcript", why.to_string());
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Error::format("previous transcript", e.to_string()))?;
    let format = v.get("format").and_then(|f| f.as_str()).unwrap_or_default();
    if format == TRANSCRIPT_FORMAT {
        let t: ReshareTranscript = serde_json::from_value(v)
            .map_err(|e| Error::format("previous transcript", e.to_string()))?;
        let members = t
            .config
            .participants
            .iter()
            .filter_map(|p| p.new_index.map(|i| (i, p.member.ed25519.clone())))
            .collect();
        Ok((t.new_key.fingerprint, members))
    } else if format == crate::transcript::FORMAT {
        let t: crate::transcript::Transcript = serde_json::from_value(v)
            .map_err(|e| Error::format("previous transcript", e.to_string()))?;
        let members = t
            .identities
            .iter()
            .map(|id| (id.party, id.ed25519.clone()))
            .collect();
        Ok((t.key_fingerprint, members))
    } else {
        Err(bad("is neither a ceremony nor a re-sharing transcript"))
    }
}

/// Options of [`reshare`].
pub struct ReshareOptions {
    /// This participant's index in the configuration.
    pub index: u16,
    /// Its current share, if it is a dealer.
    pub share: Option<KeyShare>,
    /// Where to write the outputs.
    pub out: PathBuf,
    /// Seal the new share with this passphrase instead of a new key file.
    pub passphrase: Option<zeroize::Zeroizing<String>>,
    /// How long a phase may take before the missing participants are named.
    pub round_timeout: Duration,
}

/// Runs this participant's side of a re-sharing; returns the new key's fingerprint (hex).
pub fn reshare(
    config: &ReshareConfig,
    secrets: &LocalSecrets,
    opts: &ReshareOptions,
) -> Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io(std::path::Path::new("tokio runtime"), e))?;
    rt.block_on(reshare_async(config, secrets, opts))
}

fn fault(participant: u16, reason: impl Into<String>) -> Error {
    crate::net::misbehaviour(participant, Round::Refresh, reason)
}

async fn reshare_async(
    config: &ReshareConfig,
    secrets: &LocalSecrets,
    opts: &ReshareOptions,
) -> Result<String> {
    let params = config.parameters()?;
    crate::sharefile::refuse_share_files(&opts.out)?;
    let me = opts.index;
    let mine = config
        .participants
        .get(usize::from(me).wrapping_sub(1))
        .ok_or_else(|| Error::format("reshare config", format!("no participant {me}")))?;
    let dealer = mine.old_index.filter(|i| params.dealers().contains(i));
    let share = match (dealer, &opts.share) {
        (Some(i), Some(s)) if s.index().0 == i => Some(s),
        (Some(i), Some(s)) => {
            return Err(Error::format(
                "share",
                format!(
                    "is member {}'s share; participant {me} deals as member {i}",
                    s.index().0
                ),
            ))
        }
        (Some(i), None) => {
            return Err(Error::format(
                "share",
                format!("participant {me} deals as member {i} and needs its current share"),
            ))
        }
        (None, _) => None,
    };
    let mut mesh = Mesh::connect(
        params.session(),
        &config.members(),
        me,
        secrets,
        opts.round_timeout,
    )
    .await?;

    let my_new = mine.new_index.map(PartyIndex);
    let everyone: Vec<u16> = config.participants.iter().map(|p| p.member.index).collect();
    let mut inbox = Inbox {
        pending: Vec::new(),
        early: Vec::new(),
        signatures: BTreeMap::new(),
    };
    let mut rng = ChaCha20Rng::from_rng(OsRng)
        .map_err(|e| Error::format("random generator", e.to_string()))?;
    // R1: deal.
    let mut dealing = None;
    let mut mine_now = None;
    if let Some(share) = share {
        let (kept, out) = deal(&params, share, &mut rng)?;
        dealing = Some(kept);
        mine_now = out.broadcast;
        for m in out.direct {
            let to = m.to.and_then(|j| config.participant_of_new(j.0));
            match to {
                Some(p) if p == me => inbox.pending.push(m),
                Some(p) => {
                    #[cfg(test)]
                    let kept = m.clone();
                    match send_tampered(m, &mine.member.address) {
                        Some(m) => mesh.send(Some(p), &m),
                        // A test playing a dealer that sends this sub-share only later.
                        #[cfg(test)]
                        None => crate::net::hooks::send_late(&mine.member.address, p, kept),
                        #[cfg(not(test))]
                        None => {}
                    }
                }
                None => {}
            }
        }
    }
    // Map participant faults from the protocol back to participants: complaints (R1b) name a
    // new member, everything else a dealer (old indices).
    let by_participant = |e: medtech_threshold::Error| -> Error {
        match e {
            medtech_threshold::Error::Misbehaviour {
                party,
                round,
                reason,
            } => {
                let (who, participant) = if is_new_members_round(round) {
                    ("new member", config.participant_of_new(party.0))
                } else {
                    ("dealer", config.participant_of_old(party.0))
                };
                medtech_threshold::Error::Misbehaviour {
                    party: PartyIndex(participant.unwrap_or(0)),
                    round,
                    reason: format!("{who} {party}: {reason}"),
                }
                .into()
            }
            other => other.into(),
        }
    };
    let public = |pending: &[Message]| {
        let mut b: Vec<Message> = pending.iter().filter(|m| m.to.is_none()).cloned().collect();
        b.sort_by_key(|m| (m.round, m.from.0));
        b
    };
    let phases = [
        (Round::Refresh, ECHO_DEALINGS),
        (Round::RefreshComplaints, ECHO_COMPLAINTS),
        (Round::RefreshAnswers, ECHO_ANSWERS),
        (Round::RefreshTest, ECHO_TEST),
    ];
    // The new key and this participant's new share, once R1c is checked.
    let mut derived: Option<(ThresholdPublicKey, Option<KeyShare>)> = None;
    for (round, tag) in phases {
        #[cfg(test)]
        if round == Round::RefreshComplaints {
            for (to, m) in crate::net::hooks::take_late(&mine.member.address) {
                mesh.send(Some(to), &m);
            }
        }
        if let Some(m) = mine_now.take() {
            if let Some(m) = send_tampered(m, &mine.member.address) {
                mesh.send(None, &m);
                inbox.pending.push(m);
            }
        }
        let senders = senders(config, &params, round);
        let signed = inbox
            .collect(
                &mut mesh,
                config,
                &params,
                round,
                &senders,
                my_new,
                me,
                opts.round_timeout,
            )
            .await?;
        // Broadcast with echo: before anything depends on this round's messages, every
        // participant confirms it received the same ones; a participant that sent two is named
        // by all, with both signed copies as the evidence.
        if let Err(e) = mesh
            .echo_round(tag, &signed, &everyone, opts.round_timeout, round)
            .await
        {
            // Keep the proof, if there is one; let the copies and relays this participant sent
            // reach the others, and close its connections cleanly, so that no one mistakes its
            // leaving for a fault of its own.
            crate::net::keep_evidence(&mesh, &opts.out, params.session(), config.identities())?;
            mesh.finish().await;
            return Err(e);
        }
        // Everyone — whatever its role — checks the public messages so far and reaches the same
        // verdict here (`check_public` after R1 and R1b; `receive` and `reshared_key` check
        // everything after R1c); then the next round's message. A participant that stops
        // closes its connections cleanly, so that nobody mistakes its leaving for a fault of
        // its own.
        let step = match round {
            // R1b: every new member says which sub-shares failed (usually none).
            Round::Refresh => {
                check_public(&params, round, &public(&inbox.pending)).and_then(|()| {
                    my_new
                        .map(|j| complain(&params, j, &inbox.pending))
                        .transpose()
                })
            }
            // R1c: every dealer answers the complaints against it, in public.
            Round::RefreshComplaints => check_public(&params, round, &public(&inbox.pending))
                .and_then(|()| {
                    dealing
                        .as_ref()
                        .map(|d| answer(&params, d, &inbox.pending))
                        .transpose()
                }),
            // R2: before anyone accepts the new key (and before any old share may be
            // destroyed), the new committee decrypts a test ciphertext hashed from the session
            // and the new key.
            Round::RefreshAnswers => match my_new {
                Some(j) => receive(&params, j, &inbox.pending).map(|(k, s)| (k, Some(s))),
                None => reshared_key(&params, &public(&inbox.pending)).map(|k| (k, None)),
            }
            .and_then(|(key, share)| {
                let partial = share
                    .as_ref()
                    .map(|s| test_partial(&params, &key, s, &mut rng))
                    .transpose();
                derived = Some((key, share));
                partial
            }),
            _ => derived
                .as_ref()
                .map_or(Ok(()), |(key, _)| check_test(&params, key, &inbox.pending))
                .map(|()| None),
        };
        mine_now = match step {
            Ok(m) => m,
            Err(e) => {
                mesh.finish().await;
                return Err(by_participant(e));
            }
        };
    }
    drop(dealing);
    let (new_key, new_share) = derived
        .ok_or_else(|| Error::format("re-sharing", "ended without a new key (no R1c step ran)"))?;
    let mut signatures = inbox.signatures;
    let broadcasts = public(&inbox.pending);

    // First seal the new share as pending: a participant that never gets every signature
    // keeps it (issue 30 §5). Checked again: `--out` may have changed during the run.
    crate::sharefile::refuse_share_files(&opts.out)?;
    crate::sharefile::write_pending(
        &opts.out,
        &new_key,
        new_share.as_ref(),
        opts.passphrase.as_ref(),
    )?;
    let dealings: Vec<Vec<u8>> = broadcasts.iter().map(Message::to_bytes).collect();
    let h = head(
        &params.session(),
        &params.key().fingerprint(),
        &dealings,
        &new_key.fingerprint(),
    );
    let sig = secrets
        .identity()
        .sign(&signed_bytes(&h, &new_key.fingerprint()))
        .to_bytes();
    mesh.exchange_signatures(
        sig,
        &mut signatures,
        &everyone,
        opts.round_timeout,
        Round::Refresh,
        |absent| {
            fault(
                absent.first().copied().unwrap_or(0),
                format!("timed out waiting for the signatures of participants {absent:?}"),
            )
        },
    )
    .await
    .inspect_err(|_| crate::net::pending_hint(&opts.out))?;
    let transcript = ReshareTranscript {
        format: TRANSCRIPT_FORMAT.into(),
        config: config.clone(),
        dealings: dealings.iter().map(hex::encode).collect(),
        new_key: KeyFile::of(&new_key),
        transcript_hash: hex::encode(h),
        signatures: signatures
            .iter()
            .map(|(p, s)| SignatureRecord {
                party: *p,
                signature: hex::encode(s),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&transcript)
        .map_err(|e| Error::format("transcript", e.to_string()))?;
    verify_reshare(&json, Some(&new_key)).require("reshare transcript")?;
    mesh.finish().await;
    crate::sharefile::promote_pending(&opts.out, "reshare-transcript.json", &json)?;
    Ok(hex::encode(new_key.fingerprint()))
}

/// The public messages of a re-sharing in transcript order: `(round, protocol index)`.
fn public_order(params: &ReshareParameters) -> Vec<(Round, u16)> {
    let dealers = params.dealers().iter().map(|&d| (Round::Refresh, d));
    let complaints = (1..=params.new_parties()).map(|j| (Round::RefreshComplaints, j));
    let answers = params.dealers().iter().map(|&d| (Round::RefreshAnswers, d));
    let tests = (1..=params.new_parties()).map(|j| (Round::RefreshTest, j));
    dealers
        .chain(complaints)
        .chain(answers)
        .chain(tests)
        .collect()
}

/// Whether `round`'s messages come from the new members (new indices) rather than the dealers.
fn is_new_members_round(round: Round) -> bool {
    matches!(round, Round::RefreshComplaints | Round::RefreshTest)
}

/// Who broadcasts in `round`: `(participant, protocol index)` — the dealers in R1 and R1c,
/// every new member in R1b.
fn senders(config: &ReshareConfig, params: &ReshareParameters, round: Round) -> Vec<(u16, u16)> {
    config
        .participants
        .iter()
        .filter_map(|p| {
            let index = if is_new_members_round(round) {
                p.new_index
            } else {
                p.old_index.filter(|i| params.dealers().contains(i))
            }?;
            Some((p.member.index, index))
        })
        .collect()
}

/// A test hook's chance to alter, or withhold (`None`), what the participant listening at
/// `_address` sends (no-op outside tests; see `net::hooks`).
fn send_tampered(m: Message, _address: &str) -> Option<Message> {
    #[cfg(test)]
    {
        let mut m = m;
        crate::net::hooks::apply(_address, &mut m).then_some(m)
    }
    #[cfg(not(test))]
    Some(m)
}

/// What a participant has received: the messages of finished and current rounds, messages of
/// later rounds that arrived early (with their signed envelopes), and transcript signatures.
struct Inbox {
    pending: Vec<Message>,
    early: Vec<(u16, Message, Signed)>,
    signatures: BTreeMap<u16, [u8; 64]>,
}

impl Inbox {
    /// Receives `round`'s broadcast from every sender and (R1, for a new member) its direct
    /// share from every dealer; returns the signed broadcasts by participant, for the echo
    /// round. A message from a participant in a role it does not have, a second one, or a
    /// round that does not exist names the sender; a timeout names the first one missing.
    #[allow(clippy::too_many_arguments)]
    async fn collect(
        &mut self,
        mesh: &mut Mesh,
        config: &ReshareConfig,
        params: &ReshareParameters,
        round: Round,
        senders: &[(u16, u16)],
        my_new: Option<PartyIndex>,
        me: u16,
        timeout: Duration,
    ) -> Result<BTreeMap<u16, Signed>> {
        let mut signed: BTreeMap<u16, Signed> = BTreeMap::new();
        if let Some(m) = self
            .pending
            .iter()
            .find(|m| m.round == round && m.to.is_none() && senders.contains(&(me, m.from.0)))
        {
            signed.insert(me, mesh.signed(m));
        }
        let have = |pending: &[Message], from: u16, direct: Option<PartyIndex>| {
            pending
                .iter()
                .any(|m| m.round == round && m.from.0 == from && m.to == direct)
        };
        let missing = |pending: &[Message]| -> Vec<u16> {
            senders
                .iter()
                .filter(|&&(_, i)| {
                    // A dealer's sub-share comes before its broadcast on the ordered connection;
                    // one that never came is complained about in R1b (attacker review, finding
                    // 2), so the round is complete once every broadcast is in.
                    !have(pending, i, None)
                })
                .map(|&(p, _)| p)
                .collect()
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut early = std::mem::take(&mut self.early).into_iter();
        while !missing(&self.pending).is_empty() {
            let next = match early.next() {
                Some((from, m, env)) => Ok(Some(Inbound::Message(from, m, env))),
                None => mesh.recv_timeout(deadline).await,
            };
            match next {
                Ok(Some(Inbound::Message(from, m, env))) => {
                    let role = config
                        .participants
                        .get(usize::from(from).wrapping_sub(1))
                        .map(|p| (p.old_index, p.new_index));
                    let allowed = match (m.round, role) {
                        (Round::Refresh | Round::RefreshAnswers, Some((Some(old), _))) => {
                            old == m.from.0 && params.dealers().contains(&old)
                        }
                        (Round::RefreshComplaints | Round::RefreshTest, Some((_, Some(new)))) => {
                            new == m.from.0
                        }
                        _ => false,
                    };
                    if !allowed {
                        return Err(fault(from, "sent a message of a role it does not have"));
                    }
                    let direct_ok = m.to.is_none() || (m.round == Round::Refresh && m.to == my_new);
                    if !direct_ok {
                        return Err(fault(from, "sent a direct message that is not for us"));
                    }
                    if m.round > round {
                        // Bounded: one message per (sender, round, recipient), refused at once.
                        let twice = self
                            .early
                            .iter()
                            .any(|(f, e, _)| *f == from && e.round == m.round && e.to == m.to);
                        if twice {
                            return Err(fault(from, "sent two messages in one round"));
                        }
                        self.early.push((from, m, env));
                        continue;
                    }
                    if m.round == Round::Refresh && m.to.is_some() && round > Round::Refresh {
                        // A sub-share that comes after R1 changes nothing: its member has
                        // complained about it already, and the public answer settles it
                        // (second attacker review, finding 1: refusing it stopped the member
                        // alone, and the others named it).
                        continue;
                    }
                    if m.round < round || have(&self.pending, m.from.0, m.to) {
                        return Err(fault(from, "sent two messages in one round"));
                    }
                    if m.to.is_none() {
                        signed.insert(from, env);
                    }
                    self.pending.push(m);
                }
                Ok(Some(Inbound::Signature(from, s))) => {
                    self.signatures.insert(from, s);
                }
                Ok(Some(Inbound::Fault(from, why))) => return Err(fault(from, why)),
                Ok(Some(Inbound::Echo(..) | Inbound::Evidence(..))) => {}
                Ok(None) | Err(_) => {
                    let absent = missing(&self.pending);
                    return Err(fault(
                        absent.first().copied().unwrap_or(0),
                        format!("timed out waiting for {round:?} from participants {absent:?}"),
                    ));
                }
            }
        }
        self.early.extend(early);
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::testing::{assert_named_by, assert_one_key, culprits};

    fn member(i: u16) -> MemberConfig {
        MemberConfig {
            index: i,
            address: format!("127.0.0.1:{}", 9000 + i),
            name: format!("hospital-{i}"),
            tls_ca_pem: String::new(),
            tls_cert_sha256: format!("{:064x}", 0x100 + i),
            ed25519: format!("{i:064x}"),
        }
    }

    /// Old members 1..=3 of a 3-member t = 2 key; `roles[k]` = (old, new) of participant k + 1.
    fn config(roles: &[(Option<u16>, Option<u16>)], dealers: &[u16], t: u16) -> ReshareConfig {
        let (key, _) = medtech_threshold::dealer::insecure_generate_from_seed(512, 3, 2, 5)
            .expect("dealer key");
        ReshareConfig {
            format: CONFIG_FORMAT.into(),
            key: KeyFile::of(&key),
            dealers: dealers.to_vec(),
            new_threshold: t,
            session_nonce: "00".into(),
            participants: roles
                .iter()
                .enumerate()
                .map(|(k, &(old_index, new_index))| Participant {
                    member: member(k as u16 + 1),
                    old_index,
                    new_index,
                })
                .collect(),
        }
    }

    fn refusal(c: &ReshareConfig) -> String {
        c.parameters().expect_err("must be refused").to_string()
    }

    #[test]
    fn a_join_and_a_leave_is_a_valid_configuration() {
        let c = config(
            &[(Some(1), Some(1)), (Some(2), Some(2)), (None, Some(3))],
            &[1, 2],
            2,
        );
        let p = c.parameters().unwrap();
        assert_eq!((p.new_parties(), p.new_threshold()), (3, 2));
        assert_eq!(c.participant_of_old(2), Some(2));
        assert_eq!(c.participant_of_new(3), Some(3));
        assert_eq!(c.participant_of_old(3), None);
    }

    #[test]
    fn malformed_configurations_are_refused_with_the_reason() {
        let ok = [(Some(1), Some(1)), (Some(2), Some(2)), (None, Some(3))];
        let gap = [(Some(1), Some(1)), (Some(2), Some(4)), (None, Some(3))];
        assert!(refusal(&config(&gap, &[1, 2], 2)).contains("exactly 1..=3"));
        let twice = [(Some(1), Some(1)), (Some(1), Some(2)), (None, Some(3))];
        assert!(refusal(&config(&twice, &[1, 2], 2)).contains("listed twice"));
        let stranger = [(Some(1), Some(1)), (Some(7), Some(2)), (None, Some(3))];
        assert!(refusal(&config(&stranger, &[1, 2], 2)).contains("old index 7"));
        let idle = [(Some(1), Some(1)), (Some(2), Some(2)), (None, None)];
        assert!(refusal(&config(&idle, &[1, 2], 2)).contains("neither"));
        assert!(refusal(&config(&ok, &[1, 3], 2)).contains("dealer 3 is not a participant"));
        assert!(refusal(&config(&ok, &[1, 2], 3)).contains("honest majority"));
        assert!(refusal(&config(&ok, &[1], 2)).contains("exactly t = 2"));
        let mut c = config(&ok, &[1, 2], 2);
        c.format = "medtech-reshare-config/0".into();
        assert!(refusal(&c).contains("unsupported format"));
        let mut c = config(&ok, &[1, 2], 2);
        c.participants.swap(0, 1);
        assert!(refusal(&c).contains("index order"));
    }

    #[test]
    fn one_host_in_two_seats_is_refused() {
        let ok = [(Some(1), Some(1)), (Some(2), Some(2)), (None, Some(3))];
        let mut c = config(&ok, &[1, 2], 2);
        c.participants[2].member.ed25519 = c.participants[0].member.ed25519.clone();
        assert!(refusal(&c).contains("members 1 and 3 share one identity key"));
        let mut c = config(&ok, &[1, 2], 2);
        c.participants[2].member.tls_cert_sha256 = c.participants[1].member.tls_cert_sha256.clone();
        assert!(refusal(&c).contains("members 2 and 3 share one TLS certificate"));
    }

    /// Three participants on loopback over the real mesh (TLS, pinned identities): old members
    /// 1 and 2 of a 512-bit t = 2 key deal; participant 3 only joins. Returns the configuration,
    /// the old shares and each participant's secrets directory.
    fn loopback(dir: &std::path::Path) -> (ReshareConfig, Vec<KeyShare>, Vec<std::path::PathBuf>) {
        let (key, shares) =
            medtech_threshold::dealer::insecure_generate_from_seed(512, 3, 2, 11).unwrap();
        let mut participants = Vec::new();
        let mut dirs = Vec::new();
        for (i, roles) in [(Some(1), Some(1)), (Some(2), Some(2)), (None, Some(3))]
            .into_iter()
            .enumerate()
        {
            let i = i as u16 + 1;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let d = dir.join(format!("keys-{i}"));
            let member = crate::net::keygen(
                &d,
                i,
                &format!("hospital-{i}"),
                &format!("127.0.0.1:{port}"),
            )
            .unwrap();
            participants.push(Participant {
                member,
                old_index: roles.0,
                new_index: roles.1,
            });
            dirs.push(d);
        }
        let config = ReshareConfig {
            format: CONFIG_FORMAT.into(),
            key: KeyFile::of(&key),
            dealers: vec![1, 2],
            new_threshold: 2,
            session_nonce: "0e".into(),
            participants,
        };
        (config, shares, dirs)
    }

    /// Runs honest participant `i` in its own thread (its own runtime, like its own process).
    fn honest(
        config: &ReshareConfig,
        dir: &std::path::Path,
        i: u16,
        share: Option<KeyShare>,
        out: std::path::PathBuf,
    ) -> std::thread::JoinHandle<Result<String>> {
        let config = config.clone();
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            let secrets = crate::net::load_secrets(&dir)?;
            reshare(
                &config,
                &secrets,
                &ReshareOptions {
                    index: i,
                    share,
                    out,
                    passphrase: None,
                    round_timeout: Duration::from_secs(8),
                },
            )
        })
    }

    #[test]
    fn an_out_directory_holding_a_share_is_refused_before_the_run() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, _, dirs) = loopback(tmp.path());
        // The operator points --out at the directory of its current share.
        let out = tmp.path().join("ceremony-out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("share.json"), b"the only copy").unwrap();
        let e = honest(&config, &dirs[2], 3, None, out.clone())
            .join()
            .unwrap()
            .expect_err("must be refused");
        assert!(e.to_string().contains("already holds a share file"), "{e}");
        assert_eq!(
            std::fs::read(out.join("share.json")).unwrap(),
            b"the only copy"
        );
    }

    #[test]
    fn an_equivocating_dealer_is_named_by_every_honest_participant() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, shares, dirs) = loopback(tmp.path());
        let mut shares = shares.into_iter();
        let (share1, share2) = (shares.next().unwrap(), shares.next().unwrap());
        let params = config.parameters().unwrap();
        // Participant 1 (dealer 1) deals twice and sends participant 2 one dealing, participant
        // 3 the other (each dealing valid on its own), then stays connected and silent.
        let evil = {
            let (config, dir, share) = (config.clone(), dirs[0].clone(), share1);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async move {
                    let secrets = crate::net::load_secrets(&dir).unwrap();
                    let mut mesh = Mesh::connect(
                        params.session(),
                        &config.members(),
                        1,
                        &secrets,
                        Duration::from_secs(8),
                    )
                    .await
                    .unwrap();
                    let mut rng = ChaCha20Rng::seed_from_u64(1);
                    for victim in [2u16, 3] {
                        let (_, out) = deal(&params, &share, &mut rng).unwrap();
                        mesh.send(Some(victim), &out.broadcast.unwrap());
                        for m in out
                            .direct
                            .iter()
                            .filter(|m| m.to == Some(PartyIndex(victim)))
                        {
                            mesh.send(Some(victim), m);
                        }
                    }
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                    while let Ok(Some(_)) = mesh.recv_timeout(deadline).await {}
                })
            })
        };
        let h2 = honest(&config, &dirs[1], 2, Some(share2), tmp.path().join("out-2"));
        let h3 = honest(&config, &dirs[2], 3, None, tmp.path().join("out-3"));
        for (i, h) in [(2, h2), (3, h3)] {
            let e = h
                .join()
                .unwrap()
                .expect_err("an equivocation must stop the re-sharing");
            let text = e.to_string();
            assert_eq!(
                culprits(&e),
                vec![1],
                "participant {i} must name the equivocating dealer: {text}"
            );
            assert!(text.contains("equivocated"), "participant {i}: {text}");
            assert!(!tmp.path().join(format!("out-{i}/share.json")).exists());
            let ev = std::fs::read(tmp.path().join(format!("out-{i}/evidence.json")))
                .unwrap_or_else(|_| panic!("participant {i} left no evidence.json"));
            let (v, who) = crate::echo::verify_evidence(&ev, Some(&config.identities()));
            assert!(v.ok(), "participant {i}'s evidence: {:?}", v.checks);
            assert_eq!(who, Some(1));
        }
        evil.join().unwrap();
    }

    /// Issue 30 §1 over the real transport: dealer 2 sends new member 3 a sub-share off by one
    /// and answers 3's complaint with a wrong one. Before R1b–R1c participant 3 stopped alone,
    /// naming the dealer on its own host, and the others timed out on its signature and named
    /// *it*; now participants 1 and 3 both name participant 2, in R1c, and keep no share.
    #[test]
    fn a_dealer_that_sends_a_bad_sub_share_is_named_by_every_honest_participant() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, results) = run_all_with(tmp.path(), |m| {
            let bad = (m.round == Round::Refresh && m.to == Some(PartyIndex(3)))
                || (m.round == Round::RefreshAnswers && m.int_count_for_tests() > 0);
            if bad {
                m.tweak_int_for_tests(0, 1);
            }
            true
        });
        assert_named_by(&results, &[1, 3], 2, "RefreshAnswers", tmp.path());
    }

    /// Runs [`loopback`]'s three participants with participant 2 tampering with what it sends.
    fn run_all_with(
        tmp: &std::path::Path,
        tamper: fn(&mut Message) -> bool,
    ) -> (ReshareConfig, Vec<Result<String>>) {
        run_all_hooked(tmp, tamper, false)
    }

    /// [`run_all_with`]; with `late`, what the hook withholds is sent at the start of R1b.
    fn run_all_hooked(
        tmp: &std::path::Path,
        tamper: fn(&mut Message) -> bool,
        late: bool,
    ) -> (ReshareConfig, Vec<Result<String>>) {
        let (config, shares, dirs) = loopback(tmp);
        let address = &config.participants[1].member.address;
        let _hook = if late {
            crate::net::hooks::set_late(address, tamper)
        } else {
            crate::net::hooks::set(address, tamper)
        };
        let mut shares = shares.into_iter();
        let (share1, share2) = (shares.next(), shares.next());
        let handles = [(1u16, share1), (2, share2), (3, None)].map(|(i, share)| {
            honest(
                &config,
                &dirs[usize::from(i) - 1],
                i,
                share,
                tmp.join(format!("out-{i}")),
            )
        });
        let results = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (config, results)
    }

    /// Attacker review of the complaint rounds, finding 1: participant 2 (dealer 2 and new
    /// member 2) broadcasts a malformed complaint (against "dealer 3", who does not deal).
    /// Before every participant ran the public check after each round, only the dealers
    /// checked complaints: dealer 1 stopped naming 2, and participant 3 — a new member only —
    /// then waited for participant 1's answer and named the honest participant 1. Now every
    /// participant names 2.
    #[test]
    fn a_malformed_complaint_is_named_by_every_participant_whatever_its_role() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, results) = run_all_with(tmp.path(), |m| {
            if m.round == Round::RefreshComplaints {
                m.set_small_for_tests(&[3]);
            }
            true
        });
        assert_eq!(results.len(), 3);
        assert_named_by(&results, &[1, 3], 2, "RefreshComplaints", tmp.path());
    }

    /// Second attacker review, finding 1: dealer 2 holds back participant 3's sub-share and
    /// sends it only once R1 is over (at the start of R1b). Refusing it there stopped 3 alone,
    /// and the others named 3; now it is ignored, 3's complaint is answered in public, and
    /// everyone finishes with the same key.
    #[test]
    fn a_late_sub_share_is_ignored_and_answered_in_public() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, results) = run_all_hooked(
            tmp.path(),
            |m| !(m.round == Round::Refresh && m.to == Some(PartyIndex(3))),
            true,
        );
        assert_one_key(&results);
    }

    /// A sub-share withheld (attacker review, finding 2), answered correctly in public: the
    /// complaint repairs the re-sharing, every participant gets the same new key, and the
    /// transcript (with the complaint and the answer) verifies.
    #[test]
    fn a_withheld_sub_share_answered_in_public_does_not_stop_the_re_sharing() {
        let tmp = tempfile::tempdir().unwrap();
        // Withheld rather than garbled: the same complaint, the same public answer.
        let (_, results) = run_all_with(tmp.path(), |m| {
            !(m.round == Round::Refresh && m.to == Some(PartyIndex(3)))
        });
        assert_one_key(&results);
        let json = std::fs::read(tmp.path().join("out-3/reshare-transcript.json")).unwrap();
        let v = verify_reshare(&json, None);
        assert!(v.ok(), "{:?}", v.checks);
        let t: ReshareTranscript = serde_json::from_slice(&json).unwrap();
        let complaint = t
            .dealings
            .iter()
            .map(|h| Message::from_bytes(&hex::decode(h).unwrap()).unwrap())
            .find(|m| m.round == Round::RefreshComplaints && m.from == PartyIndex(3))
            .unwrap();
        assert!(complaint.int_count_for_tests() == 0);
        let answer = t
            .dealings
            .iter()
            .map(|h| Message::from_bytes(&hex::decode(h).unwrap()).unwrap())
            .find(|m| m.round == Round::RefreshAnswers && m.from == PartyIndex(2))
            .unwrap();
        assert_eq!(
            answer.int_count_for_tests(),
            1,
            "dealer 2 answered one complaint"
        );
    }

    /// Issue 30 §4: the pins. The configuration's old key must be the reviewer's, every
    /// participant's identity key the pinned one, and — chained — every current member's key the
    /// one the previous transcript gave it.
    #[test]
    fn pins_refuse_another_key_another_identity_or_a_broken_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let (config, _, _) = loopback(tmp.path());
        let old = config.old_key().unwrap();
        let ids = config.identities();
        let pins = |identities: &[Identity], previous: Option<&[u8]>| {
            check_pins(
                &config,
                &ResharePins {
                    old_key: &old,
                    identities,
                    previous,
                },
            )
        };
        assert!(pins(&ids, None).is_ok());
        // An invented identity for participant 3 (the newcomer).
        let mut forged = ids.clone();
        forged[2].ed25519 = "00".repeat(32);
        assert!(pins(&forged, None)
            .unwrap_err()
            .to_string()
            .contains("participant 3"));
        assert!(pins(&ids[..2], None).is_err(), "an unpinned participant");
        let mut extra = ids.clone();
        extra.push(Identity {
            party: 4,
            ed25519: "33".repeat(32),
        });
        assert!(pins(&extra, None).is_err(), "an extra pinned party");
        let mut twice = ids.clone();
        twice.push(Identity {
            party: 3,
            ed25519: "44".repeat(32),
        });
        assert!(pins(&twice, None).is_err(), "a party pinned twice");
        let mut upper = ids.clone();
        upper[0].ed25519 = upper[0].ed25519.to_uppercase();
        assert!(pins(&upper, None).is_ok(), "hex case does not matter");
        // Another old key.
        let (other, _) =
            medtech_threshold::dealer::insecure_generate_from_seed(512, 3, 2, 12).unwrap();
        let e = check_pins(
            &config,
            &ResharePins {
                old_key: &other,
                identities: &ids,
                previous: None,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("another key"), "{e}");
        // The chain: a previous ceremony transcript that gave old members 1 and 2 these keys.
        let previous = |members: Vec<Identity>, fingerprint: String| {
            serde_json::to_vec(&crate::transcript::Transcript {
                format: crate::transcript::FORMAT.into(),
                parameters: crate::transcript::ParameterRecord {
                    bits: 512,
                    parties: 3,
                    threshold: 2,
                    session: String::new(),
                    batch: 0,
                    biprime_reps: 0,
                },
                identities: members,
                earlier_batches: Vec::new(),
                broadcasts: Vec::new(),
                transcript_hash: String::new(),
                threshold_key: String::new(),
                key_fingerprint: fingerprint,
                signatures: Vec::new(),
            })
            .unwrap()
        };
        let fp = hex::encode(old.fingerprint());
        let mut members = ids[..2].to_vec();
        members.push(Identity {
            party: 3,
            ed25519: "11".repeat(32),
        });
        assert!(pins(&ids, Some(&previous(members.clone(), fp.clone())))
            .unwrap()
            .contains("linked to the previous transcript"));
        let mut changed = members.clone();
        changed[1].ed25519 = "22".repeat(32);
        let e = pins(&ids, Some(&previous(changed, fp.clone()))).unwrap_err();
        assert!(e.to_string().contains("current member 2"), "{e}");
        let e = pins(&ids, Some(&previous(members, "ab".repeat(32)))).unwrap_err();
        assert!(e.to_string().contains("another key"), "{e}");
    }

    #[test]
    fn garbage_is_not_a_verified_transcript() {
        for bytes in [
            &b"not json"[..],
            b"{}",
            br#"{"format":"medtech-reshare-transcript/1"}"#,
        ] {
            let v = verify_reshare(bytes, None);
            assert!(!v.ok());
            assert!(v.key_fingerprint.is_none());
        }
    }
}
