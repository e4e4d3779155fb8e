//! The echo round that turns the mesh's point-to-point "broadcasts" into a checked broadcast:
//! pure protocol logic (signed messages in, actions and a verdict out), no I/O. The transport
//! ([`crate::net::Mesh::echo_round`]) feeds it what arrives and sends what it asks for.
//!
//! A phase (one round of `join`, the dealings of `reshare`) has a public set of expected
//! broadcasters. Once a member holds every expected broadcast of the phase, it sends all others
//! a signed **echo**: per sender, the SHA-256 of the broadcast it holds (its own included).
//! Then, per incoming echo (signature checked by the transport):
//!
//! * the echo is **relayed** once to every other member, so a member cannot show one echo to
//!   some members and another (or none) to the rest: two different echoes signed by one member
//!   for one phase are [`Evidence::Echoes`] against it;
//! * an echo that lists another sender set than the expected one is that member's fault (the
//!   set is public; its signed echo, relayed to all, shows it to every honest member);
//! * where an echo's hash for a sender differs from the broadcast held here, a **dispute** opens
//!   and this member sends all others its copy of that broadcast, as the sender signed it. A
//!   copy signed by the same sender for the same slot (round, batch, sender) with other content
//!   than ours is [`Evidence::Broadcasts`] against the sender, whoever showed it. A dispute that
//!   no such copy settles before the deadline names the member whose echo opened it: an echo
//!   that claims another hash cannot frame an honest sender, since it cannot show a second
//!   broadcast the sender signed.
//!
//! The phase is [`Verdict::Agreed`] once every member's echo is here, none is disputed, and no
//! evidence turned up. Evidence is self-contained: anyone with the members' identity keys checks
//! it with [`Evidence::verify`] (what `medtech-ceremony verify evidence.json` runs).

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use medtech_threshold::dkg::Message;
use serde::{Deserialize, Serialize};

use crate::transcript::{Check, Identity, Verdict as Verdict_};

/// Envelope kind of a protocol message.
pub(crate) const KIND_MESSAGE: u8 = 1;
/// Envelope kind of an echo.
pub(crate) const KIND_ECHO: u8 = 3;

/// What an envelope signature covers: the session, the kind and the payload.
pub(crate) fn envelope_bytes(session: &[u8; 32], kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = b"medtech-ceremony/v1/envelope".to_vec();
    b.extend_from_slice(session);
    b.push(kind);
    b.extend_from_slice(payload);
    b
}

fn key_of(keys: &[VerifyingKey], member: u16) -> Result<&VerifyingKey, &'static str> {
    keys.get(usize::from(member).wrapping_sub(1))
        .ok_or("names no member")
}

fn split_signed(b: &[u8]) -> Result<(u16, [u8; 64], &[u8]), &'static str> {
    let from = b
        .get(..2)
        .map(|f| u16::from_be_bytes([f[0], f[1]]))
        .ok_or("short signed record")?;
    let signature: [u8; 64] = b
        .get(2..66)
        .and_then(|s| s.try_into().ok())
        .ok_or("short signed record")?;
    Ok((from, signature, &b[66..]))
}

/// A broadcast as its sender signed it: anyone holding the sender's pinned identity key can
/// check it, so two different ones for the same slot prove that the sender equivocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Signed {
    /// The member (mesh index) whose identity key signed it.
    pub(crate) from: u16,
    /// The envelope signature.
    pub(crate) signature: [u8; 64],
    /// The encoded message.
    pub(crate) payload: Vec<u8>,
}

impl Signed {
    /// Signs `payload` as member `from`'s protocol message.
    pub(crate) fn sign(session: &[u8; 32], from: u16, key: &SigningKey, payload: Vec<u8>) -> Self {
        let signature = key
            .sign(&envelope_bytes(session, KIND_MESSAGE, &payload))
            .to_bytes();
        Signed {
            from,
            signature,
            payload,
        }
    }

    /// The hash an echo carries for it.
    pub(crate) fn hash(&self) -> [u8; 32] {
        crate::transcript::message_hash(&self.payload)
    }

