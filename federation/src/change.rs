//! Committee changes for operators: rotating a member's TLS certificate, moving it to a new
//! address, adding or removing a hospital, changing the cosigning threshold.
//!
//! The ledger applies a change as a `ConfigChange` entry: the next committee (epoch + 1),
//! encoded, with the approvals of at least `t` current members, each an Ed25519 signature over
//! the ledger origin and those exact bytes (`medtech_ledger::entry::config_message`). The state
//! machine re-checks every approval, and once the entry is applied every member pins the new
//! endpoints and the leader makes the Raft voters match them (docs/ledger.md).
//!
//! Across sites the change travels as a [`ChangeFile`] (JSON):
//!
//! 1. an admin fetches the current committee from any member and writes the file
//!    ([`propose`]; `medtech committee propose`);
//! 2. each approving member's operator reads what it says ([`describe`]) and adds an approval
//!    with the member's signing key ([`approve`]; `medtech committee approve`), which never
//!    leaves that site;
//! 3. an admin submits the file to any member (`medtech committee submit`,
//!    `POST /api/v1/committee/changes`), which proposes the entry ([`to_entry`]).
//!
//! Nothing here trusts the file: the committee bytes are decoded and validated at every step,
//! and the ledger decides.

use anyhow::{anyhow, bail, Context};
use medtech_ledger::checkpoint::{NodeIdentity, NodeKey};
use medtech_ledger::entry::approve_committee;
use medtech_ledger::state::{CommitteeConfig, MemberEndpoint};
use medtech_protos::ledger::v1 as pb;
use medtech_protos::Message;
use serde::{Deserialize, Serialize};

/// The format version of [`ChangeFile`].
pub const CHANGE_FILE_VERSION: u32 = 1;

/// A proposed committee change and the approvals collected so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeFile {
    /// [`CHANGE_FILE_VERSION`].
    pub version: u32,
    /// The ledger origin the approvals are bound to.
    pub origin: String,
    /// The next committee, encoded (`medtech.ledger.v1.Committee`), hex.
    pub committee: String,
    /// Approvals so far.
    #[serde(default)]
    pub approvals: Vec<ApprovalJson>,
}

/// One member's approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalJson {
    /// The approving member's name.
    pub member: String,
    /// Its Ed25519 signature, hex (128 digits).
    pub signature: String,
}

/// One edit of the committee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Remove a member (and its endpoint).
    Remove(String),
    /// Pin a new TLS certificate digest (SHA-256 of the DER, hex) for a member.
    Rotate {
        /// The member.
        name: String,
        /// The new digest.
        cert_sha256: String,
    },
    /// Move a member's committee endpoint to a new `host:port`.
    Address {
        /// The member.
        name: String,
        /// The new address.
        addr: String,
    },
    /// Add a member with its signing key and endpoint.
    Add {
        /// Its name.
        name: String,
        /// Its Ed25519 public key, hex.
        signing_key: String,
        /// Its Raft id (unused by the others).
        raft_id: u64,
        /// Its committee `host:port`.
        addr: String,
        /// SHA-256 of its TLS certificate (DER), hex.
        cert_sha256: String,
    },
    /// Set the number of approvals and cosignatures that count.
    Threshold(usize),
}

impl Edit {
    /// Parses the CLI form: `remove=NAME`, `rotate=NAME:DIGEST`, `address=NAME:HOST:PORT`,
    /// `add=NAME:SIGNING_KEY:RAFT_ID:HOST:PORT:DIGEST`, `threshold=T`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (what, arg) = text
            .split_once('=')
            .ok_or_else(|| anyhow!("edit {text:?}: expected WHAT=ARGUMENTS"))?;
        let parts: Vec<&str> = arg.split(':').collect();
        let edit = match (what, parts.as_slice()) {
            ("remove", [name]) => Edit::Remove((*name).to_owned()),
            ("rotate", [name, digest]) => Edit::Rotate {
                name: (*name).to_owned(),
                cert_sha256: digest.to_lowercase(),
            },
            ("address", [name, host, port]) => Edit::Address {
                name: (*name).to_owned(),
                addr: format!("{host}:{port}"),
            },
            ("add", [name, key, raft_id, host, port, digest]) => Edit::Add {
                name: (*name).to_owned(),
                signing_key: key.to_lowercase(),
                raft_id: raft_id
                    .parse()
                    .map_err(|_| anyhow!("edit {text:?}: Raft id {raft_id:?} is not a number"))?,
                addr: format!("{host}:{port}"),
                cert_sha256: digest.to_lowercase(),
            },
            ("threshold", [t]) => Edit::Threshold(
                t.parse()
                    .map_err(|_| anyhow!("edit {text:?}: threshold {t:?} is not a number"))?,
            ),
            _ => bail!(
                "edit {text:?}: expected remove=NAME, rotate=NAME:DIGEST, address=NAME:HOST:PORT, \
                 add=NAME:SIGNING_KEY:RAFT_ID:HOST:PORT:DIGEST or threshold=T"
            ),
        };
        Ok(edit)
    }
}

