//! The anchoring chaincode's rules, as a pure function over a key-value view.
//!
//! The chaincode (name configurable, `medtech-anchor` by default) is a notary of each committee's
//! cosigned checkpoints. It runs on a real Fabric peer as a service ([`super::chaincode`], the
//! `medtech-anchor-chaincode` binary) and, for fast unit tests, inside the in-process gateway
//! double ([`super::sim`]); both call [`invoke`].
//!
//! | Function | Arguments | Success | Refused |
//! |---|---|---|---|
//! | `RegisterCommittee` | `origin`, the committee's keys (JSON `{"threshold": t, "members": [{"name", "key": base64 Ed25519}]}`) | 200 | 403 the caller is not an admin of an MSP in [`ContractConfig::admin_msps`]; 409 a committee is already registered for `origin`; 400 malformed |
//! | `GetCommittee` | `origin` | 200, the registered keys (JSON) or empty | 400 |
//! | `AnchorCheckpoint` | `note` (the C2SP signed note), and, when a checkpoint of `origin` is anchored already, `proof`: the RFC 9162 consistency proof from the latest anchored size to the note's (concatenated 32-byte hashes) | 200, `{"origin","size","root"}` (JSON, root in base64); the same checkpoint again is a no-op | 400 malformed; 403 a caller outside [`ContractConfig::writer_msps`], or fewer than `t` valid signatures of the registered keys; 412 no committee registered for `origin`; 409 a *different* root at that size (equivocation; payload: the anchored note), a size that does not grow, or a proof that does not show the note extends the latest anchored checkpoint |
//! | `GetCheckpoint` | `origin`, `size` (decimal) or `latest` | 200, the anchored note, or empty | 400 |
//!
//! So a checkpoint is on the channel only if `t` members of the committee that a channel admin
//! registered signed it, and every anchored checkpoint of an origin extends the previous one:
//! a committee that forks its log after anchoring is caught by the chaincode itself, and a
//! forged note (a root nobody signed, or signed by keys of someone's choosing) is refused.
//! Rotating a registered key set (a committee change signed by `t` of the current set) is not
//! built yet: a channel admin re-registers under a new origin.
//!
//! World-state keys are Fabric composite keys (`0x00 ‖ type ‖ 0x00 ‖ attr ‖ 0x00 …`):
//! `medtech.checkpoint/origin/size (20 digits)` → the note, `medtech.latest/origin` → the largest
//! anchored size (decimal), `medtech.committee/origin` → the registered keys.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use prost::Message as _;
use serde::{Deserialize, Serialize};

use medtech_protos::fabric as pb;
use medtech_protos::fabric::Response;

use crate::checkpoint::{verify_extends, NodeIdentity, SignedCheckpoint};
use crate::merkle::Hash;

/// `AnchorCheckpoint`.
pub const ANCHOR: &str = "AnchorCheckpoint";
/// `GetCheckpoint`.
pub const GET: &str = "GetCheckpoint";
/// `RegisterCommittee`.
pub const REGISTER: &str = "RegisterCommittee";
/// `GetCommittee`.
pub const GET_COMMITTEE: &str = "GetCommittee";
/// Default chaincode name.
pub const DEFAULT_CHAINCODE: &str = "medtech-anchor";

/// Fabric's composite key: `0x00 ‖ kind ‖ 0x00 ‖ each attribute ‖ 0x00`.
fn composite(kind: &str, attributes: &[&str]) -> String {
    let mut k = format!("\u{0}{kind}\u{0}");
    for a in attributes {
        k.push_str(a);
        k.push('\u{0}');
    }
    k
}

/// World-state key of the checkpoint of `origin` at `size`.
pub fn checkpoint_key(origin: &str, size: u64) -> String {
    composite("medtech.checkpoint", &[origin, &format!("{size:020}")])
}

/// World-state key of the largest anchored size of `origin`.
pub fn latest_key(origin: &str) -> String {
    composite("medtech.latest", &[origin])
}

/// World-state key of the committee registered for `origin`.
pub fn committee_key(origin: &str) -> String {
    composite("medtech.committee", &[origin])
}

/// Who may do what; set by whoever deploys the chaincode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContractConfig {
    /// MSP IDs whose admins (certificates with the `admin` OU, Fabric's NodeOU) may register a
    /// committee. Empty: nobody may.
    pub admin_msps: Vec<String>,
    /// MSP IDs whose members may anchor. Empty: any member of the channel (its signature
    /// checks are what protect the anchored data).
    pub writer_msps: Vec<String>,
}