    /// `from ‖ signature ‖ payload`.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.payload.len() + 66);
        b.extend_from_slice(&self.from.to_be_bytes());
        b.extend_from_slice(&self.signature);
        b.extend_from_slice(&self.payload);
        b
    }

    /// Decodes and checks the sender's signature against its key in `keys` (index − 1).
    pub(crate) fn from_bytes(
        session: &[u8; 32],
        keys: &[VerifyingKey],
        b: &[u8],
    ) -> Result<Self, &'static str> {
        let (from, signature, payload) = split_signed(b)?;
        let s = Signed {
            from,
            signature,
            payload: payload.to_vec(),
        };
        s.verify(session, keys)?;
        Ok(s)
    }

    /// Checks the sender's signature.
    pub(crate) fn verify(
        &self,
        session: &[u8; 32],
        keys: &[VerifyingKey],
    ) -> Result<(), &'static str> {
        key_of(keys, self.from)?
            .verify(
                &envelope_bytes(session, KIND_MESSAGE, &self.payload),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| "a signature that does not verify")
    }

    /// The slot a broadcast fills: (round, batch, protocol sender); `None` for a direct
    /// message or an undecodable payload.
    fn slot(&self) -> Option<(u8, u32, u16)> {
        let m = Message::from_bytes(&self.payload).ok()?;
        m.to.is_none().then_some((m.round as u8, m.batch, m.from.0))
    }

    /// Whether `self` and `other` are two different broadcasts signed by one member for one
    /// slot: proof of equivocation (signatures are checked by whoever built them).
    pub(crate) fn conflicts_with(&self, other: &Signed) -> bool {
        self.from == other.from
            && self.payload != other.payload
            && self.slot().is_some()
            && self.slot() == other.slot()
    }
}

/// One member's echo of a phase: `(sender, hash of its broadcast)` for every broadcast of the
/// phase named by `tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Echo {
    /// The phase.
    pub(crate) tag: u64,
    /// Per sender, the hash of the broadcast held.
    pub(crate) hashes: BTreeMap<u16, [u8; 32]>,
}

impl Echo {
    /// `tag ‖ (sender ‖ hash)*`, senders ascending.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.tag.to_be_bytes().to_vec();
        for (from, h) in &self.hashes {
            b.extend_from_slice(&from.to_be_bytes());
            b.extend_from_slice(h);
        }
        b
    }

    /// Parses [`Echo::to_bytes`].
    pub(crate) fn from_bytes(b: &[u8]) -> Result<Self, &'static str> {
        let tag = b
            .get(..8)
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes)
            .ok_or("short echo")?;
        let rest = &b[8..];
        if !rest.len().is_multiple_of(34) {
            return Err("malformed echo");
        }
        let mut hashes = BTreeMap::new();
        for e in rest.chunks_exact(34) {
            let from = u16::from_be_bytes([e[0], e[1]]);
            let mut h = [0u8; 32];
            h.copy_from_slice(&e[2..]);
            if hashes.insert(from, h).is_some() {
                return Err("echo lists a sender twice");
            }
        }
        Ok(Echo { tag, hashes })
    }
}

/// An echo as its member signed it (the envelope of kind [`KIND_ECHO`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SignedEcho {
    /// The member whose identity key signed it.
    pub(crate) from: u16,
    /// The envelope signature.
    pub(crate) signature: [u8; 64],
    /// The echo.
    pub(crate) echo: Echo,
}

impl SignedEcho {
    /// Signs `echo` as member `from`.
    pub(crate) fn sign(session: &[u8; 32], from: u16, key: &SigningKey, echo: Echo) -> Self {
        let signature = key
            .sign(&envelope_bytes(session, KIND_ECHO, &echo.to_bytes()))
            .to_bytes();
        SignedEcho {
            from,
            signature,
            echo,
        }
    }

    /// `from ‖ signature ‖ echo`.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.from.to_be_bytes().to_vec();
        b.extend_from_slice(&self.signature);
        b.extend_from_slice(&self.echo.to_bytes());
        b
    }

    /// Decodes and checks the member's signature against its key in `keys`.
    pub(crate) fn from_bytes(
        session: &[u8; 32],
        keys: &[VerifyingKey],
        b: &[u8],
    ) -> Result<Self, &'static str> {
        let (from, signature, payload) = split_signed(b)?;
        let e = SignedEcho {
            from,
            signature,
            echo: Echo::from_bytes(payload)?,
        };
        e.verify(session, keys)?;
        Ok(e)
    }

    /// Checks the member's signature.
    pub(crate) fn verify(
        &self,
        session: &[u8; 32],
        keys: &[VerifyingKey],
    ) -> Result<(), &'static str> {
        key_of(keys, self.from)?
            .verify(
                &envelope_bytes(session, KIND_ECHO, &self.echo.to_bytes()),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| "a signature that does not verify")
    }
}

