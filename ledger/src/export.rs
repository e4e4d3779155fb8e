//! Export of the ledger to one file, and its offline verification from that file alone.
//!
//! The export is JSON (versioned): the log's origin, the committee (names and Ed25519 public
//! keys) with its threshold, every entry (hex), and every signed checkpoint (C2SP note text).
//! [`verify`] runs numbered steps and reports, per step, a verdict, the count checked and what
//! failed — and it says which checks it could not make, rather than skipping them silently.
//!
//! | Step | Checks |
//! |---|---|
//! | V1 | parameters: format version, origin, 1 ≤ t ≤ n, distinct member names, valid keys |
//! | V2 | the Merkle tree recomputes from the entries |
//! | V3 | every checkpoint parses, is for this origin, and has ≥ t valid committee signatures |
//! | V4 | every checkpoint's root equals the recomputed root at its size (size ≤ entries) |
//! | V5 | checkpoints extend each other in order of size (consistency proofs) |
//! | V6 | no two checkpoints of one size conflict; equivocating signers are named |
//! | V7 | every entry passes the ledger's rules replayed from the genesis committee: it decodes, names this origin, is signed by its author, carries the author's next sequence number, and is consistent with what came before ([`crate::state`]) |
//!
//! `committee` and `threshold` in the export are the *genesis* committee; later committees are
//! replayed from the `ConfigChange` entries in V7 (V3 counts cosignatures against the genesis
//! committee, so an export that spans a committee change fails V3 for checkpoints signed only by
//! new members — a known limitation).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{equivocators, verify_extends, NodeIdentity, SignedCheckpoint};
use crate::merkle::MerkleLog;
use crate::state::{CommitteeConfig, LedgerState, Verify};

/// The export format version this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;

/// A committee member as exported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedMember {
    /// Name in notes.
    pub name: String,
    /// Ed25519 public key, base64.
    pub public_key: String,
}

/// The ledger as one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerExport {
    /// Format version.
    pub version: u32,
    /// The log's origin.
    pub origin: String,
    /// Threshold t of cosignatures.
    pub threshold: usize,
    /// The committee.
    pub committee: Vec<ExportedMember>,
    /// The genesis committee's close tolerance f (absent: the default), which the close rule
    /// replayed in V7 depends on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_tolerance: Option<u16>,
    /// Entries in log order, hex.
    pub entries: Vec<String>,
    /// Signed checkpoints, as note text.
    pub checkpoints: Vec<String>,
}

impl LedgerExport {
    /// Builds an export from a log's entries, the committee and its notes.
    pub fn new(
        origin: &str,
        threshold: usize,
        committee: &[NodeIdentity],
        entries: &[Vec<u8>],
        checkpoints: &[SignedCheckpoint],
    ) -> Self {
        LedgerExport {
            version: EXPORT_VERSION,
            origin: origin.to_owned(),
            threshold,
            close_tolerance: None,
            committee: committee
                .iter()
                .map(|m| ExportedMember {
                    name: m.name.clone(),
                    public_key: B64.encode(m.key.as_bytes()),
                })
                .collect(),
            entries: entries.iter().map(hex::encode).collect(),
            checkpoints: checkpoints.iter().map(SignedCheckpoint::to_note).collect(),
        }
    }
}

/// The verdict of one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Every item checked passed.
    Pass,
    /// At least one item failed.
    Fail,
    /// The step could not be carried out (and says why).
    NotChecked,
}

/// One step of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// `V1` …
    pub step: &'static str,
    /// What it checks.
    pub title: &'static str,
    /// Verdict.
    pub verdict: Verdict,
    /// Items checked.
    pub checked: usize,
    /// Failures, each with its item.
    pub failures: Vec<String>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerificationReport {
    /// Export format version verified.
    pub version: u32,
    /// Entries in the export.
    pub entries: usize,
    /// Steps in order.
    pub steps: Vec<StepReport>,
}

