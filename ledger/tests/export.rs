//! Export and offline verification: a valid export passes every step it can check; each kind of
//! tampering fails the step that catches it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_ledger::checkpoint::{Checkpoint, NodeKey, SignedCheckpoint};
use medtech_ledger::entry::{sign_entry, Kind};
use medtech_ledger::export::{verify, verify_json, LedgerExport, Verdict};
use medtech_ledger::merkle::MerkleLog;
use medtech_protos::ledger::v1 as pb;
use rand_core::OsRng;

const ORIGIN: &str = "medtech-chain.example/committee-1";

struct Fixture {
    keys: Vec<NodeKey>,
    export: LedgerExport,
}

fn fixture() -> Fixture {
    let keys: Vec<NodeKey> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| NodeKey::generate(n, &mut OsRng))
        .collect();
    let ids: Vec<_> = keys.iter().map(NodeKey::identity).collect();
    // Signed entries: member i % 5 writes its (i / 5 + 1)-th note.
    let entries: Vec<Vec<u8>> = (0..50u64)
        .map(|i| {
            let note = Kind::Note(pb::Note {
                text: format!("entry {i}"),
            });
            sign_entry(&keys[(i % 5) as usize], ORIGIN, i / 5 + 1, 0, note)
        })
        .collect();
    let mut log = MerkleLog::new();
    let mut checkpoints = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        log.append(e);
        if (i + 1) % 20 == 0 || i + 1 == entries.len() {
            let mut sc = SignedCheckpoint::new(Checkpoint {
                origin: ORIGIN.into(),
                size: log.size(),
                root: log.root(),
            });
            for k in &keys[..3] {
                sc.sign(k);
            }
            checkpoints.push(sc);
        }
    }
    Fixture {
        export: LedgerExport::new(ORIGIN, 3, &ids, &entries, &checkpoints),
        keys,
    }
}

fn verdict(e: &LedgerExport, step: &str) -> Verdict {
    verify(e)
        .steps
        .into_iter()
        .find(|s| s.step == step)
        .unwrap()
        .verdict
}

#[test]
fn valid_export_passes_every_step() {
    let f = fixture();
    let text = serde_json::to_string(&f.export).unwrap();
    let report = verify_json(&text).unwrap();
    assert!(report.passed(), "{}", report.to_text());
    for s in &report.steps {
        assert_eq!(s.verdict, Verdict::Pass, "{}", report.to_text());
    }
    assert_eq!(report.steps.len(), 7);
}

#[test]
fn forged_or_reordered_entries_fail_v7() {
    // An entry re-signed by another member's key under the first member's name.
    let mut f = fixture();
    let forged = sign_entry(
        &NodeKey::from_secret_bytes("a", &f.keys[1].to_secret_bytes()),
        ORIGIN,
        1,
        0,
        Kind::Note(pb::Note {
            text: "entry 0".into(),
        }),
    );
    f.export.entries[0] = hex::encode(forged);
    let r = verify(&f.export);
    assert_eq!(r.steps[6].verdict, Verdict::Fail);
    assert!(
        r.steps[6].failures[0].contains("signature"),
        "{:?}",
        r.steps[6]
    );
    // Two entries of one author swapped.
    let mut f = fixture();
    f.export.entries.swap(0, 5);
    let r = verify(&f.export);
    assert_eq!(r.steps[6].verdict, Verdict::Fail);
    assert!(
        r.steps[6].failures[0].contains("out of order"),
        "{:?}",
        r.steps[6]
    );
    // A replayed entry appended again.
    let mut f = fixture();
    let first = f.export.entries[0].clone();
    f.export.entries.push(first);
    assert_eq!(verdict(&f.export, "V7"), Verdict::Fail);
}

#[test]
fn tampered_entry_is_detected() {
    let mut f = fixture();
    f.export.entries[7] = hex::encode("entry 7, edited");
    assert_eq!(verdict(&f.export, "V7"), Verdict::Fail);
    assert_eq!(verdict(&f.export, "V4"), Verdict::Fail);
    let mut f = fixture();
    f.export.entries.remove(30);
    assert_eq!(verdict(&f.export, "V4"), Verdict::Fail, "dropped entry");
}

#[test]
fn tampered_checkpoint_is_detected() {
    let mut f = fixture();
    f.export.checkpoints[1] = f.export.checkpoints[1].replacen("\n40\n", "\n41\n", 1);
    let r = verify(&f.export);
    assert_eq!(r.steps[2].verdict, Verdict::Fail, "{}", r.to_text());
}

#[test]
fn checkpoint_without_quorum_is_detected() {
    let mut f = fixture();
    let mut sc = SignedCheckpoint::from_note(&f.export.checkpoints[0]).unwrap();
    sc.signatures.truncate(2);
    f.export.checkpoints[0] = sc.to_note();
    assert_eq!(verdict(&f.export, "V3"), Verdict::Fail);
}

#[test]
fn equivocation_in_the_record_names_the_signer() {
    let mut f = fixture();
    let mut fork = SignedCheckpoint::from_note(&f.export.checkpoints[0]).unwrap();
    fork.checkpoint.root[0] ^= 1;
    fork.signatures.clear();
    fork.sign(&f.keys[1]);
    f.export.checkpoints.push(fork.to_note());
    let r = verify(&f.export);
    let v6 = r.steps.iter().find(|s| s.step == "V6").unwrap();
    assert_eq!(v6.verdict, Verdict::Fail);
    assert!(v6.failures[0].contains("signed both: b"), "{}", r.to_text());
}

#[test]
fn garbage_files_get_a_clear_error() {
    assert!(verify_json("not json").is_err());
    assert!(verify_json("{}").is_err());
    let mut f = fixture();
    f.export.committee[0].public_key = "AAAA".into();
    f.export.version = 99;
    let r = verify(&f.export);
    assert_eq!(r.steps[0].verdict, Verdict::Fail);
    assert!(!r.passed());
}
