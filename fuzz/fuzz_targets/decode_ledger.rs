//! Every decoder of outside bytes in medtech-ledger: entries arriving over Raft (decoded and
//! checked against the ledger's rules), checkpoint notes from peers or Fabric, committee
//! configurations, Raft payloads, and a Fabric gateway's prepared transactions. Each must
//! return an error or a value, never panic. The first byte picks the decoder.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medtech_ledger::checkpoint::{NodeKey, SignedCheckpoint};
use medtech_ledger::entry::ParsedEntry;
use medtech_ledger::fabric::contract;
use medtech_ledger::fabric::transaction::{Invocation, ProposedTransaction};
use medtech_ledger::fabric::{sim::issue_identity, MspIdentity};
use medtech_ledger::merkle::MerkleLog;
use medtech_ledger::state::{CommitteeConfig, LedgerState, Verify};
use medtech_protos::fabric as fpb;
use medtech_protos::ledger::v1 as pb;
use medtech_protos::Message as _;

fn state() -> &'static LedgerState {
    static S: OnceLock<LedgerState> = OnceLock::new();
    S.get_or_init(|| {
        let key = NodeKey::from_secret_bytes("hospital-a", &[3; 32]);
        LedgerState::new("o", CommitteeConfig::new(vec![key.identity()], 1, 0)).expect("genesis")
    })
}

fn proposal() -> &'static ProposedTransaction {
    static P: OnceLock<ProposedTransaction> = OnceLock::new();
    P.get_or_init(|| {
        let (c, k) = issue_identity("Org1MSP", "fuzz").expect("identity");
        let id = MspIdentity::from_pem("Org1MSP", &c, &k).expect("identity");
        let inv = Invocation {
            channel: "ch".into(),
            chaincode: "cc".into(),
            function: contract::ANCHOR.into(),
            args: vec![b"x".to_vec()],
        };
        ProposedTransaction::with_nonce(&id, &inv, 1, &[1; 24])
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => {
            let _ = ParsedEntry::decode(bytes);
            let _ = state().check(bytes, &MerkleLog::new(), Verify::Signatures);
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(bytes) {
                let _ = SignedCheckpoint::from_note(text);
            }
        }
        2 => {
            if let Ok(c) = pb::Committee::decode(bytes) {
                let _ = CommitteeConfig::from_pb(&c);
            }
        }
        3 => {
            let _ = pb::RaftPayload::decode(bytes);
        }
        4 => {
            let env = fpb::Envelope {
                payload: bytes.to_vec(),
                signature: Vec::new(),
            };
            let _ = proposal().check_prepared(&env);
        }
        _ => {
            let args: Vec<Vec<u8>> = bytes.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
            let (f, rest) = args
                .split_first()
                .map_or((&[][..], &[][..]), |(f, r)| (&f[..], r));
            let f = String::from_utf8_lossy(f);
            let config = contract::ContractConfig {
                admin_msps: vec!["Org1MSP".into()],
                writer_msps: Vec::new(),
            };
            let caller = contract::Caller {
                msp_id: "Org1MSP".into(),
                is_admin: true,
            };
            let _ = contract::invoke(&config, &caller, &mut |_| None, &f, rest);
        }
    }
});