/// Proof, checkable by anyone holding the members' identity keys, that one member equivocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// Two different broadcasts one member signed for one slot.
    Broadcasts(Signed, Signed),
    /// Two different echoes one member signed for one phase.
    Echoes(SignedEcho, SignedEcho),
}

impl Evidence {
    /// The member it accuses.
    pub(crate) fn culprit(&self) -> u16 {
        match self {
            Evidence::Broadcasts(a, _) => a.from,
            Evidence::Echoes(a, _) => a.from,
        }
    }

    /// Checks the evidence: both records signed by the accused member's key for `session`, the
    /// same slot or phase, different content. Returns the accused member.
    pub(crate) fn verify(
        &self,
        session: &[u8; 32],
        keys: &[VerifyingKey],
    ) -> Result<u16, &'static str> {
        match self {
            Evidence::Broadcasts(a, b) => {
                a.verify(session, keys)?;
                b.verify(session, keys)?;
                if !a.conflicts_with(b) {
                    return Err(
                        "the two broadcasts are not two versions of one slot by one sender",
                    );
                }
            }
            Evidence::Echoes(a, b) => {
                a.verify(session, keys)?;
                b.verify(session, keys)?;
                if a.from != b.from || a.echo.tag != b.echo.tag || a.echo == b.echo {
                    return Err("the two echoes are not two versions of one phase by one member");
                }
            }
        }
        Ok(self.culprit())
    }

    /// A one-line description for the error that names the culprit.
    pub(crate) fn describe(&self) -> String {
        match self {
            Evidence::Broadcasts(a, b) => format!(
                "equivocated: signed two different broadcasts for one round (hashes {} and {})",
                hex::encode(a.hash()),
                hex::encode(b.hash())
            ),
            Evidence::Echoes(..) => {
                "equivocated: signed two different echoes for one round".to_string()
            }
        }
    }
}

/// What the transport must send for the echo round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Relay another member's signed echo to every other member.
    Relay(SignedEcho),
    /// Show our signed copy of a disputed broadcast to every other member.
    Show(Signed),
}

/// Where an echo round stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Still waiting for echoes or for a dispute to settle.
    Open,
    /// Every member echoed exactly the broadcasts held here.
    Agreed,
    /// A member equivocated; the evidence proves it to anyone.
    Proven(Evidence),
    /// A member broke the echo protocol in a way its own signed echo shows to every honest
    /// member (not checkable offline: it depends on the phase's expected senders).
    Fault(u16, String),
}

/// Whether an input belonged to this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Consumed; send these.
    Yes(Vec<Action>),
    /// Of another phase: the transport keeps it for that phase's round.
    OtherPhase,
}

/// One member's echo round for one phase.
pub(crate) struct EchoRound {
    me: u16,
    tag: u64,
    others: Vec<u16>,
    received: BTreeMap<u16, Signed>,
    mine: SignedEcho,
    echoes: BTreeMap<u16, SignedEcho>,
    /// (member, sender) → the hash the member's echo claims for the sender's broadcast.
    disputes: BTreeMap<(u16, u16), [u8; 32]>,
    shown: BTreeSet<u16>,
    verdict: Verdict,
}

impl EchoRound {
    /// Starts the round of phase `tag` for member `me` among `members`, holding `received`
    /// (every expected broadcast of the phase, keyed by its sender, own included). Returns the
    /// round and this member's signed echo, to send to every other member.
    pub(crate) fn start(
        session: &[u8; 32],
        me: u16,
        identity: &SigningKey,
        tag: u64,
        members: &[u16],
        received: BTreeMap<u16, Signed>,
    ) -> (Self, SignedEcho) {
        let echo = Echo {
            tag,
            hashes: received.iter().map(|(f, s)| (*f, s.hash())).collect(),
        };
        let mine = SignedEcho::sign(session, me, identity, echo);
        let others: Vec<u16> = members.iter().copied().filter(|m| *m != me).collect();
        let verdict = if others.is_empty() {
            Verdict::Agreed
        } else {
            Verdict::Open
        };
        let round = EchoRound {
            me,
            tag,
            others,
            received,
            mine: mine.clone(),
            echoes: BTreeMap::new(),
            disputes: BTreeMap::new(),
            shown: BTreeSet::new(),
            verdict,
        };
        (round, mine)
    }

    /// The verdict so far.
    pub(crate) fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    fn decided(&self) -> bool {
        matches!(self.verdict, Verdict::Proven(_) | Verdict::Fault(..))
    }