/// The next committee: `current` with `edits` applied, epoch + 1, validated.
pub fn next_committee(
    current: &CommitteeConfig,
    edits: &[Edit],
) -> anyhow::Result<CommitteeConfig> {
    if edits.is_empty() {
        bail!("a change needs at least one edit");
    }
    let mut next = current.clone();
    next.epoch = current
        .epoch
        .checked_add(1)
        .ok_or_else(|| anyhow!("the committee epoch cannot grow further"))?;
    let known = |next: &CommitteeConfig, name: &str| -> anyhow::Result<()> {
        match next.member(name) {
            Some(_) => Ok(()),
            None => bail!("{name} is not a member"),
        }
    };
    for edit in edits {
        match edit {
            Edit::Remove(name) => {
                known(&next, name)?;
                next.members.retain(|m| &m.name != name);
                next.endpoints.remove(name);
            }
            Edit::Rotate { name, cert_sha256 } => {
                known(&next, name)?;
                endpoint(&mut next, name, "rotate")?
                    .cert_sha256
                    .clone_from(cert_sha256);
            }
            Edit::Address { name, addr } => {
                known(&next, name)?;
                endpoint(&mut next, name, "move")?.addr.clone_from(addr);
            }
            Edit::Add {
                name,
                signing_key,
                raft_id,
                addr,
                cert_sha256,
            } => {
                if next.member(name).is_some() {
                    bail!("{name} is already a member");
                }
                let bytes: [u8; 32] = hex::decode(signing_key)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| anyhow!("{name}'s signing key must be 64 hex digits"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| anyhow!("{name}'s signing key is not an Ed25519 public key"))?;
                next.members.push(NodeIdentity {
                    name: name.clone(),
                    key,
                });
                next.endpoints.insert(
                    name.clone(),
                    MemberEndpoint {
                        raft_id: *raft_id,
                        addr: addr.clone(),
                        cert_sha256: cert_sha256.clone(),
                    },
                );
            }
            Edit::Threshold(t) => next.threshold = *t,
        }
    }
    next.validate()
        .map_err(|e| anyhow!("the changed committee: {e}"))?;
    Ok(next)
}

/// `name`'s endpoint, to `what` it.
fn endpoint<'c>(
    c: &'c mut CommitteeConfig,
    name: &str,
    what: &str,
) -> anyhow::Result<&'c mut MemberEndpoint> {
    c.endpoints
        .get_mut(name)
        .ok_or_else(|| anyhow!("{name} has no endpoint to {what}"))
}

/// Decodes and validates a committee given as hex of its encoding
/// (`medtech.ledger.v1.Committee`), as in a change file and `GET /api/v1/committee/config`.
pub fn decode_committee(hex_text: &str) -> anyhow::Result<CommitteeConfig> {
    let bytes = hex::decode(hex_text).map_err(|_| anyhow!("the committee is not hex"))?;
    let pb = pb::Committee::decode(bytes.as_slice())
        .map_err(|e| anyhow!("the committee does not decode: {e}"))?;
    CommitteeConfig::from_pb(&pb).map_err(|e| anyhow!("the committee: {e}"))
}

/// A change file for `edits` of `current`, without approvals.
pub fn propose(
    origin: &str,
    current: &CommitteeConfig,
    edits: &[Edit],
) -> anyhow::Result<ChangeFile> {
    let next = next_committee(current, edits)?;
    Ok(ChangeFile {
        version: CHANGE_FILE_VERSION,
        origin: origin.to_owned(),
        committee: hex::encode(next.to_pb().encode_to_vec()),
        approvals: Vec::new(),
    })
}

impl ChangeFile {
    /// Parses and checks a change file: its version, and that its committee decodes and is a
    /// valid committee.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let f: ChangeFile = serde_json::from_str(text).context("not a committee change file")?;
        if f.version != CHANGE_FILE_VERSION {
            bail!(
                "change file version {} (this build reads {CHANGE_FILE_VERSION})",
                f.version
            );
        }
        f.committee()?;
        Ok(f)
    }

    /// The encoded next committee.
    pub fn committee_bytes(&self) -> anyhow::Result<Vec<u8>> {
        hex::decode(&self.committee).map_err(|_| anyhow!("the committee is not hex"))
    }

    /// The next committee, decoded and validated.
    pub fn committee(&self) -> anyhow::Result<CommitteeConfig> {
        decode_committee(&self.committee)
    }
}

