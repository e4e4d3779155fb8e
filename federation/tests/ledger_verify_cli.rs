//! `medtech ledger verify`: an auditor's command on a real export file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use medtech_ledger::checkpoint::{Checkpoint, NodeKey, SignedCheckpoint};
use medtech_ledger::entry::{sign_entry, Kind};
use medtech_ledger::export::LedgerExport;
use medtech_ledger::merkle::MerkleLog;
use medtech_protos::ledger::v1 as pb;
use rand_core::OsRng;

fn export() -> LedgerExport {
    let keys: Vec<NodeKey> = ["a", "b", "c"]
        .iter()
        .map(|n| NodeKey::generate(n, &mut OsRng))
        .collect();
    // Signed entries: member i % 3 writes its (i / 3 + 1)-th note.
    let entries: Vec<Vec<u8>> = (0..10u64)
        .map(|i| {
            let note = Kind::Note(pb::Note {
                text: format!("note {i}"),
            });
            sign_entry(&keys[(i % 3) as usize], "o", i / 3 + 1, 0, note)
        })
        .collect();
    let mut log = MerkleLog::new();
    for e in &entries {
        log.append(e);
    }
    let mut sc = SignedCheckpoint::new(Checkpoint {
        origin: "o".into(),
        size: log.size(),
        root: log.root(),
    });
    sc.sign(&keys[0]);
    sc.sign(&keys[2]);
    let ids: Vec<_> = keys.iter().map(NodeKey::identity).collect();
    LedgerExport::new("o", 2, &ids, &entries, &[sc])
}

fn run_verify(e: &LedgerExport, name: &str) -> (bool, String) {
    let path =
        std::env::temp_dir().join(format!("medtech-export-{}-{name}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(e).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_medtech"))
        .args(["ledger", "verify"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn valid_export_verifies_and_tampered_one_fails_with_nonzero_exit() {
    let e = export();
    let (ok, text) = run_verify(&e, "good");
    assert!(ok, "{text}");
    assert!(text.contains("VERDICT: valid"));
    let mut bad = e.clone();
    bad.entries[3] = "00".into();
    let (ok, text) = run_verify(&bad, "bad");
    assert!(!ok);
    assert!(text.contains("V4 FAIL"), "{text}");
    // Entries swapped: the tree no longer matches the checkpoint, and the authors' sequence
    // numbers are out of order.
    let mut swapped = e.clone();
    swapped.entries.swap(0, 3);
    let (ok, text) = run_verify(&swapped, "swapped");
    assert!(!ok);
    assert!(text.contains("V7 FAIL"), "{text}");
}