    /// Decides on `ev` (unless already decided) and spreads it: both records go to every other
    /// member, so one that holds only one version (and waits on a dispute) gets the proof too,
    /// even though this member stops answering echoes now.
    fn prove(&mut self, ev: Evidence) -> Vec<Action> {
        if self.decided() {
            return Vec::new();
        }
        let out = spread(&ev);
        self.verdict = Verdict::Proven(ev);
        out
    }

    fn settle(&mut self) {
        if !self.decided()
            && self.disputes.is_empty()
            && self.others.iter().all(|o| self.echoes.contains_key(o))
        {
            self.verdict = Verdict::Agreed;
        }
    }

    /// A signed echo (its signature checked by the caller), sent by its member or relayed.
    pub(crate) fn on_echo(&mut self, e: SignedEcho) -> Taken {
        if e.echo.tag != self.tag {
            return Taken::OtherPhase;
        }
        let mut out = Vec::new();
        if self.decided() {
            return Taken::Yes(out);
        }
        if e.from == self.me {
            if e != self.mine {
                // Only a copy of our own key could have signed it.
                out = self.prove(Evidence::Echoes(self.mine.clone(), e));
            }
            return Taken::Yes(out);
        }
        if !self.others.contains(&e.from) {
            return Taken::Yes(out);
        }
        if let Some(old) = self.echoes.get(&e.from) {
            if *old != e {
                out = self.prove(Evidence::Echoes(old.clone(), e));
            }
            return Taken::Yes(out);
        }
        out.push(Action::Relay(e.clone()));
        let listed: BTreeSet<u16> = e.echo.hashes.keys().copied().collect();
        let expected: BTreeSet<u16> = self.received.keys().copied().collect();
        if listed != expected {
            self.verdict = Verdict::Fault(
                e.from,
                format!(
                    "its echo lists the broadcasts of members {listed:?}, the round's are {expected:?}"
                ),
            );
            return Taken::Yes(out);
        }
        for (sender, h) in &e.echo.hashes {
            let Some(ours) = self.received.get(sender) else {
                continue;
            };
            if ours.hash() != *h {
                self.disputes.insert((e.from, *sender), *h);
                if self.shown.insert(*sender) {
                    out.push(Action::Show(ours.clone()));
                }
            }
        }
        self.echoes.insert(e.from, e);
        self.settle();
        Taken::Yes(out)
    }

    /// A copy of a broadcast shown by another member (its sender's signature checked by the
    /// caller).
    pub(crate) fn on_copy(&mut self, copy: Signed) -> Taken {
        let Some(ours) = self.received.get(&copy.from) else {
            return Taken::OtherPhase;
        };
        if ours.conflicts_with(&copy) {
            let ev = Evidence::Broadcasts(ours.clone(), copy);
            return Taken::Yes(self.prove(ev));
        }
        if ours.payload == copy.payload {
            // A copy of what we hold settles nothing (a dispute stays open until its member
            // shows a different broadcast the sender signed, or the deadline names it).
            return Taken::Yes(Vec::new());
        }
        Taken::OtherPhase
    }

    /// The deadline passed: the members that did not echo, then those whose dispute no signed
    /// copy settled. `None` if the round was decided.
    pub(crate) fn on_timeout(&self) -> Option<(Vec<u16>, String)> {
        if !matches!(self.verdict, Verdict::Open) {
            return None;
        }
        let silent: Vec<u16> = self
            .others
            .iter()
            .copied()
            .filter(|o| !self.echoes.contains_key(o))
            .collect();
        let disputing: Vec<u16> = self
            .disputes
            .keys()
            .map(|(m, _)| *m)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let culprits: Vec<u16> = silent.iter().chain(&disputing).copied().collect();
        Some((
            culprits,
            format!(
                "echo round timed out: members {silent:?} did not echo; members {disputing:?} \
                 echoed a hash for a broadcast that no copy signed by its sender matches"
            ),
        ))
    }
}

/// What spreads `ev` to every other member: both records.
pub(crate) fn spread(ev: &Evidence) -> Vec<Action> {
    match ev {
        Evidence::Broadcasts(a, b) => vec![Action::Show(a.clone()), Action::Show(b.clone())],
        Evidence::Echoes(a, b) => vec![Action::Relay(a.clone()), Action::Relay(b.clone())],
    }
}

/// Every signed echo seen in a session, across phases: an echo that arrives after its phase
/// ended here (relayed by a member still in that phase) is still compared, so a member that
/// showed two echoes for one phase is named even by those that had already moved on.
#[derive(Default)]
pub(crate) struct EchoLog {
    seen: BTreeMap<(u64, u16), SignedEcho>,
}