/// Adds (or replaces) `key`'s approval of the change.
pub fn approve(file: &mut ChangeFile, key: &NodeKey) -> anyhow::Result<()> {
    let bytes = file.committee_bytes()?;
    file.committee()?;
    let a = approve_committee(key, &file.origin, &bytes);
    file.approvals.retain(|x| x.member != a.member);
    file.approvals.push(ApprovalJson {
        member: a.member,
        signature: hex::encode(a.signature),
    });
    Ok(())
}

/// The ledger entry a change file asks for (its `Kind::ConfigChange`).
pub fn to_entry(file: &ChangeFile) -> anyhow::Result<pb::ConfigChange> {
    let committee = file.committee_bytes()?;
    file.committee()?;
    let approvals = file
        .approvals
        .iter()
        .map(|a| {
            let signature = hex::decode(&a.signature)
                .ok()
                .filter(|s| s.len() == 64)
                .ok_or_else(|| anyhow!("{}'s approval is not 128 hex digits", a.member))?;
            Ok(pb::Approval {
                member: a.member.clone(),
                signature,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(pb::ConfigChange {
        committee,
        approvals,
    })
}

/// What a change does to `current` (or, without it, what the next committee is), one line per
/// fact, for the operators who approve it.
pub fn describe(
    file: &ChangeFile,
    current: Option<&CommitteeConfig>,
) -> anyhow::Result<Vec<String>> {
    let next = file.committee()?;
    let mut out = vec![format!(
        "origin {}, epoch {}, threshold {} of {} members",
        file.origin,
        next.epoch,
        next.threshold,
        next.members.len()
    )];
    if next.members.len() > 1 && 2 * next.threshold <= next.members.len() {
        out.push(format!(
            "WARNING: {} of {} is not a majority: two disjoint groups could each cosign a \
             different checkpoint of the same size, or approve different changes",
            next.threshold,
            next.members.len()
        ));
    }
    let line = |c: &CommitteeConfig, m: &NodeIdentity| {
        let e = c.endpoints.get(&m.name);
        format!(
            "{} key {} raft {} at {} cert {}",
            m.name,
            hex::encode(m.key.as_bytes()),
            e.map_or("-".into(), |e| e.raft_id.to_string()),
            e.map_or("-", |e| e.addr.as_str()),
            e.map_or("-", |e| e.cert_sha256.as_str()),
        )
    };
    match current {
        None => out.extend(next.members.iter().map(|m| format!("  {}", line(&next, m)))),
        Some(cur) => {
            if next.epoch != cur.epoch + 1 {
                out.push(format!(
                    "WARNING: the ledger is at epoch {}; this change is for epoch {} and will be refused",
                    cur.epoch, next.epoch
                ));
            }
            if cur.threshold != next.threshold {
                out.push(format!("threshold {} -> {}", cur.threshold, next.threshold));
            }
            for m in &cur.members {
                match next.member(&m.name) {
                    None => out.push(format!("- remove {}", line(cur, m))),
                    Some(n) if line(cur, m) != line(&next, n) => {
                        out.push(format!("- was    {}", line(cur, m)));
                        out.push(format!("+ now    {}", line(&next, n)));
                    }
                    Some(_) => {}
                }
            }
            for m in &next.members {
                if cur.member(&m.name).is_none() {
                    out.push(format!("+ add    {}", line(&next, m)));
                }
            }
        }
    }
    for a in &file.approvals {
        out.push(format!("approved by {}", a.member));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medtech_ledger::state::LedgerState;
    use rand_core::OsRng;

    fn committee(n: usize, t: usize) -> (Vec<NodeKey>, CommitteeConfig) {
        let keys: Vec<NodeKey> = (0..n)
            .map(|i| NodeKey::generate(&format!("hospital-{i}"), &mut OsRng))
            .collect();
        let mut c = CommitteeConfig::new(keys.iter().map(NodeKey::identity).collect(), t, 0);
        for (i, k) in keys.iter().enumerate() {
            c.endpoints.insert(
                k.name().to_owned(),
                MemberEndpoint {
                    raft_id: i as u64 + 1,
                    addr: format!("hospital-{i}:7000"),
                    cert_sha256: "ab".repeat(32),
                },
            );
        }
        (keys, c)
    }

    #[test]
    fn edits_parse_from_the_command_line_form() {
        assert_eq!(
            Edit::parse("remove=hospital-e").unwrap(),
            Edit::Remove("hospital-e".into())
        );
        assert_eq!(
            Edit::parse(&format!("rotate=hospital-a:{}", "CD".repeat(32))).unwrap(),
            Edit::Rotate {
                name: "hospital-a".into(),
                cert_sha256: "cd".repeat(32)
            }
        );
        assert_eq!(
            Edit::parse("address=hospital-a:10.0.0.1:7000").unwrap(),
            Edit::Address {
                name: "hospital-a".into(),
                addr: "10.0.0.1:7000".into()
            }
        );
        assert_eq!(Edit::parse("threshold=3").unwrap(), Edit::Threshold(3));
        for bad in [
            "",
            "remove",
            "rotate=a",
            "threshold=x",
            "add=a:b:c",
            "grow=a",
            "address=a:b",
        ] {
            assert!(Edit::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_change_approved_by_t_members_is_accepted_by_the_ledger_and_fewer_are_refused() {
        let (keys, current) = committee(5, 3);
        let state = LedgerState::new("o", current.clone()).unwrap();
        let rotate = Edit::Rotate {
            name: "hospital-1".into(),
            cert_sha256: "cd".repeat(32),
        };
        let mut f = propose("o", &current, &[rotate]).unwrap();
        assert_eq!(f.committee().unwrap().epoch, 1);
        for k in &keys[..2] {
            approve(&mut f, k).unwrap();
        }
        // Approving twice replaces the approval instead of counting it twice.
        approve(&mut f, &keys[0]).unwrap();
        assert_eq!(f.approvals.len(), 2);
        let two = to_entry(&f).unwrap();
        let err = state.check_config_change(&two).unwrap_err();
        assert!(
            err.contains("2 approvals from current members, 3 needed"),
            "{err}"
        );
        approve(&mut f, &keys[4]).unwrap();
        let three = to_entry(&f).unwrap();
        let next = state.check_config_change(&three).unwrap();
        assert_eq!(next.endpoints["hospital-1"].cert_sha256, "cd".repeat(32));
        // The file survives a round trip through its JSON.
        let again = ChangeFile::parse(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(again, f);
    }

    #[test]
    fn an_approval_moved_to_a_tampered_committee_does_not_verify() {
        let (keys, current) = committee(3, 2);
        let state = LedgerState::new("o", current.clone()).unwrap();
        let mut f = propose("o", &current, &[Edit::Remove("hospital-2".into())]).unwrap();
        for k in &keys[..2] {
            approve(&mut f, k).unwrap();
        }
        // Someone swaps in another committee after the approvals were given.
        let other = propose("o", &current, &[Edit::Remove("hospital-1".into())]).unwrap();
        f.committee = other.committee;
        let c = to_entry(&f).unwrap();
        let err = state.check_config_change(&c).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn impossible_changes_are_refused_before_anyone_signs() {
        let (_, current) = committee(3, 2);
        let err = |edits: &[Edit]| propose("o", &current, edits).unwrap_err().to_string();
        assert!(err(&[]).contains("at least one edit"));
        assert!(err(&[Edit::Remove("nobody".into())]).contains("not a member"));
        let weak = propose("o", &current, &[Edit::Threshold(1)]).unwrap();
        let d = describe(&weak, Some(&current)).unwrap().join("\n");
        assert!(d.contains("WARNING: 1 of 3 is not a majority"), "{d}");
        assert!(err(&[Edit::Threshold(4)]).contains("threshold"));
        let bad_digest = Edit::Rotate {
            name: "hospital-0".into(),
            cert_sha256: "xyz".into(),
        };
        assert!(err(&[bad_digest]).contains("digest"));
        let taken = Edit::Add {
            name: "hospital-9".into(),
            signing_key: hex::encode(NodeKey::generate("x", &mut OsRng).identity().key.as_bytes()),
            raft_id: 1,
            addr: "h9:7000".into(),
            cert_sha256: "ab".repeat(32),
        };
        assert!(err(&[taken]).contains("Raft id"));
    }

    #[test]
    fn a_damaged_change_file_is_a_clear_error() {
        let (_, current) = committee(3, 2);
        let good =
            serde_json::to_string(&propose("o", &current, &[Edit::Threshold(3)]).unwrap()).unwrap();
        assert!(ChangeFile::parse(&good).is_ok());
        for (bad, says) in [
            ("{}".to_owned(), "not a committee change file"),
            (good.replace("\"version\":1", "\"version\":9"), "version 9"),
            (
                good.replace("\"committee\":\"", "\"committee\":\"zz"),
                "not hex",
            ),
            (
                good.replace("\"committee\":\"", "\"committee\":\"ff"),
                "does not decode",
            ),
        ] {
            let e = format!("{:#}", ChangeFile::parse(&bad).unwrap_err());
            assert!(e.contains(says), "{e} (expected {says})");
        }
    }

    #[test]
    fn describe_shows_what_changes() {
        let (_, current) = committee(3, 2);
        let f = propose(
            "o",
            &current,
            &[Edit::Remove("hospital-2".into()), Edit::Threshold(2)],
        )
        .unwrap();
        let d = describe(&f, Some(&current)).unwrap().join("\n");
        assert!(d.contains("- remove hospital-2"), "{d}");
        assert!(
            !d.contains("hospital-0 key"),
            "unchanged members are not listed: {d}"
        );
    }
}
