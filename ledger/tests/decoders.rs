//! Every decoder of bytes that arrive from outside (entries over Raft, checkpoint notes from
//! peers or Fabric, gateway responses, chaincode arguments, committee configurations) returns
//! an error on garbage and never panics — on random bytes and on valid encodings with bytes
//! flipped. (The libFuzzer target `fuzz/fuzz_targets/decode_ledger.rs` explores the same
//! functions further, on demand.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_ledger::checkpoint::{Checkpoint, NodeKey, SignedCheckpoint};
use medtech_ledger::entry::{sign_entry, Kind, ParsedEntry};
use medtech_ledger::fabric::contract;
use medtech_ledger::fabric::sim::issue_identity;
use medtech_ledger::fabric::transaction::{Invocation, ProposedTransaction};
use medtech_ledger::fabric::MspIdentity;
use medtech_ledger::merkle::MerkleLog;
use medtech_ledger::state::{CommitteeConfig, LedgerState, Verify};
use medtech_protos::fabric as fpb;
use medtech_protos::ledger::v1 as pb;
use medtech_protos::Message as _;
use proptest::prelude::*;

fn key() -> NodeKey {
    NodeKey::from_secret_bytes("hospital-a", &[3; 32])
}

fn valid_entry() -> Vec<u8> {
    sign_entry(
        &key(),
        "o",
        1,
        0,
        Kind::Note(pb::Note {
            text: "hello".into(),
        }),
    )
}

fn valid_note() -> String {
    let mut s = SignedCheckpoint::new(Checkpoint {
        origin: "o".into(),
        size: 3,
        root: [9; 32],
    });
    s.sign(&key());
    s.to_note()
}

fn flip(mut bytes: Vec<u8>, flips: &[(usize, u8)]) -> Vec<u8> {
    if bytes.is_empty() {
        return bytes;
    }
    for (i, x) in flips {
        let n = bytes.len();
        bytes[i % n] ^= x | 1;
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn entry_decoder_and_rules_never_panic(
        random in proptest::collection::vec(any::<u8>(), 0..600),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let state = LedgerState::new("o", CommitteeConfig::new(vec![key().identity()], 1, 0)).unwrap();
        let tree = MerkleLog::new();
        for bytes in [random, flip(valid_entry(), &flips)] {
            let _ = ParsedEntry::decode(&bytes);
            let _ = state.check(&bytes, &tree, Verify::Signatures);
        }
    }

    #[test]
    fn flipped_entry_is_never_accepted(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let state = LedgerState::new("o", CommitteeConfig::new(vec![key().identity()], 1, 0)).unwrap();
        let tree = MerkleLog::new();
        prop_assert!(state.check(&valid_entry(), &tree, Verify::Signatures).is_ok());
        let bad = flip(valid_entry(), &flips);
        if bad != valid_entry() {
            prop_assert!(state.check(&bad, &tree, Verify::Signatures).is_err());
        }
    }

    #[test]
    fn checkpoint_note_parser_never_panics(
        random in "\\PC{0,300}",
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let _ = SignedCheckpoint::from_note(&random);
        let flipped = flip(valid_note().into_bytes(), &flips);
        if let Ok(text) = String::from_utf8(flipped) {
            if let Ok(cp) = SignedCheckpoint::from_note(&text) {
                // Whatever still parses either is the original or does not verify as it.
                let ok = cp.verify_quorum(&[key().identity()], 1).is_ok();
                prop_assert!(!ok || cp.checkpoint == SignedCheckpoint::from_note(&valid_note()).unwrap().checkpoint);
            }
        }
    }

    #[test]
    fn committee_decoder_never_panics(random in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(c) = pb::Committee::decode(random.as_slice()) {
            let _ = CommitteeConfig::from_pb(&c);
        }
    }

    #[test]
    fn chaincode_never_panics_and_writes_nothing_on_error(
        function in prop_oneof![
            Just("AnchorCheckpoint".to_owned()),
            Just("GetCheckpoint".to_owned()),
            Just("RegisterCommittee".to_owned()),
            Just("GetCommittee".to_owned()),
            "\\PC{0,20}"
        ],
        args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..3),
        is_admin in any::<bool>(),
    ) {
        let config = contract::ContractConfig {
            admin_msps: vec!["Org1MSP".into()],
            writer_msps: Vec::new(),
        };
        let caller = contract::Caller { msp_id: "Org1MSP".into(), is_admin };
        let out = contract::invoke(&config, &caller, &mut |_| None, &function, &args);
        if out.response.status >= 400 {
            prop_assert!(out.writes.is_empty());
        }
    }
}

/// A gateway's reply to Endorse is network bytes too: random or flipped prepared transactions
/// are refused by the client before it signs anything.
#[test]
fn prepared_transaction_checker_refuses_garbage_without_panicking() {
    let (c, k) = issue_identity("Org1MSP", "client").unwrap();
    let id = MspIdentity::from_pem("Org1MSP", &c, &k).unwrap();
    let p = ProposedTransaction::with_nonce(
        &id,
        &Invocation {
            channel: "ch".into(),
            chaincode: "cc".into(),
            function: "AnchorCheckpoint".into(),
            args: vec![b"x".to_vec()],
        },
        1,
        &[1; 24],
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..400), |bytes| {
            let env = fpb::Envelope {
                payload: bytes,
                signature: vec![],
            };
            prop_assert!(p.check_prepared(&env).is_err());
            Ok(())
        })
        .unwrap();
}