impl EchoLog {
    /// Records `e` (signature checked by the caller); evidence if its member signed another
    /// echo for the same phase.
    pub(crate) fn record(&mut self, e: &SignedEcho) -> Option<Evidence> {
        match self.seen.get(&(e.echo.tag, e.from)) {
            Some(old) if old != e => Some(Evidence::Echoes(old.clone(), e.clone())),
            Some(_) => None,
            None => {
                self.seen.insert((e.echo.tag, e.from), e.clone());
                None
            }
        }
    }
}

/// The format tag of an evidence file.
pub const EVIDENCE_FORMAT: &str = "medtech-ceremony-evidence/1";

/// `evidence.json`: what a member that proved an equivocation leaves in its `--out`, checkable
/// offline by anyone ([`verify_evidence`], `medtech-ceremony verify evidence.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EvidenceFile {
    /// [`EVIDENCE_FORMAT`].
    pub format: String,
    /// The session both records are signed for, hex.
    pub session: String,
    /// Every member's identity key (mesh index order), as the configuration pins them.
    pub identities: Vec<Identity>,
    /// The member accused.
    pub culprit: u16,
    /// `broadcasts` (two broadcasts for one slot) or `echoes` (two echoes for one phase).
    pub kind: String,
    /// The first signed record (`member ‖ signature ‖ payload`), hex.
    pub first: String,
    /// The second, hex.
    pub second: String,
}

impl EvidenceFile {
    /// The file for `ev`.
    pub(crate) fn of(ev: &Evidence, session: &[u8; 32], identities: Vec<Identity>) -> Self {
        let (kind, first, second) = match ev {
            Evidence::Broadcasts(a, b) => ("broadcasts", a.to_bytes(), b.to_bytes()),
            Evidence::Echoes(a, b) => ("echoes", a.to_bytes(), b.to_bytes()),
        };
        EvidenceFile {
            format: EVIDENCE_FORMAT.into(),
            session: hex::encode(session),
            identities,
            culprit: ev.culprit(),
            kind: kind.into(),
            first: hex::encode(first),
            second: hex::encode(second),
        }
    }
}