impl VerificationReport {
    /// True when no step failed (steps that could not be checked are reported, not failed).
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.verdict != Verdict::Fail)
    }

    /// Human-readable lines.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "ledger export v{}, {} entries\n",
            self.version, self.entries
        );
        for st in &self.steps {
            let v = match st.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::NotChecked => "NOT CHECKED",
            };
            s.push_str(&format!(
                "{} {:<11} {} ({} checked)\n",
                st.step, v, st.title, st.checked
            ));
            for f in &st.failures {
                s.push_str(&format!("      - {f}\n"));
            }
        }
        s.push_str(if self.passed() {
            "VERDICT: valid\n"
        } else {
            "VERDICT: INVALID\n"
        });
        s
    }
}

fn step(
    step: &'static str,
    title: &'static str,
    checked: usize,
    failures: Vec<String>,
) -> StepReport {
    let verdict = if failures.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    StepReport {
        step,
        title,
        verdict,
        checked,
        failures,
    }
}

/// Verifies an export file's JSON text.
pub fn verify_json(text: &str) -> Result<VerificationReport, String> {
    let export: LedgerExport =
        serde_json::from_str(text).map_err(|e| format!("not a ledger export: {e}"))?;
    Ok(verify(&export))
}

/// Verifies an export from its contents alone. Its step V7 replays the ledger's core rules
/// only ([`crate::rules::CoreOnly`]): releases and failure grounds are not re-verified, which needs the committee's
/// threshold key and the application's rules ([`verify_with`]).
pub fn verify(export: &LedgerExport) -> VerificationReport {
    verify_with(export, None)
}