/// The identity that created the proposal (its signature was checked by the peer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// MSP ID.
    pub msp_id: String,
    /// Whether the certificate carries the `admin` organizational unit.
    pub is_admin: bool,
}

impl Caller {
    /// The creator of a `SerializedIdentity`.
    pub fn from_creator(serialized_identity: &[u8]) -> Result<Caller, String> {
        let id = pb::SerializedIdentity::decode(serialized_identity)
            .map_err(|_| "the creator is not a SerializedIdentity".to_owned())?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&id.id_bytes)
            .map_err(|_| "the creator's certificate is not PEM".to_owned())?;
        let cert = pem
            .parse_x509()
            .map_err(|_| "the creator's certificate is not X.509".to_owned())?;
        let is_admin = cert
            .subject()
            .iter_organizational_unit()
            .any(|ou| ou.as_str().is_ok_and(|s| s == "admin"));
        Ok(Caller {
            msp_id: id.mspid,
            is_admin,
        })
    }

    /// The creator of a signed proposal.
    pub fn from_signed_proposal(sp: &pb::SignedProposal) -> Result<Caller, String> {
        let bad = |m: &str| format!("signed proposal: {m}");
        let p = pb::Proposal::decode(sp.proposal_bytes.as_slice()).map_err(|_| bad("proposal"))?;
        let h = pb::Header::decode(p.header.as_slice()).map_err(|_| bad("header"))?;
        let sh = pb::SignatureHeader::decode(h.signature_header.as_slice())
            .map_err(|_| bad("signature header"))?;
        Caller::from_creator(&sh.creator)
    }
}

/// A committee's keys as registered for an origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeKeys {
    /// Signatures needed on a checkpoint.
    pub threshold: usize,
    /// The members.
    pub members: Vec<CommitteeMember>,
}

/// One member's checkpoint-signing key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeMember {
    /// Name in notes.
    pub name: String,
    /// Ed25519 public key, base64.
    pub key: String,
}

impl CommitteeKeys {
    /// From the committee's identities.
    pub fn new(threshold: usize, members: &[NodeIdentity]) -> Self {
        CommitteeKeys {
            threshold,
            members: members
                .iter()
                .map(|m| CommitteeMember {
                    name: m.name.clone(),
                    key: B64.encode(m.key.as_bytes()),
                })
                .collect(),
        }
    }

    /// Checked: `1 ≤ t ≤ n`, distinct names, valid keys.
    pub fn identities(&self) -> Result<Vec<NodeIdentity>, String> {
        if self.members.is_empty() || self.threshold == 0 || self.threshold > self.members.len() {
            return Err(format!(
                "a committee needs 1 <= threshold <= members ({} of {})",
                self.threshold,
                self.members.len()
            ));
        }
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for m in &self.members {
            if m.name.is_empty() || m.name.contains(char::is_whitespace) || !names.insert(&m.name) {
                return Err(format!(
                    "member name {:?} is empty, spaced or repeated",
                    m.name
                ));
            }
            let bytes: [u8; 32] = B64
                .decode(&m.key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{}: the key is not 32 bytes of base64", m.name))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("{}: not an Ed25519 public key", m.name))?;
            // A small-order key verifies forged signatures on anything; a repeated key would
            // count one signer twice.
            if key.is_weak() {
                return Err(format!("{}: a small-order (weak) Ed25519 key", m.name));
            }
            if out.iter().any(|o: &NodeIdentity| o.key == key) {
                return Err(format!("{}: the same key as another member", m.name));
            }
            out.push(NodeIdentity {
                name: m.name.clone(),
                key,
            });
        }
        Ok(out)
    }
}

/// The outcome of one invocation: the response and the writes to apply if it commits.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The chaincode response.
    pub response: Response,
    /// Keys written (applied only when the transaction commits).
    pub writes: BTreeMap<String, Vec<u8>>,
}

/// A response refusing the invocation.
pub fn error_response(status: i32, message: &str) -> Response {
    Response {
        status,
        message: message.to_owned(),
        payload: Vec::new(),
    }
}

fn reply(status: i32, message: &str, payload: Vec<u8>) -> Outcome {
    Outcome {
        response: Response {
            status,
            message: message.to_owned(),
            payload,
        },
        writes: BTreeMap::new(),
    }
}