/// Verifies an evidence file offline: both records decode and are signed by the accused
/// member's identity key (the pinned one when `pinned` is given) for the stated session, they
/// fill the same slot (a broadcast's round, batch and sender; an echo's phase), and differ.
/// The verdict's `key_fingerprint` stays `None`: evidence proves a culprit, not a key.
pub fn verify_evidence(json: &[u8], pinned: Option<&[Identity]>) -> (Verdict_, Option<u16>) {
    let mut checks = Vec::new();
    let mut push = |name, r: Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        checks.push(Check { name, ok, detail });
        ok
    };
    let culprit = (|| {
        let f: EvidenceFile =
            match crate::transcript::parse_format(json, EVIDENCE_FORMAT, |f: &EvidenceFile| {
                &f.format
            }) {
                Ok(f) => f,
                Err(e) => {
                    push("format", Err(e.to_string()));
                    return Err(String::new());
                }
            };
        push("format", Ok(EVIDENCE_FORMAT.into()));
        if let Some(p) = pinned {
            if p != f.identities.as_slice() {
                push(
                    "identities",
                    Err("identity keys differ from the pinned ones".into()),
                );
                return Err(String::new());
            }
        }
        let keys = f
            .identities
            .iter()
            .enumerate()
            .map(|(k, id)| {
                if usize::from(id.party) != k + 1 {
                    return Err("identities must be listed in order from 1".to_string());
                }
                let b: [u8; 32] = hex::decode(&id.ed25519)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("member {}: not a 32-byte hex key", id.party))?;
                VerifyingKey::from_bytes(&b)
                    .map_err(|_| format!("member {}: not a valid key", id.party))
            })
            .collect::<Result<Vec<_>, String>>();
        let keys = match keys {
            Ok(k) => {
                push(
                    "identities",
                    Ok(format!(
                        "{} members{}",
                        k.len(),
                        if pinned.is_some() {
                            ", the pinned keys"
                        } else {
                            ""
                        }
                    )),
                );
                k
            }
            Err(e) => {
                push("identities", Err(e));
                return Err(String::new());
            }
        };
        let session: [u8; 32] = hex::decode(&f.session)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("session: not 32 bytes of hex")?;
        let bytes = |h: &str| hex::decode(h).map_err(|e| format!("not hex: {e}"));
        let (a, b) = (bytes(&f.first)?, bytes(&f.second)?);
        let ev = match f.kind.as_str() {
            "broadcasts" => Evidence::Broadcasts(
                Signed::from_bytes(&session, &keys, &a)?,
                Signed::from_bytes(&session, &keys, &b)?,
            ),
            "echoes" => Evidence::Echoes(
                SignedEcho::from_bytes(&session, &keys, &a)?,
                SignedEcho::from_bytes(&session, &keys, &b)?,
            ),
            other => return Err(format!("unknown kind {other:?}")),
        };
        let who = ev.verify(&session, &keys)?;
        if who != f.culprit {
            return Err(format!(
                "the records prove member {who}'s equivocation, the file accuses member {}",
                f.culprit
            ));
        }
        Ok((who, f.kind))
    })();
    let culprit = match culprit {
        Ok((who, kind)) => {
            push(
                "equivocation",
                Ok(format!(
                    "member {who} signed two different {kind} for one slot of this session"
                )),
            );
            Some(who)
        }
        Err(e) if e.is_empty() => None,
        Err(e) => {
            push("equivocation", Err(e));
            None
        }
    };
    (
        Verdict_ {
            checks,
            key_fingerprint: None,
        },
        culprit,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use medtech_threshold::PartyIndex;

    const SESSION: [u8; 32] = [7; 32];
    const TAG: u64 = 42;

    fn keys(n: u16) -> (Vec<SigningKey>, Vec<VerifyingKey>) {
        let sk: Vec<SigningKey> = (1..=n)
            .map(|i| SigningKey::from_bytes(&[i as u8; 32]))
            .collect();
        let vk = sk.iter().map(|k| k.verifying_key()).collect();
        (sk, vk)
    }

    /// Member `from`'s broadcast for the phase (its opening broadcast of a 512-bit, 4-party
    /// key generation); `variant` seeds its randomness, so two variants are two versions.
    fn broadcast(sk: &[SigningKey], from: u16, variant: u8) -> Signed {
        use rand_core::SeedableRng;
        let params = medtech_threshold::dkg::Parameters::new(512, 4, 2, SESSION).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(u64::from(variant));
        let (_, first) =
            medtech_threshold::dkg::Party::new(&params, PartyIndex(from), &mut rng).unwrap();
        let m: Message = first.broadcast.unwrap();
        Signed::sign(&SESSION, from, &sk[usize::from(from) - 1], m.to_bytes())
    }

    /// What each member holds: `views[i][s]` is the variant of sender s's broadcast member i
    /// received.
    fn rounds(sk: &[SigningKey], views: &[Vec<u8>]) -> (Vec<EchoRound>, Vec<SignedEcho>) {
        let n = views.len() as u16;
        let members: Vec<u16> = (1..=n).collect();
        let mut rs = Vec::new();
        let mut es = Vec::new();
        let mut cache: BTreeMap<(u16, u8), Signed> = BTreeMap::new();
        for (i, view) in views.iter().enumerate() {
            let me = i as u16 + 1;
            let received = view
                .iter()
                .enumerate()
                .map(|(s, v)| {
                    let s = s as u16 + 1;
                    let b = cache
                        .entry((s, *v))
                        .or_insert_with(|| broadcast(sk, s, *v))
                        .clone();
                    (s, b)
                })
                .collect();
            let (r, e) = EchoRound::start(&SESSION, me, &sk[i], TAG, &members, received);
            rs.push(r);
            es.push(e);
        }
        (rs, es)
    }

    /// Delivers every honest member's echo to the other honest ones and then every action
    /// (relays, shown copies) until nothing is left to deliver.
    fn deliver(rs: &mut [EchoRound], honest: &[usize], mut queue: Vec<(usize, Action)>) {
        while let Some((from, a)) = queue.pop() {
            for &to in honest.iter().filter(|&&to| to != from) {
                let taken = match a.clone() {
                    Action::Relay(e) => rs[to].on_echo(e),
                    Action::Show(s) => rs[to].on_copy(s),
                };
                if let Taken::Yes(actions) = taken {
                    queue.extend(actions.into_iter().map(|x| (to, x)));
                }
            }
        }
    }

    fn echoes_of(es: &[SignedEcho], honest: &[usize]) -> Vec<(usize, Action)> {
        honest
            .iter()
            .map(|&i| (i, Action::Relay(es[i].clone())))
            .collect()
    }

    #[test]
    fn consistent_echoes_agree() {
        let (sk, _) = keys(4);
        let (mut rs, es) = rounds(&sk, &vec![vec![0; 4]; 4]);
        deliver(&mut rs, &[0, 1, 2, 3], echoes_of(&es, &[0, 1, 2, 3]));
        for r in &rs {
            assert_eq!(*r.verdict(), Verdict::Agreed);
        }
    }

    #[test]
    fn an_equivocating_sender_is_named_by_every_honest_member_with_evidence() {
        let (sk, vk) = keys(4);
        // Member 1 sent version 0 to members 1 and 2, version 1 to members 3 and 4; it then
        // echoes honestly to no one (it stays silent).
        let views = vec![
            vec![0, 0, 0, 0],
            vec![0, 0, 0, 0],
            vec![1, 0, 0, 0],
            vec![1, 0, 0, 0],
        ];
        let (mut rs, es) = rounds(&sk, &views);
        let honest = [1, 2, 3];
        deliver(&mut rs, &honest, echoes_of(&es, &honest));
        for &i in &honest {
            match rs[i].verdict() {
                Verdict::Proven(ev) => {
                    assert_eq!(ev.verify(&SESSION, &vk), Ok(1), "member {}", i + 1);
                }
                v => panic!("member {} did not prove the equivocation: {v:?}", i + 1),
            }
        }
    }

    #[test]
    fn an_echo_that_lies_about_a_hash_cannot_frame_an_honest_sender() {
        let (sk, vk) = keys(3);
        let (mut rs, es) = rounds(&sk, &vec![vec![0; 3]; 3]);
        // Member 3 echoes, to member 1 only, another hash for member 2's broadcast.
        let mut lie = es[2].echo.clone();
        lie.hashes.insert(2, [0xee; 32]);
        let lie = SignedEcho::sign(&SESSION, 3, &sk[2], lie);
        let honest = [0, 1];
        let mut queue = echoes_of(&es, &honest);
        if let Taken::Yes(a) = rs[0].on_echo(lie.clone()) {
            queue.extend(a.into_iter().map(|x| (0, x)));
        }
        deliver(&mut rs, &honest, queue);
        for &i in &honest {
            assert!(
                !matches!(rs[i].verdict(), Verdict::Proven(e) if e.culprit() == 2),
                "member 2 must not be named"
            );
            assert_ne!(*rs[i].verdict(), Verdict::Agreed, "member {}", i + 1);
        }
        // Member 1 saw the lie first hand; member 2 through the relay and is left waiting for a
        // copy member 3 cannot show: the deadline names member 3 at both.
        let (culprits, _) = rs[0].on_timeout().unwrap();
        assert_eq!(culprits, vec![3]);
        let (culprits, _) = rs[1].on_timeout().unwrap();
        assert_eq!(culprits, vec![3]);
        // Showing a copy of member 2's real broadcast settles nothing either.
        rs[1].on_copy(broadcast(&sk, 2, 0));
        assert_eq!(rs[1].on_timeout().unwrap().0, vec![3]);
        // A "copy" member 3 made up (not signed by member 2) never reaches the state machine:
        // it does not verify.
        let mut forged = broadcast(&sk, 2, 9);
        forged.signature = broadcast(&sk, 3, 9).signature;
        assert!(forged.verify(&SESSION, &vk).is_err());
    }

    #[test]
    fn a_member_showing_two_echoes_is_named_by_every_honest_member() {
        let (sk, vk) = keys(3);
        let (mut rs, es) = rounds(&sk, &vec![vec![0; 3]; 3]);
        // Member 3 sends member 1 its true echo and member 2 another one.
        let mut other = es[2].echo.clone();
        other.hashes.insert(1, [0xab; 32]);
        let other = SignedEcho::sign(&SESSION, 3, &sk[2], other);
        let honest = [0, 1];
        let mut queue = echoes_of(&es, &honest);
        for (i, e) in [(0usize, es[2].clone()), (1, other)] {
            if let Taken::Yes(a) = rs[i].on_echo(e) {
                queue.extend(a.into_iter().map(|x| (i, x)));
            }
        }
        deliver(&mut rs, &honest, queue);
        for &i in &honest {
            match rs[i].verdict() {
                Verdict::Proven(ev) => assert_eq!(ev.verify(&SESSION, &vk), Ok(3)),
                v => panic!("member {}: {v:?}", i + 1),
            }
        }
    }

    #[test]
    fn an_echo_listing_other_senders_is_its_members_fault() {
        let (sk, _) = keys(3);
        let (mut rs, es) = rounds(&sk, &vec![vec![0; 3]; 3]);
        let mut short = es[2].echo.clone();
        short.hashes.remove(&2);
        let short = SignedEcho::sign(&SESSION, 3, &sk[2], short);
        rs[0].on_echo(short);
        assert!(matches!(rs[0].verdict(), Verdict::Fault(3, _)));
    }

    #[test]
    fn tweaked_evidence_does_not_verify() {
        let (sk, vk) = keys(3);
        let (a, b) = (broadcast(&sk, 1, 0), broadcast(&sk, 1, 1));
        let good = Evidence::Broadcasts(a.clone(), b.clone());
        assert_eq!(good.verify(&SESSION, &vk), Ok(1));
        // One byte of the second broadcast changed: its signature no longer verifies.
        let mut t = b.clone();
        *t.payload.last_mut().unwrap() ^= 1;
        assert!(Evidence::Broadcasts(a.clone(), t)
            .verify(&SESSION, &vk)
            .is_err());
        // Another session.
        assert!(good.verify(&[8; 32], &vk).is_err());
        // Attributed to another member (whose key did not sign it).
        let mut t = b.clone();
        t.from = 2;
        assert!(Evidence::Broadcasts(a.clone(), t)
            .verify(&SESSION, &vk)
            .is_err());
        // The same broadcast twice proves nothing.
        assert!(Evidence::Broadcasts(a.clone(), a.clone())
            .verify(&SESSION, &vk)
            .is_err());
        // Two broadcasts of different slots (two senders) prove nothing.
        let c = broadcast(&sk, 2, 0);
        assert!(Evidence::Broadcasts(a, c).verify(&SESSION, &vk).is_err());
        // Echoes: a changed hash breaks the signature; two echoes of different phases prove
        // nothing.
        let e1 = SignedEcho::sign(
            &SESSION,
            3,
            &sk[2],
            Echo {
                tag: TAG,
                hashes: [(1, [1; 32])].into(),
            },
        );
        let e2 = SignedEcho::sign(
            &SESSION,
            3,
            &sk[2],
            Echo {
                tag: TAG,
                hashes: [(1, [2; 32])].into(),
            },
        );
        assert_eq!(
            Evidence::Echoes(e1.clone(), e2.clone()).verify(&SESSION, &vk),
            Ok(3)
        );
        let mut t = e2.clone();
        t.echo.hashes.insert(1, [3; 32]);
        assert!(Evidence::Echoes(e1.clone(), t)
            .verify(&SESSION, &vk)
            .is_err());
        let e3 = SignedEcho::sign(
            &SESSION,
            3,
            &sk[2],
            Echo {
                tag: TAG + 1,
                hashes: [(1, [2; 32])].into(),
            },
        );
        assert!(Evidence::Echoes(e1, e3).verify(&SESSION, &vk).is_err());
    }

    #[test]
    fn a_late_second_echo_is_caught_by_the_session_log() {
        let (sk, vk) = keys(3);
        let e = |h: u8| {
            SignedEcho::sign(
                &SESSION,
                2,
                &sk[1],
                Echo {
                    tag: TAG,
                    hashes: [(1, [h; 32])].into(),
                },
            )
        };
        let mut log = EchoLog::default();
        assert!(log.record(&e(1)).is_none());
        assert!(log.record(&e(1)).is_none());
        let ev = log.record(&e(2)).expect("two echoes for one phase");
        assert_eq!(ev.verify(&SESSION, &vk), Ok(2));
    }

    #[test]
    fn signed_records_round_trip_and_check_their_signature() {
        let (sk, vk) = keys(2);
        let b = broadcast(&sk, 2, 5);
        assert_eq!(
            Signed::from_bytes(&SESSION, &vk, &b.to_bytes()),
            Ok(b.clone())
        );
        let mut bytes = b.to_bytes();
        bytes[1] = 1; // now claims member 1
        assert!(Signed::from_bytes(&SESSION, &vk, &bytes).is_err());
        let e = SignedEcho::sign(
            &SESSION,
            1,
            &sk[0],
            Echo {
                tag: 9,
                hashes: [(2, [4; 32])].into(),
            },
        );
        assert_eq!(SignedEcho::from_bytes(&SESSION, &vk, &e.to_bytes()), Ok(e));
        assert!(Signed::from_bytes(&SESSION, &vk, &[0u8; 10]).is_err());
    }
}
