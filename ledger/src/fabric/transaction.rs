//! Building and checking Fabric transactions, without I/O: the client side of the Gateway flow
//! (Fabric >= 2.4, `gateway.Gateway`).
//!
//! 1. **Proposal.** `SignatureHeader{creator, nonce}` with a fresh 24-byte nonce;
//!    `tx_id = hex(SHA-256(nonce ‖ creator))`; `ChannelHeader{ENDORSER_TRANSACTION, channel,
//!    tx_id, timestamp, extension = ChaincodeHeaderExtension{chaincode}}`; payload
//!    `ChaincodeProposalPayload{input = ChaincodeInvocationSpec{args = [function, args…]}}`.
//!    The client signs the `Proposal` bytes ([`ProposedTransaction`]).
//! 2. **Endorse → prepared transaction.** The gateway returns an unsigned `Envelope`. Before
//!    signing it, [`ProposedTransaction::check_prepared`] checks that it is *this* proposal's
//!    transaction: same header bytes, one action whose header is our signature header and whose
//!    chaincode proposal payload is our payload byte for byte, a successful chaincode response.
//!    A gateway cannot get the client to sign anything else.
//! 3. **Submit.** The client signs the envelope's payload bytes.
//! 4. **Commit status.** A `CommitStatusRequest{tx_id, channel, identity}` signed by the client.

use prost::Message as _;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use medtech_protos::fabric as pb;

use super::identity::MspIdentity;
use super::FabricError;

/// Nonce length used by Fabric's SDKs.
pub const NONCE_LEN: usize = 24;

/// `hex(SHA-256(nonce ‖ creator))`, Fabric's transaction ID.
pub fn transaction_id(nonce: &[u8], creator: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(creator);
    hex::encode(h.finalize())
}

/// What to invoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// Channel name.
    pub channel: String,
    /// Chaincode name.
    pub chaincode: String,
    /// Transaction function.
    pub function: String,
    /// Arguments after the function name.
    pub args: Vec<Vec<u8>>,
}

/// A signed proposal and what is needed to check and sign the transaction built from it.
#[derive(Clone, Debug)]
pub struct ProposedTransaction {
    /// The transaction ID.
    pub tx_id: String,
    /// The channel.
    pub channel: String,
    /// The proposal as signed.
    pub signed: pb::SignedProposal,
    header: Vec<u8>,
    signature_header: Vec<u8>,
    payload: Vec<u8>,
}