/// Runs `function(args)` for `caller` against the world state read through `get`.
pub fn invoke(
    config: &ContractConfig,
    caller: &Caller,
    get: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    function: &str,
    args: &[Vec<u8>],
) -> Outcome {
    match function {
        ANCHOR => anchor(config, caller, get, args),
        GET => get_checkpoint(get, args),
        REGISTER => register(config, caller, get, args),
        GET_COMMITTEE => match args {
            [origin] => match std::str::from_utf8(origin) {
                Ok(o) => reply(200, "", get(&committee_key(o)).unwrap_or_default()),
                Err(_) => reply(400, "origin must be UTF-8", Vec::new()),
            },
            _ => reply(400, "GetCommittee takes one argument: origin", Vec::new()),
        },
        other => reply(400, &format!("unknown function {other:?}"), Vec::new()),
    }
}

fn register(
    config: &ContractConfig,
    caller: &Caller,
    get: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    args: &[Vec<u8>],
) -> Outcome {
    let [origin, keys] = args else {
        return reply(
            400,
            "RegisterCommittee takes two arguments: origin and the committee's keys (JSON)",
            Vec::new(),
        );
    };
    if !(caller.is_admin && config.admin_msps.contains(&caller.msp_id)) {
        return reply(
            403,
            &format!(
                "only an admin of {:?} may register a committee (the caller is {}{})",
                config.admin_msps,
                if caller.is_admin {
                    "an admin of "
                } else {
                    "a member of "
                },
                caller.msp_id
            ),
            Vec::new(),
        );
    }
    let Ok(origin) = std::str::from_utf8(origin) else {
        return reply(400, "origin must be UTF-8", Vec::new());
    };
    if origin.is_empty() || origin.contains('\u{0}') || origin.contains('\n') {
        return reply(400, "origin must be a non-empty line", Vec::new());
    }
    let parsed: CommitteeKeys = match serde_json::from_slice(keys) {
        Ok(k) => k,
        Err(e) => return reply(400, &format!("committee keys: {e}"), Vec::new()),
    };
    if let Err(e) = parsed.identities() {
        return reply(400, &e, Vec::new());
    }
    let key = committee_key(origin);
    if get(&key).is_some() {
        return reply(
            409,
            &format!("a committee is already registered for {origin}"),
            Vec::new(),
        );
    }
    let mut out = reply(200, "registered", Vec::new());
    out.writes
        .insert(key, serde_json::to_vec(&parsed).unwrap_or_default());
    out
}

/// Most signature lines a note may carry (a committee is far smaller; each line costs a
/// signature check on every endorsing peer).
pub const MAX_SIGNATURE_LINES: usize = 64;
/// Most hashes in a consistency proof (a proof has at most about 2·log₂ of the size).
pub const MAX_PROOF_HASHES: usize = 128;

/// The answer to an accepted anchor (fields in a fixed order on every endorsing peer).
#[derive(Serialize)]
struct AnchorSummary<'a> {
    origin: &'a str,
    size: u64,
    root: String,
}

