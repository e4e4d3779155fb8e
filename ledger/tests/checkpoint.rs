//! Checkpoints: signed notes, t-of-n cosigning, extension and equivocation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_ledger::checkpoint::{
    equivocators, verify_extends, Checkpoint, CheckpointError, NodeIdentity, NodeKey,
    SignedCheckpoint,
};
use medtech_ledger::merkle::MerkleLog;
use proptest::prelude::*;
use rand_core::OsRng;

const ORIGIN: &str = "medtech-chain.example/committee-1";

fn committee() -> (Vec<NodeKey>, Vec<NodeIdentity>) {
    let keys: Vec<NodeKey> = [
        "hospital-a",
        "hospital-b",
        "hospital-c",
        "hospital-d",
        "hospital-e",
    ]
    .iter()
    .map(|n| NodeKey::generate(n, &mut OsRng))
    .collect();
    let ids = keys.iter().map(NodeKey::identity).collect();
    (keys, ids)
}

fn log(n: u32) -> MerkleLog {
    let mut l = MerkleLog::new();
    for i in 0..n {
        l.append(format!("entry {i}").as_bytes());
    }
    l
}

fn checkpoint(l: &MerkleLog) -> Checkpoint {
    Checkpoint {
        origin: ORIGIN.into(),
        size: l.size(),
        root: l.root(),
    }
}

#[test]
fn checkpoint_counts_once_t_of_n_members_cosigned() {
    let (keys, ids) = committee();
    let mut sc = SignedCheckpoint::new(checkpoint(&log(10)));
    sc.sign(&keys[0]);
    sc.sign(&keys[3]);
    assert_eq!(
        sc.verify_quorum(&ids, 3),
        Err(CheckpointError::NoQuorum {
            valid: 2,
            needed: 3
        })
    );
    sc.sign(&keys[3]); // signing twice counts once
    assert!(sc.verify_quorum(&ids, 3).is_err());
    sc.sign(&keys[4]);
    let signers = sc.verify_quorum(&ids, 3).unwrap();
    assert_eq!(signers.len(), 3);
    // Round trip through the note text.
    let note = sc.to_note();
    assert!(note.starts_with(&format!("{ORIGIN}\n10\n")));
    assert!(note.contains("\n\n— hospital-a "));
    let parsed = SignedCheckpoint::from_note(&note).unwrap();
    assert_eq!(parsed, sc);
    assert_eq!(parsed.verify_quorum(&ids, 3).unwrap(), signers);
}

#[test]
fn tampered_checkpoint_loses_its_signatures() {
    let (keys, ids) = committee();
    let mut sc = SignedCheckpoint::new(checkpoint(&log(10)));
    for k in &keys[..3] {
        sc.sign(k);
    }
    let note = sc.to_note().replacen("\n10\n", "\n11\n", 1);
    let tampered = SignedCheckpoint::from_note(&note).unwrap();
    assert!(tampered.valid_signers(&ids).is_empty());
    let mut root_swapped = sc.clone();
    root_swapped.checkpoint.root[0] ^= 1;
    assert!(root_swapped.verify_quorum(&ids, 1).is_err());
}

#[test]
fn signatures_from_outside_the_committee_do_not_count() {
    let (keys, ids) = committee();
    let outsider = NodeKey::generate("hospital-a", &mut OsRng); // same name, other key
    let mut sc = SignedCheckpoint::new(checkpoint(&log(3)));
    sc.sign(&outsider);
    sc.sign(&NodeKey::generate("mallory", &mut OsRng));
    sc.sign(&keys[1]);
    assert_eq!(sc.valid_signers(&ids).len(), 1);
}

#[test]
fn auditor_checks_a_newer_checkpoint_extends_an_older_one() {
    let l = log(40);
    let old = Checkpoint {
        origin: ORIGIN.into(),
        size: 17,
        root: l.root_at(17).unwrap(),
    };
    let new = checkpoint(&l);
    verify_extends(&old, &new, &l.consistency_proof(17, 40).unwrap()).unwrap();
    // A log that rewrote entry 5 cannot show it extends the old checkpoint.
    let mut forked = MerkleLog::new();
    for i in 0..40u32 {
        let e = if i == 5 {
            "rewritten".to_string()
        } else {
            format!("entry {i}")
        };
        forked.append(e.as_bytes());
    }
    let fake = checkpoint(&forked);
    assert!(matches!(
        verify_extends(&old, &fake, &forked.consistency_proof(17, 40).unwrap()),
        Err(CheckpointError::NotAnExtension(_))
    ));
    let other_log = Checkpoint {
        origin: "other".into(),
        ..new.clone()
    };
    assert!(matches!(
        verify_extends(&old, &other_log, &[]),
        Err(CheckpointError::OriginMismatch(..))
    ));
}

#[test]
fn equivocating_node_signing_two_checkpoints_of_one_size_is_named() {
    let (keys, ids) = committee();
    let honest = log(12);
    let mut forked = log(11);
    forked.append(b"a different twelfth entry");
    let mut a = SignedCheckpoint::new(checkpoint(&honest));
    let mut b = SignedCheckpoint::new(checkpoint(&forked));
    for k in &keys[..3] {
        a.sign(k);
    }
    b.sign(&keys[2]); // hospital-c signs both
    b.sign(&keys[4]);
    assert_eq!(equivocators(&a, &b, &ids), vec!["hospital-c".to_string()]);
    // Same root, or different sizes: no equivocation.
    assert!(equivocators(&a, &a.clone(), &ids).is_empty());
    let mut c = SignedCheckpoint::new(checkpoint(&log(13)));
    c.sign(&keys[2]);
    assert!(equivocators(&a, &c, &ids).is_empty());
}

#[test]
fn malformed_notes_get_clear_errors() {
    for note in [
        "",
        "origin\n",
        "origin\n10\nAAAA\n\n— a AAAA\n",
        "origin\nten\nAAAA\n\n",
        "\n10\nAAAA\n\n",
        "origin\n10\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\nno dash\n",
        "origin\n10\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n",
    ] {
        assert!(
            matches!(
                SignedCheckpoint::from_note(note),
                Err(CheckpointError::Malformed(_))
            ),
            "{note:?}"
        );
    }
}

proptest! {
    #[test]
    fn arbitrary_note_text_never_panics(s in "\\PC{0,300}", cut in any::<usize>()) {
        let _ = SignedCheckpoint::from_note(&s);
        let (keys, _) = committee();
        let mut sc = SignedCheckpoint::new(checkpoint(&log(5)));
        sc.sign(&keys[0]);
        let note = sc.to_note();
        let cut = cut % (note.len() + 1);
        if note.is_char_boundary(cut) {
            let _ = SignedCheckpoint::from_note(&note[..cut]);
        }
    }
}