impl ProposedTransaction {
    /// Builds and signs a proposal for `invocation` at `timestamp_ms` (Unix milliseconds).
    pub fn new<R: RngCore + CryptoRng>(
        identity: &MspIdentity,
        invocation: &Invocation,
        timestamp_ms: u64,
        rng: &mut R,
    ) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        Self::with_nonce(identity, invocation, timestamp_ms, &nonce)
    }

    /// As [`Self::new`] with a given nonce (tests and known-answer vectors).
    pub fn with_nonce(
        identity: &MspIdentity,
        invocation: &Invocation,
        timestamp_ms: u64,
        nonce: &[u8],
    ) -> Self {
        let creator = identity.serialized().to_vec();
        let tx_id = transaction_id(nonce, &creator);
        let chaincode_id = pb::ChaincodeId {
            name: invocation.chaincode.clone(),
            ..Default::default()
        };
        let extension = pb::ChaincodeHeaderExtension {
            chaincode_id: Some(chaincode_id.clone()),
        }
        .encode_to_vec();
        let channel_header = pb::ChannelHeader {
            r#type: pb::HeaderType::EndorserTransaction as i32,
            version: 0,
            timestamp: Some(pb::Timestamp {
                seconds: i64::try_from(timestamp_ms / 1000).unwrap_or(i64::MAX),
                // < 1e9, fits
                nanos: ((timestamp_ms % 1000) * 1_000_000) as i32,
            }),
            channel_id: invocation.channel.clone(),
            tx_id: tx_id.clone(),
            epoch: 0,
            extension,
            tls_cert_hash: Vec::new(),
        }
        .encode_to_vec();
        let signature_header = pb::SignatureHeader {
            creator,
            nonce: nonce.to_vec(),
        }
        .encode_to_vec();
        let header = pb::Header {
            channel_header,
            signature_header: signature_header.clone(),
        }
        .encode_to_vec();
        let mut args = Vec::with_capacity(invocation.args.len() + 1);
        args.push(invocation.function.as_bytes().to_vec());
        args.extend(invocation.args.iter().cloned());
        let input = pb::ChaincodeInvocationSpec {
            chaincode_spec: Some(pb::ChaincodeSpec {
                r#type: pb::chaincode_spec::Type::Undefined as i32,
                chaincode_id: Some(chaincode_id),
                input: Some(pb::ChaincodeInput {
                    args,
                    ..Default::default()
                }),
                timeout: 0,
            }),
        }
        .encode_to_vec();
        let payload = pb::ChaincodeProposalPayload {
            input,
            transient_map: Default::default(),
        }
        .encode_to_vec();
        let proposal_bytes = pb::Proposal {
            header: header.clone(),
            payload: payload.clone(),
            extension: Vec::new(),
        }
        .encode_to_vec();
        let signature = identity.sign(&proposal_bytes);
        ProposedTransaction {
            tx_id,
            channel: invocation.channel.clone(),
            signed: pb::SignedProposal {
                proposal_bytes,
                signature,
            },
            header,
            signature_header,
            payload,
        }
    }

    /// Checks that `envelope` (from Endorse) is the transaction of this proposal, and returns the
    /// chaincode's response. See the module docs, step 2.
    pub fn check_prepared(&self, envelope: &pb::Envelope) -> Result<pb::Response, FabricError> {
        let bad = |m: &str| FabricError::Gateway(format!("prepared transaction: {m}"));
        let payload = pb::Payload::decode(envelope.payload.as_slice())
            .map_err(|_| bad("payload is not a Payload"))?;
        let header = payload.header.ok_or_else(|| bad("no header"))?;
        if header.encode_to_vec() != self.header {
            return Err(bad("header differs from the proposal's"));
        }
        let tx = pb::Transaction::decode(payload.data.as_slice())
            .map_err(|_| bad("data is not a Transaction"))?;
        let [action] = tx.actions.as_slice() else {
            return Err(bad("expected exactly one action"));
        };
        if action.header != self.signature_header {
            return Err(bad(
                "action header differs from the proposal's signature header",
            ));
        }
        let cap = pb::ChaincodeActionPayload::decode(action.payload.as_slice())
            .map_err(|_| bad("action payload is not a ChaincodeActionPayload"))?;
        if cap.chaincode_proposal_payload != self.payload {
            return Err(bad(
                "chaincode proposal payload differs from the proposal's",
            ));
        }
        let endorsed = cap.action.ok_or_else(|| bad("no endorsed action"))?;
        if endorsed.endorsements.is_empty() {
            return Err(bad("no endorsements"));
        }
        let prp =
            pb::ProposalResponsePayload::decode(endorsed.proposal_response_payload.as_slice())
                .map_err(|_| bad("not a ProposalResponsePayload"))?;
        if prp.proposal_hash != proposal_hash(&self.header, &self.payload)? {
            return Err(bad("endorsed for a different proposal hash"));
        }
        let action = pb::ChaincodeAction::decode(prp.extension.as_slice())
            .map_err(|_| bad("extension is not a ChaincodeAction"))?;
        let response = action
            .response
            .ok_or_else(|| bad("no chaincode response"))?;
        if !(200..400).contains(&response.status) {
            return Err(FabricError::Chaincode {
                status: response.status,
                message: response.message,
            });
        }
        Ok(response)
    }

    /// Signs the prepared transaction's payload for Submit (after [`Self::check_prepared`]).
    pub fn sign_prepared(&self, identity: &MspIdentity, envelope: &pb::Envelope) -> pb::Envelope {
        pb::Envelope {
            payload: envelope.payload.clone(),
            signature: identity.sign(&envelope.payload),
        }
    }

    /// The signed commit-status request for this transaction.
    pub fn commit_status_request(&self, identity: &MspIdentity) -> pb::SignedCommitStatusRequest {
        let request = pb::CommitStatusRequest {
            transaction_id: self.tx_id.clone(),
            channel_id: self.channel.clone(),
            identity: identity.serialized().to_vec(),
        }
        .encode_to_vec();
        let signature = identity.sign(&request);
        pb::SignedCommitStatusRequest { request, signature }
    }
}