/// Verifies an export, step V7 replaying the entries under the application rules `rules`
/// makes (a committee node passes its own: the release check of
/// `medtech_federation::rules`), or the core rules only when `None`.
pub fn verify_with(
    export: &LedgerExport,
    rules: Option<&crate::rules::RulesFactory>,
) -> VerificationReport {
    let mut steps = Vec::new();

    // V1: parameters.
    let mut f = Vec::new();
    if export.version != EXPORT_VERSION {
        f.push(format!(
            "format version {} (this verifier reads {EXPORT_VERSION})",
            export.version
        ));
    }
    if export.origin.is_empty() || export.origin.contains('\n') {
        f.push("origin must be one non-empty line".into());
    }
    if export.threshold == 0 || export.threshold > export.committee.len() {
        f.push(format!(
            "threshold {} with {} members",
            export.threshold,
            export.committee.len()
        ));
    }
    let mut committee = Vec::new();
    let mut names = BTreeMap::new();
    for m in &export.committee {
        if names.insert(m.name.clone(), ()).is_some() {
            f.push(format!("member name {:?} appears twice", m.name));
        }
        let key = B64
            .decode(&m.public_key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok());
        match key {
            Some(key) => committee.push(NodeIdentity {
                name: m.name.clone(),
                key,
            }),
            None => f.push(format!(
                "member {:?}: public key is not a valid Ed25519 key",
                m.name
            )),
        }
    }
    steps.push(step("V1", "parameters", 3 + export.committee.len(), f));

    // V2: the tree.
    let mut log = MerkleLog::new();
    let mut f = Vec::new();
    for (i, e) in export.entries.iter().enumerate() {
        match hex::decode(e) {
            Ok(bytes) => {
                log.append(&bytes);
            }
            Err(_) => f.push(format!("entry {i} is not hex")),
        }
    }
    let tree_ok = f.is_empty();
    steps.push(step(
        "V2",
        "Merkle tree recomputed from the entries",
        export.entries.len(),
        f,
    ));

    // V3: checkpoints parse and have a quorum.
    let mut f = Vec::new();
    let mut parsed = Vec::new();
    for (i, note) in export.checkpoints.iter().enumerate() {
        match SignedCheckpoint::from_note(note) {
            Err(e) => f.push(format!("checkpoint {i}: {e}")),
            Ok(sc) if sc.checkpoint.origin != export.origin => f.push(format!(
                "checkpoint {i}: origin {:?} is not this log's",
                sc.checkpoint.origin
            )),
            Ok(sc) => {
                if let Err(e) = sc.verify_quorum(&committee, export.threshold) {
                    f.push(format!("checkpoint {i} (size {}): {e}", sc.checkpoint.size));
                }
                parsed.push((i, sc));
            }
        }
    }
    steps.push(step(
        "V3",
        "checkpoints cosigned by at least t members",
        export.checkpoints.len(),
        f,
    ));

    // V4: roots match the recomputed tree.
    let mut f = Vec::new();
    if tree_ok {
        for (i, sc) in &parsed {
            match log.root_at(sc.checkpoint.size) {
                Ok(root) if root == sc.checkpoint.root => {}
                Ok(_) => f.push(format!(
                    "checkpoint {i} (size {}): root differs from the entries",
                    sc.checkpoint.size
                )),
                Err(_) => f.push(format!(
                    "checkpoint {i}: size {} exceeds the {} entries",
                    sc.checkpoint.size,
                    log.size()
                )),
            }
        }
        steps.push(step(
            "V4",
            "checkpoint roots match the entries",
            parsed.len(),
            f,
        ));
    } else {
        steps.push(StepReport {
            step: "V4",
            title: "checkpoint roots match the entries",
            verdict: Verdict::NotChecked,
            checked: 0,
            failures: vec!["the tree could not be recomputed (V2 failed)".into()],
        });
    }

    // V5: checkpoints extend each other (in size order), from the recomputed tree's proofs.
    let mut by_size: Vec<&SignedCheckpoint> = parsed.iter().map(|(_, sc)| sc).collect();
    by_size.sort_by_key(|sc| sc.checkpoint.size);
    let mut f = Vec::new();
    let mut checked = 0;
    for pair in by_size.windows(2) {
        let (old, new) = (&pair[0].checkpoint, &pair[1].checkpoint);
        if old.size == new.size || new.size > log.size() {
            continue;
        }
        checked += 1;
        let proof = log
            .consistency_proof(old.size, new.size)
            .unwrap_or_default();
        if let Err(e) = verify_extends(old, new, &proof) {
            f.push(format!("size {} → {}: {e}", old.size, new.size));
        }
    }
    steps.push(step(
        "V5",
        "each checkpoint extends the previous one",
        checked,
        f,
    ));

    // V6: equivocation.
    let mut f = Vec::new();
    let mut pairs = 0;
    for (a, sa) in &parsed {
        for (b, sb) in &parsed {
            if a < b && sa.checkpoint.size == sb.checkpoint.size {
                pairs += 1;
                let culprits = equivocators(sa, sb, &committee);
                if sa.checkpoint.root != sb.checkpoint.root {
                    f.push(format!(
                        "checkpoints {a} and {b} conflict at size {}; signed both: {}",
                        sa.checkpoint.size,
                        if culprits.is_empty() {
                            "nobody in the committee".to_string()
                        } else {
                            culprits.join(", ")
                        }
                    ));
                }
            }
        }
    }
    steps.push(step(
        "V6",
        "no conflicting checkpoints (equivocation)",
        pairs,
        f,
    ));

    // V7: replay the ledger's rules.
    let mut f = Vec::new();
    let mut genesis = CommitteeConfig::new(committee.clone(), export.threshold, 0);
    genesis.close_tolerance = export.close_tolerance;
    let v7 = match rules {
        Some(_) => "entries signed by their authors, in order, valid under the ledger's and the application's rules",
        None => "entries signed by their authors, in order, valid under the ledger's core rules (releases and failure grounds not re-verified)",
    };
    match LedgerState::new(&export.origin, genesis) {
        Err(e) => f.push(format!("genesis committee: {e}")),
        Ok(mut state) => {
            match rules {
                Some(make) => state.set_rules(make.make()),
                None => state.set_rules(Box::new(crate::rules::CoreOnly)),
            }
            let mut tree = MerkleLog::new();
            let mut failed = 0usize;
            for (i, e) in export.entries.iter().enumerate() {
                let bytes = hex::decode(e).unwrap_or_default();
                match state.check(&bytes, &tree, Verify::Signatures) {
                    Ok(p) => state.apply(&p, tree.size()),
                    Err(r) => {
                        failed += 1;
                        if failed <= 20 {
                            f.push(format!("entry {i}: {r}"));
                        }
                    }
                }
                tree.append(&bytes);
            }
            if failed > 20 {
                f.push(format!("… and {} more", failed - 20));
            }
        }
    }
    steps.push(step("V7", v7, export.entries.len(), f));

    VerificationReport {
        version: export.version,
        entries: export.entries.len(),
        steps,
    }
}