fn anchor(
    config: &ContractConfig,
    caller: &Caller,
    get: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    args: &[Vec<u8>],
) -> Outcome {
    let (note, proof) =
        match args {
            [note] => (note, None),
            [note, proof] => (note, Some(proof)),
            _ => return reply(
                400,
                "AnchorCheckpoint takes the signed note and, after the first, a consistency proof",
                Vec::new(),
            ),
        };
    if !config.writer_msps.is_empty() && !config.writer_msps.contains(&caller.msp_id) {
        return reply(
            403,
            &format!("{} may not anchor checkpoints", caller.msp_id),
            Vec::new(),
        );
    }
    let Ok(text) = std::str::from_utf8(note) else {
        return reply(400, "note is not UTF-8", Vec::new());
    };
    let signed = match SignedCheckpoint::from_note(text) {
        Ok(s) => s,
        Err(e) => return reply(400, &e.to_string(), Vec::new()),
    };
    // One spelling per checkpoint: what is stored is what a C2SP verifier reads.
    if signed.to_note() != text {
        return reply(400, "note is not in canonical form", Vec::new());
    }
    if signed.signatures.len() > MAX_SIGNATURE_LINES {
        return reply(
            400,
            &format!("more than {MAX_SIGNATURE_LINES} signature lines"),
            Vec::new(),
        );
    }
    if proof.is_some_and(|p| p.len() > MAX_PROOF_HASHES * 32) {
        return reply(400, "consistency proof too long", Vec::new());
    }
    let cp = &signed.checkpoint;
    if cp.size == 0 {
        return reply(400, "an empty log has nothing to anchor", Vec::new());
    }
    let Some(committee) = get(&committee_key(&cp.origin))
        .and_then(|v| serde_json::from_slice::<CommitteeKeys>(&v).ok())
    else {
        return reply(
            412,
            &format!(
                "no committee registered for {}: a channel admin registers its keys with RegisterCommittee",
                cp.origin
            ),
            Vec::new(),
        );
    };
    let members = match committee.identities() {
        Ok(m) => m,
        Err(e) => return reply(500, &format!("registered committee: {e}"), Vec::new()),
    };
    let signers = match signed.verify_quorum(&members, committee.threshold) {
        Ok(s) => s,
        Err(e) => {
            return reply(
                403,
                &format!(
                    "not signed by the registered committee of {}: {e}",
                    cp.origin
                ),
                Vec::new(),
            )
        }
    };
    // Stored: the checkpoint with its valid signatures only, one per member, so an anchored
    // note carries nothing a strict verifier would refuse.
    let mut stored = SignedCheckpoint::new(cp.clone());
    for line in &signed.signatures {
        if !signers.contains(&line.name) || stored.signatures.iter().any(|o| o.name == line.name) {
            continue;
        }
        let mut one = SignedCheckpoint::new(cp.clone());
        one.signatures.push(line.clone());
        if one.valid_signers(&members).contains(&line.name) {
            stored.signatures.push(line.clone());
        }
    }
    let key = checkpoint_key(&cp.origin, cp.size);
    let summary = serde_json::to_vec(&AnchorSummary {
        origin: &cp.origin,
        size: cp.size,
        root: B64.encode(cp.root),
    })
    .unwrap_or_default();
    if let Some(existing) = get(&key) {
        let same = std::str::from_utf8(&existing)
            .ok()
            .and_then(|t| SignedCheckpoint::from_note(t).ok())
            .is_some_and(|e| e.checkpoint == *cp);
        if same {
            return reply(200, "already anchored", summary);
        }
        return reply(
            409,
            &format!(
                "a different root is already anchored for {} at size {}: equivocation",
                cp.origin, cp.size
            ),
            existing,
        );
    }
    let latest = get(&latest_key(&cp.origin))
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<u64>().ok());
    if let Some(latest) = latest {
        if cp.size < latest {
            return reply(
                409,
                &format!(
                    "size {} does not grow: {} is anchored at size {latest}",
                    cp.size, cp.origin
                ),
                Vec::new(),
            );
        }
        let Some(previous) = get(&checkpoint_key(&cp.origin, latest))
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|t| SignedCheckpoint::from_note(&t).ok())
        else {
            return reply(500, "the latest anchored note is unreadable", Vec::new());
        };
        let Some(proof) = proof else {
            return reply(
                409,
                &format!(
                    "a consistency proof from the anchored size {latest} to {} is needed",
                    cp.size
                ),
                Vec::new(),
            );
        };
        if proof.len() % 32 != 0 {
            return reply(
                400,
                "a consistency proof is whole 32-byte hashes",
                Vec::new(),
            );
        }
        let hashes: Vec<Hash> = proof
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        if let Err(e) = verify_extends(&previous.checkpoint, cp, &hashes) {
            return reply(
                409,
                &format!("the note does not extend the checkpoint anchored at size {latest}: {e}"),
                Vec::new(),
            );
        }
    }
    let mut out = reply(200, "anchored", summary);
    out.writes.insert(key, stored.to_note().into_bytes());
    out.writes
        .insert(latest_key(&cp.origin), cp.size.to_string().into_bytes());
    out
}

