//! Recorded exchanges with a real Fabric 3.1.5 peer (`tests/vectors/`, recorded by
//! `fabric_real.rs` with `MEDTECH_FABRIC_RECORD=1`), replayed without a network: the client
//! rebuilds the recorded proposal byte for byte and accepts the peer's prepared transaction,
//! and refuses it once any part of it is changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_ledger::fabric::transaction::{Invocation, ProposedTransaction};
use medtech_ledger::fabric::MspIdentity;
use medtech_protos::fabric as pb;
use medtech_protos::Message as _;
use serde_json::Value;

fn vector() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/fabric-endorse.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(v[k].as_str().unwrap()).unwrap()
}

fn proposal(v: &Value) -> ProposedTransaction {
    let id = MspIdentity::from_pem(
        v["msp_id"].as_str().unwrap(),
        v["cert_pem"].as_str().unwrap(),
        v["key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let inv = Invocation {
        channel: v["channel"].as_str().unwrap().into(),
        chaincode: v["chaincode"].as_str().unwrap().into(),
        function: v["function"].as_str().unwrap().into(),
        args: v["args_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| hex::decode(a.as_str().unwrap()).unwrap())
            .collect(),
    };
    ProposedTransaction::with_nonce(
        &id,
        &inv,
        v["timestamp_ms"].as_u64().unwrap(),
        &bytes(v, "nonce_hex"),
    )
}

#[test]
fn recorded_real_endorsement_passes_the_clients_check() {
    let v = vector();
    let p = proposal(&v);
    assert_eq!(p.signed.proposal_bytes, bytes(&v, "proposal_bytes_hex"));
    let reply = pb::EndorseResponse::decode(bytes(&v, "endorse_response_hex").as_slice()).unwrap();
    let prepared = reply.prepared_transaction.unwrap();
    assert_eq!(
        prepared.payload,
        bytes(&v, "prepared_transaction_payload_hex")
    );
    let response = p.check_prepared(&prepared).unwrap();
    assert_eq!(response.status, 200);
}

/// The check is not vacuous on real bytes: a prepared transaction whose endorsed proposal hash,
/// header or chaincode payload differs from the proposal's is refused.
#[test]
fn a_changed_real_prepared_transaction_is_refused() {
    let v = vector();
    let p = proposal(&v);
    let payload = bytes(&v, "prepared_transaction_payload_hex");
    let decoded = pb::Payload::decode(payload.as_slice()).unwrap();
    let tx = pb::Transaction::decode(decoded.data.as_slice()).unwrap();
    let cap = pb::ChaincodeActionPayload::decode(tx.actions[0].payload.as_slice()).unwrap();
    let endorsed = cap.action.clone().unwrap();
    let prp =
        pb::ProposalResponsePayload::decode(endorsed.proposal_response_payload.as_slice()).unwrap();

    let rebuild = |cap: pb::ChaincodeActionPayload, header: Option<pb::Header>| {
        let mut tx = tx.clone();
        tx.actions[0].payload = cap.encode_to_vec();
        pb::Envelope {
            payload: pb::Payload {
                header: header.or(decoded.header.clone()),
                data: tx.encode_to_vec(),
            }
            .encode_to_vec(),
            signature: Vec::new(),
        }
    };
    // Unchanged, re-encoded: still accepted (the rebuild itself is faithful).
    assert!(p.check_prepared(&rebuild(cap.clone(), None)).is_ok());

    let mut wrong_hash = cap.clone();
    let mut prp2 = prp.clone();
    prp2.proposal_hash[0] ^= 1;
    wrong_hash.action = Some(pb::ChaincodeEndorsedAction {
        proposal_response_payload: prp2.encode_to_vec(),
        endorsements: endorsed.endorsements.clone(),
    });
    let e = p.check_prepared(&rebuild(wrong_hash, None)).unwrap_err();
    assert!(e.to_string().contains("proposal hash"), "{e}");

    let mut other_input = cap.clone();
    other_input.chaincode_proposal_payload.push(0);
    assert!(p.check_prepared(&rebuild(other_input, None)).is_err());

    let mut header = decoded.header.clone().unwrap();
    header.signature_header.push(0);
    assert!(p.check_prepared(&rebuild(cap, Some(header))).is_err());
}