/// The proposal hash an endorser puts in its `ProposalResponsePayload`, as Fabric's endorser
/// computes it (`core/endorser` `UnpackProposal`, = `protoutil.GetProposalHash1`):
/// `SHA-256(ChannelHeader bytes ‖ SignatureHeader bytes ‖ payload for the transaction)`, where
/// the last part is the `ChaincodeProposalPayload` re-encoded with its `input` alone (the
/// transient map, which never reaches the ledger, left out). `header` and `payload` are the
/// proposal's `Header` and `ChaincodeProposalPayload` bytes.
pub fn proposal_hash(header: &[u8], payload: &[u8]) -> Result<Vec<u8>, FabricError> {
    let bad = |m: &str| FabricError::Gateway(format!("proposal: {m}"));
    let header = pb::Header::decode(header).map_err(|_| bad("header is not a Header"))?;
    let cpp = pb::ChaincodeProposalPayload::decode(payload)
        .map_err(|_| bad("payload is not a ChaincodeProposalPayload"))?;
    let for_tx = pb::ChaincodeProposalPayload {
        input: cpp.input,
        transient_map: Default::default(),
    }
    .encode_to_vec();
    let mut h = Sha256::new();
    h.update(&header.channel_header);
    h.update(&header.signature_header);
    h.update(&for_tx);
    Ok(h.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::identity::verify_signature;
    use crate::fabric::sim::issue_identity;

    fn id() -> MspIdentity {
        let (c, k) = issue_identity("Org1MSP", "client").unwrap();
        MspIdentity::from_pem("Org1MSP", &c, &k).unwrap()
    }

    fn inv() -> Invocation {
        Invocation {
            channel: "medtech".into(),
            chaincode: "anchor".into(),
            function: "AnchorCheckpoint".into(),
            args: vec![b"note".to_vec()],
        }
    }

    #[test]
    fn transaction_id_known_answer() {
        // SHA-256("abc") — the FIPS 180-2 vector — with nonce "a" and creator "bc".
        assert_eq!(
            transaction_id(b"a", b"bc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn proposal_decodes_to_what_was_asked_and_is_signed_by_its_creator() {
        let id = id();
        let p = ProposedTransaction::with_nonce(&id, &inv(), 1_700_000_000_123, &[7; 24]);
        let proposal = pb::Proposal::decode(p.signed.proposal_bytes.as_slice()).unwrap();
        let header = pb::Header::decode(proposal.header.as_slice()).unwrap();
        let ch = pb::ChannelHeader::decode(header.channel_header.as_slice()).unwrap();
        let sh = pb::SignatureHeader::decode(header.signature_header.as_slice()).unwrap();
        assert_eq!(ch.r#type, pb::HeaderType::EndorserTransaction as i32);
        assert_eq!(ch.channel_id, "medtech");
        assert_eq!(ch.tx_id, transaction_id(&[7; 24], id.serialized()));
        let ts = ch.timestamp.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_000_000));
        assert_eq!(sh.creator, id.serialized());
        let ext = pb::ChaincodeHeaderExtension::decode(ch.extension.as_slice()).unwrap();
        assert_eq!(ext.chaincode_id.unwrap().name, "anchor");
        let cpp = pb::ChaincodeProposalPayload::decode(proposal.payload.as_slice()).unwrap();
        let spec = pb::ChaincodeInvocationSpec::decode(cpp.input.as_slice()).unwrap();
        let args = spec.chaincode_spec.unwrap().input.unwrap().args;
        assert_eq!(args, vec![b"AnchorCheckpoint".to_vec(), b"note".to_vec()]);
        verify_signature(&sh.creator, &p.signed.proposal_bytes, &p.signed.signature).unwrap();
    }

    /// Fabric hashes the two header parts and the payload without its transient map — not
    /// the `Header` message and the payload as sent, which real endorsers never match.
    #[test]
    fn proposal_hash_is_fabrics_and_ignores_the_transient_map() {
        let id = id();
        let p = ProposedTransaction::with_nonce(&id, &inv(), 1_700_000_000_123, &[7; 24]);
        let proposal = pb::Proposal::decode(p.signed.proposal_bytes.as_slice()).unwrap();
        let header = pb::Header::decode(proposal.header.as_slice()).unwrap();
        let mut want = Sha256::new();
        want.update(&header.channel_header);
        want.update(&header.signature_header);
        want.update(&proposal.payload);
        let got = proposal_hash(&proposal.header, &proposal.payload).unwrap();
        assert_eq!(got, want.finalize().to_vec());
        let mut old = Sha256::new();
        old.update(&proposal.header);
        old.update(&proposal.payload);
        assert_ne!(got, old.finalize().to_vec(), "the pre-fix formula");

        let mut cpp = pb::ChaincodeProposalPayload::decode(proposal.payload.as_slice()).unwrap();
        cpp.transient_map
            .insert("secret".into(), b"kept off the ledger".to_vec());
        let with_transient = cpp.encode_to_vec();
        assert_ne!(with_transient, proposal.payload);
        assert_eq!(
            proposal_hash(&proposal.header, &with_transient).unwrap(),
            got
        );
    }

    /// Known answer: fixed header parts and input, hashed by hand (`sha256sum` of the three
    /// byte strings concatenated: `0a 01 61 | 0a 01 62 | 0a 01 63`).
    #[test]
    fn proposal_hash_known_answer() {
        let header = pb::Header {
            channel_header: vec![0x0a, 0x01, 0x61],
            signature_header: vec![0x0a, 0x01, 0x62],
        }
        .encode_to_vec();
        let payload = pb::ChaincodeProposalPayload {
            input: b"c".to_vec(),
            transient_map: [("k".to_string(), b"v".to_vec())].into_iter().collect(),
        }
        .encode_to_vec();
        assert_eq!(
            hex::encode(proposal_hash(&header, &payload).unwrap()),
            KAT_HASH
        );
    }

    const KAT_HASH: &str = "d1422938a918879a9ce9a6bb06cecad08f2802f90bb068e44e609e91b4da70ea";

    #[test]
    fn fresh_nonces_give_fresh_transaction_ids() {
        let id = id();
        let mut rng = rand_core::OsRng;
        let a = ProposedTransaction::new(&id, &inv(), 1, &mut rng);
        let b = ProposedTransaction::new(&id, &inv(), 1, &mut rng);
        assert_ne!(a.tx_id, b.tx_id);
    }
}