fn get_checkpoint(get: &mut dyn FnMut(&str) -> Option<Vec<u8>>, args: &[Vec<u8>]) -> Outcome {
    let [origin, size] = args else {
        return reply(
            400,
            "GetCheckpoint takes two arguments: origin and size",
            Vec::new(),
        );
    };
    let (Ok(origin), Ok(size)) = (std::str::from_utf8(origin), std::str::from_utf8(size)) else {
        return reply(400, "arguments must be UTF-8", Vec::new());
    };
    let size = if size == "latest" {
        match get(&latest_key(origin))
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(s) => s,
            None => return reply(200, &format!("nothing anchored for {origin}"), Vec::new()),
        }
    } else {
        match size.parse::<u64>() {
            Ok(s) => s,
            Err(_) => {
                return reply(
                    400,
                    "size must be a decimal number or \"latest\"",
                    Vec::new(),
                )
            }
        }
    };
    match get(&checkpoint_key(origin, size)) {
        Some(note) => reply(200, "", note),
        // Found nothing is an answer, not an error: gateways turn chaincode errors into gRPC
        // failures whose wording differs between Fabric versions.
        None => reply(
            200,
            &format!("no checkpoint anchored for {origin} at size {size}"),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, NodeKey};
    use crate::merkle::MerkleLog;

    const ORIGIN: &str = "o";

    fn keys() -> Vec<NodeKey> {
        (1..=3u8)
            .map(|i| NodeKey::from_secret_bytes(&format!("m{i}"), &[i; 32]))
            .collect()
    }

    fn config() -> ContractConfig {
        ContractConfig {
            admin_msps: vec!["Org1MSP".into()],
            writer_msps: Vec::new(),
        }
    }

    fn admin() -> Caller {
        Caller {
            msp_id: "Org1MSP".into(),
            is_admin: true,
        }
    }

    fn member() -> Caller {
        Caller {
            msp_id: "Org1MSP".into(),
            is_admin: false,
        }
    }

    fn log(n: u64) -> MerkleLog {
        let mut l = MerkleLog::new();
        for i in 0..n {
            l.append(&i.to_be_bytes());
        }
        l
    }

    /// A note of `ORIGIN` at `size` of the log `l`, signed by `signers` of [`keys`].
    fn note_of(l: &MerkleLog, size: u64, signers: &[usize]) -> Vec<u8> {
        note_with_root(size, l.root_at(size).unwrap(), signers)
    }

    fn note_with_root(size: u64, root: Hash, signers: &[usize]) -> Vec<u8> {
        let mut s = SignedCheckpoint::new(Checkpoint {
            origin: ORIGIN.into(),
            size,
            root,
        });
        let k = keys();
        for &i in signers {
            s.sign(&k[i]);
        }
        s.to_note().into_bytes()
    }

    fn proof(l: &MerkleLog, old: u64, new: u64) -> Vec<u8> {
        l.consistency_proof(old, new).unwrap().concat()
    }

    fn committee_json(t: usize) -> Vec<u8> {
        let ids: Vec<_> = keys().iter().map(NodeKey::identity).collect();
        serde_json::to_vec(&CommitteeKeys::new(t, &ids)).unwrap()
    }

    fn run_as(
        state: &mut BTreeMap<String, Vec<u8>>,
        caller: &Caller,
        f: &str,
        args: &[Vec<u8>],
    ) -> Response {
        let snapshot = state.clone();
        let out = invoke(
            &config(),
            caller,
            &mut |k| snapshot.get(k).cloned(),
            f,
            args,
        );
        if (200..400).contains(&out.response.status) {
            state.extend(out.writes);
        } else {
            assert!(out.writes.is_empty(), "a refusal writes nothing");
        }
        out.response
    }

    fn run(state: &mut BTreeMap<String, Vec<u8>>, f: &str, args: &[Vec<u8>]) -> Response {
        run_as(state, &member(), f, args)
    }

    /// A channel with `ORIGIN`'s committee (t = 2 of 3) registered by an admin.
    fn registered() -> BTreeMap<String, Vec<u8>> {
        let mut st = BTreeMap::new();
        let r = run_as(
            &mut st,
            &admin(),
            REGISTER,
            &[ORIGIN.into(), committee_json(2)],
        );
        assert_eq!(r.status, 200, "{}", r.message);
        st
    }

    #[test]
    fn anchor_then_get_and_latest() {
        let l = log(9);
        let mut st = registered();
        assert_eq!(run(&mut st, ANCHOR, &[note_of(&l, 5, &[0, 1])]).status, 200);
        let r = run(&mut st, ANCHOR, &[note_of(&l, 9, &[1, 2]), proof(&l, 5, 9)]);
        assert_eq!(r.status, 200, "{}", r.message);
        let got = run(&mut st, GET, &[b"o".to_vec(), b"5".to_vec()]);
        assert_eq!((got.status, got.payload), (200, note_of(&l, 5, &[0, 1])));
        let latest = run(&mut st, GET, &[b"o".to_vec(), b"latest".to_vec()]);
        assert_eq!(
            (latest.status, latest.payload),
            (200, note_of(&l, 9, &[1, 2]))
        );
        let none = run(&mut st, GET, &[b"o".to_vec(), b"6".to_vec()]);
        assert_eq!((none.status, none.payload.len()), (200, 0));
        let none = run(&mut st, GET, &[b"x".to_vec(), b"latest".to_vec()]);
        assert_eq!((none.status, none.payload.len()), (200, 0));
        let c = run(&mut st, GET_COMMITTEE, &[b"o".to_vec()]);
        assert_eq!(c.payload, committee_json(2));
    }

    /// The first writer does not own an origin: only a channel admin of a configured MSP
    /// registers its keys, once.
    #[test]
    fn only_a_channel_admin_registers_a_committee_and_only_once() {
        let mut st = BTreeMap::new();
        let r = run_as(
            &mut st,
            &member(),
            REGISTER,
            &[ORIGIN.into(), committee_json(2)],
        );
        assert_eq!(r.status, 403, "{}", r.message);
        let other_admin = Caller {
            msp_id: "Org2MSP".into(),
            is_admin: true,
        };
        let r = run_as(
            &mut st,
            &other_admin,
            REGISTER,
            &[ORIGIN.into(), committee_json(2)],
        );
        assert_eq!(r.status, 403, "{}", r.message);
        assert!(st.is_empty());
        let mut st = registered();
        let r = run_as(
            &mut st,
            &admin(),
            REGISTER,
            &[ORIGIN.into(), committee_json(1)],
        );
        assert_eq!(
            r.status, 409,
            "re-registering replaces no keys: {}",
            r.message
        );
        let bad = serde_json::to_vec(&serde_json::json!({"threshold": 4, "members": []})).unwrap();
        let r = run_as(&mut st, &admin(), REGISTER, &[b"p".to_vec(), bad]);
        assert_eq!(r.status, 400);
    }

    #[test]
    fn a_note_for_an_origin_without_a_registered_committee_is_refused() {
        let l = log(4);
        let mut st = BTreeMap::new();
        let r = run(&mut st, ANCHOR, &[note_of(&l, 4, &[0, 1, 2])]);
        assert_eq!(r.status, 412, "{}", r.message);
    }

    #[test]
    fn a_note_with_t_minus_1_signatures_is_refused() {
        let l = log(4);
        let mut st = registered();
        let r = run(&mut st, ANCHOR, &[note_of(&l, 4, &[2])]);
        assert_eq!(r.status, 403, "{}", r.message);
        assert!(r.message.contains("not signed by the registered committee"));
        // The same signer twice is one signer.
        let mut s =
            SignedCheckpoint::from_note(std::str::from_utf8(&note_of(&l, 4, &[2])).unwrap())
                .unwrap();
        s.signatures.push(s.signatures[0].clone());
        let r = run(&mut st, ANCHOR, &[s.to_note().into_bytes()]);
        assert_eq!(r.status, 403, "{}", r.message);
    }

    /// Keys of someone's choosing (another committee's, or made up for the attack) carry no
    /// weight for this origin, whatever names they sign under.
    #[test]
    fn a_note_signed_by_another_committees_keys_is_refused() {
        let l = log(4);
        let mut st = registered();
        let mut s = SignedCheckpoint::new(Checkpoint {
            origin: ORIGIN.into(),
            size: 4,
            root: l.root_at(4).unwrap(),
        });
        for i in 1..=3u8 {
            s.sign(&NodeKey::from_secret_bytes(
                &format!("m{i}"),
                &[i + 100; 32],
            ));
        }
        let r = run(&mut st, ANCHOR, &[s.to_note().into_bytes()]);
        assert_eq!(r.status, 403, "{}", r.message);
    }

    /// A root nobody signed: the signatures of a real checkpoint moved onto another root.
    #[test]
    fn a_forged_root_is_refused() {
        let l = log(4);
        let mut st = registered();
        let real =
            SignedCheckpoint::from_note(std::str::from_utf8(&note_of(&l, 4, &[0, 1, 2])).unwrap())
                .unwrap();
        let mut forged = real.clone();
        forged.checkpoint.root = [7; 32];
        let r = run(&mut st, ANCHOR, &[forged.to_note().into_bytes()]);
        assert_eq!(r.status, 403, "{}", r.message);
    }

    #[test]
    fn a_shrinking_size_is_refused() {
        let l = log(9);
        let mut st = registered();
        assert_eq!(run(&mut st, ANCHOR, &[note_of(&l, 9, &[0, 1])]).status, 200);
        let r = run(&mut st, ANCHOR, &[note_of(&l, 5, &[0, 1])]);
        assert_eq!(r.status, 409, "{}", r.message);
        assert!(r.message.contains("does not grow"), "{}", r.message);
    }

    /// A quorum that forks its log after anchoring: its new checkpoint does not extend the
    /// anchored one, and no proof can make it.
    #[test]
    fn a_forked_log_cannot_be_anchored_after_its_checkpoint() {
        let l = log(9);
        let mut st = registered();
        assert_eq!(run(&mut st, ANCHOR, &[note_of(&l, 5, &[0, 1])]).status, 200);
        // It rewrites entries 3 and 4, inside the anchored size 5.
        let mut fork = log(3);
        for i in 100..106u64 {
            fork.append(&i.to_be_bytes());
        }
        let forked = note_of(&fork, 9, &[0, 1, 2]);
        let r = run(&mut st, ANCHOR, std::slice::from_ref(&forked));
        assert_eq!(r.status, 409, "no proof: {}", r.message);
        for p in [proof(&l, 5, 9), proof(&fork, 5, 9), Vec::new()] {
            let r = run(&mut st, ANCHOR, &[forked.clone(), p]);
            assert_eq!(r.status, 409, "{}", r.message);
        }
        let r = run(&mut st, ANCHOR, &[forked, vec![0; 31]]);
        assert_eq!(r.status, 400);
        // The honest extension still anchors.
        let r = run(&mut st, ANCHOR, &[note_of(&l, 9, &[0, 2]), proof(&l, 5, 9)]);
        assert_eq!(r.status, 200, "{}", r.message);
    }

    #[test]
    fn equivocating_root_at_an_anchored_size_is_refused() {
        let l = log(5);
        let mut st = registered();
        run(&mut st, ANCHOR, &[note_of(&l, 5, &[0, 1])]);
        let again = run(&mut st, ANCHOR, &[note_of(&l, 5, &[0, 1])]);
        assert_eq!(again.status, 200, "idempotent");
        let r = run(&mut st, ANCHOR, &[note_with_root(5, [2; 32], &[0, 1])]);
        assert_eq!(r.status, 409);
        assert!(r.message.contains("equivocation"));
        assert_eq!(
            r.payload,
            note_of(&l, 5, &[0, 1]),
            "the anchored note is returned as evidence"
        );
    }

    #[test]
    fn writers_outside_the_configured_msps_are_refused() {
        let l = log(4);
        let mut st = registered();
        let cfg = ContractConfig {
            admin_msps: vec!["Org1MSP".into()],
            writer_msps: vec!["Org1MSP".into()],
        };
        let outsider = Caller {
            msp_id: "Org9MSP".into(),
            is_admin: false,
        };
        let snapshot = st.clone();
        let out = invoke(
            &cfg,
            &outsider,
            &mut |k| snapshot.get(k).cloned(),
            ANCHOR,
            &[note_of(&l, 4, &[0, 1])],
        );
        assert_eq!(out.response.status, 403);
        st.clear();
    }

    #[test]
    fn bad_arguments_get_400() {
        let mut st = registered();
        let before = st.clone();
        assert_eq!(run(&mut st, ANCHOR, &[]).status, 400);
        assert_eq!(run(&mut st, ANCHOR, &[b"garbage".to_vec()]).status, 400);
        assert_eq!(run(&mut st, ANCHOR, &[vec![0xff, 0xfe]]).status, 400);
        assert_eq!(
            run(&mut st, GET, &[b"o".to_vec(), b"-1".to_vec()]).status,
            400
        );
        assert_eq!(run(&mut st, "Drop", &[]).status, 400);
        assert_eq!(run(&mut st, GET_COMMITTEE, &[]).status, 400);
        assert_eq!(st, before);
    }

    /// Found by the attacker review: a front-runner stores the committee's checkpoint in
    /// another spelling (`+5`, `005`) or padded with signature lines that do not verify, so a
    /// strict C2SP verifier refuses the anchor and blames the committee.
    #[test]
    fn a_front_run_note_in_another_spelling_is_refused_and_junk_lines_are_not_stored() {
        let l = log(5);
        let mut st = registered();
        let honest = String::from_utf8(note_of(&l, 5, &[0, 1])).unwrap();
        for spelled in [
            honest.replacen("\n5\n", "\n+5\n", 1),
            honest.replacen("\n5\n", "\n005\n", 1),
        ] {
            assert_ne!(spelled, honest);
            let r = run(&mut st, ANCHOR, &[spelled.into_bytes()]);
            assert_eq!(r.status, 400, "{}", r.message);
        }
        let mut padded = SignedCheckpoint::from_note(&honest).unwrap();
        let mut junk = padded.signatures[0].clone();
        junk.signature = [9; 64];
        padded.signatures.push(junk);
        let r = run(&mut st, ANCHOR, &[padded.to_note().into_bytes()]);
        assert_eq!(r.status, 200, "{}", r.message);
        let stored = run(&mut st, GET, &[b"o".to_vec(), b"5".to_vec()]);
        assert_eq!(
            stored.payload,
            honest.into_bytes(),
            "only valid signatures are stored"
        );
        // A flood of signature lines costs every endorsing peer a check each: capped.
        let mut flood = padded.clone();
        while flood.signatures.len() <= MAX_SIGNATURE_LINES {
            flood.signatures.push(flood.signatures[0].clone());
        }
        let r = run(&mut st, ANCHOR, &[flood.to_note().into_bytes()]);
        assert_eq!(r.status, 400, "{}", r.message);
    }

    /// A small-order key verifies a forged signature on any message: a member who registers one
    /// would let t − 1 others reach t. Refused at registration, as is a repeated key.
    #[test]
    fn a_small_order_or_repeated_member_key_is_refused_at_registration() {
        let mut st = BTreeMap::new();
        let ids: Vec<_> = keys().iter().map(NodeKey::identity).collect();
        let mut weak = CommitteeKeys::new(2, &ids);
        // The identity point, encoded.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        weak.members[2].key = B64.encode(identity);
        let r = run_as(
            &mut st,
            &admin(),
            REGISTER,
            &[ORIGIN.into(), serde_json::to_vec(&weak).unwrap()],
        );
        assert_eq!(r.status, 400, "{}", r.message);
        assert!(r.message.contains("weak"), "{}", r.message);
        let mut repeated = CommitteeKeys::new(2, &ids);
        repeated.members[2].key = repeated.members[0].key.clone();
        let r = run_as(
            &mut st,
            &admin(),
            REGISTER,
            &[ORIGIN.into(), serde_json::to_vec(&repeated).unwrap()],
        );
        assert_eq!(r.status, 400, "{}", r.message);
        assert!(st.is_empty());
    }

    /// Fabric's NodeOU match is exact: a client certificate whose OU is `Admin` (say, a CA
    /// affiliation) is no admin.
    #[test]
    fn a_client_certificate_with_ou_capital_admin_is_not_an_admin() {
        let creator = |ou: &str| {
            let (cert, _) = crate::fabric::sim::issue("Org1MSP", "x", ou).unwrap();
            pb::SerializedIdentity {
                mspid: "Org1MSP".into(),
                id_bytes: cert.into_bytes(),
            }
            .encode_to_vec()
        };
        assert!(Caller::from_creator(&creator("admin")).unwrap().is_admin);
        assert!(!Caller::from_creator(&creator("Admin")).unwrap().is_admin);
        assert!(!Caller::from_creator(&creator("client")).unwrap().is_admin);
    }

    #[test]
    fn a_size_zero_note_is_refused() {
        let mut st = registered();
        let r = run(&mut st, ANCHOR, &[note_with_root(0, [3; 32], &[0, 1, 2])]);
        assert_eq!(r.status, 400, "{}", r.message);
    }

    #[test]
    fn composite_keys_are_fabrics() {
        assert_eq!(
            checkpoint_key("o", 5),
            "\u{0}medtech.checkpoint\u{0}o\u{0}00000000000000000005\u{0}"
        );
        assert_eq!(latest_key("o"), "\u{0}medtech.latest\u{0}o\u{0}");
    }
}
