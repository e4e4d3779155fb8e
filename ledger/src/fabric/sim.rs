//! An in-process Fabric Gateway with one peer and the anchoring chaincode, for fast tests (the
//! client is also tested against a real Fabric peer: `tests/fabric_real.rs`). It does what a gateway, its endorsing peer and the committing peers
//! check of a client, on the exact bytes received:
//!
//! * **Endorse / Evaluate:** the `SignedProposal` signature (ECDSA P-256, DER, low-S) over the
//!   proposal bytes with the key of the creator's certificate; the creator is an enrolled
//!   identity of a known MSP (the simulator pins certificates where a real MSP checks a chain to
//!   the organization's CA); header type, channel, chaincode, `tx_id = hex(SHA-256(nonce ‖
//!   creator))` and that the request's IDs match the proposal's; a `tx_id` is endorsed once.
//!   The chaincode runs ([`super::contract::invoke`]); the response is endorsed by the peer's
//!   own P-256 key over `proposal response payload ‖ endorser`.
//! * **Submit:** the envelope's payload is byte-for-byte the prepared transaction endorsed for
//!   that `tx_id`, and its signature verifies with the creator's key; the transaction then
//!   commits in its own block unless a key it read changed since endorsement
//!   (`MVCC_READ_CONFLICT`, as a committing peer decides).
//! * **CommitStatus:** the signature over the request bytes verifies with the identity in the
//!   request, which must be the transaction's creator.
//!
//! Anything else gets a gRPC error (`INVALID_ARGUMENT`, `PERMISSION_DENIED`, `NOT_FOUND`,
//! `ALREADY_EXISTS`) with a message, as a gateway reports it. [`SimulatedGateway::misbehave`]
//! makes it lie, to test the client's own checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message as _;
use tonic::{Request, Response as TonicResponse, Status};

use medtech_protos::fabric as pb;
use medtech_protos::fabric::gateway_server::{Gateway, GatewayServer};

use super::contract;
use super::identity::{verify_signature, MspIdentity};
use super::transaction::{proposal_hash, transaction_id};
use super::FabricError;
use crate::tls::NodeTls;

/// Issues a self-signed P-256 identity certificate (`CN = name`, `O = msp`) and its PKCS#8 key,
/// both PEM, as a test stand-in for an organization CA's enrollment.
pub fn issue_identity(msp: &str, name: &str) -> Result<(String, String), FabricError> {
    issue(msp, name, "client")
}

/// As [`issue_identity`], for an organization's admin (`OU = admin`, Fabric's NodeOU), who may
/// register a committee's keys with the chaincode.
pub fn issue_admin_identity(msp: &str, name: &str) -> Result<(String, String), FabricError> {
    issue(msp, name, "admin")
}

pub(crate) fn issue(msp: &str, name: &str, ou: &str) -> Result<(String, String), FabricError> {
    let e = |e: rcgen::Error| FabricError::Identity(format!("issuing a test identity: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(e)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, msp);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, ou);
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let cert = params.self_signed(&key).map_err(e)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Ways the simulated gateway can lie to its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Return a prepared transaction whose chaincode arguments differ from the proposal's.
    SwapArguments,
}

/// Keys read at endorsement with the values seen.
type Reads = Vec<(String, Option<Vec<u8>>)>;

struct Pending {
    creator: Vec<u8>,
    payload: Vec<u8>,
    reads: Reads,
    writes: BTreeMap<String, Vec<u8>>,
}

#[derive(Default)]
struct State {
    enrolled: HashMap<String, BTreeSet<Vec<u8>>>,
    world: BTreeMap<String, Vec<u8>>,
    seen_tx: BTreeSet<String>,
    pending: HashMap<String, Pending>,
    committed: HashMap<String, (pb::TxValidationCode, u64, Vec<u8>)>,
    blocks: u64,
    misbehaviour: Option<Misbehaviour>,
    refused: u64,
    config: contract::ContractConfig,
}

/// The simulated gateway; cheap to clone (shared state).
#[derive(Clone)]
pub struct SimulatedGateway {
    channel: String,
    chaincode: String,
    peer: Arc<MspIdentity>,
    state: Arc<Mutex<State>>,
}

/// A running simulated gateway.
pub struct RunningGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA certificate (PEM) a client must trust to reach it over TLS.
    pub ca_pem: String,
    /// The TLS server name.
    pub server_name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningGateway {
    /// Stops serving.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl SimulatedGateway {
    /// A gateway for `channel` running `chaincode`, with a fresh peer identity in `PeerOrgMSP`.
    pub fn new(channel: &str, chaincode: &str) -> Result<Self, FabricError> {
        let (cert, key) = issue_identity("PeerOrgMSP", "peer0")?;
        Ok(SimulatedGateway {
            channel: channel.to_owned(),
            chaincode: chaincode.to_owned(),
            peer: Arc::new(MspIdentity::from_pem("PeerOrgMSP", &cert, &key)?),
            state: Arc::new(Mutex::new(State::default())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this test double; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enrolls a client certificate (PEM) as a member of `msp`.
    pub fn enroll(&self, msp: &str, cert_pem: &str) {
        self.lock()
            .enrolled
            .entry(msp.to_owned())
            .or_default()
            .insert(cert_pem.as_bytes().to_vec());
    }

    /// Who the chaincode lets register committees and anchor (default: nobody registers).
    pub fn configure(&self, config: contract::ContractConfig) {
        self.lock().config = config;
    }

    /// Makes the gateway lie from now on.
    pub fn misbehave(&self, m: Misbehaviour) {
        self.lock().misbehaviour = Some(m);
    }

    /// The committed world state.
    pub fn world_state(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().world.clone()
    }

    /// Number of blocks committed.
    pub fn blocks(&self) -> u64 {
        self.lock().blocks
    }

    /// Number of requests refused so far.
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }

    /// Serves on a loopback port over TLS (a fresh CA and server certificate).
    pub async fn serve(&self) -> Result<RunningGateway, FabricError> {
        let io = |e: std::io::Error| FabricError::Transport(e.to_string());
        let ca = crate::tls::CommitteeCa::generate("fabric-sim-ca")
            .map_err(|e| FabricError::Transport(e.to_string()))?;
        let server_name = "gateway.fabric.test".to_owned();
        let NodeTls {
            cert_pem, key_pem, ..
        } = ca
            .issue(&server_name)
            .map_err(|e| FabricError::Transport(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        let router = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(|e| FabricError::Transport(e.to_string()))?
            .add_service(GatewayServer::new(self.clone()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        Ok(RunningGateway {
            addr,
            ca_pem: ca.cert_pem().to_owned(),
            server_name,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// Checks a signed proposal as an endorsing peer does; returns (tx_id, creator, header
    /// bytes, signature header bytes, payload bytes, function, args).
    fn check_proposal(
        &self,
        st: &State,
        tx_id: &str,
        channel: &str,
        signed: Option<&pb::SignedProposal>,
    ) -> Result<CheckedProposal, Status> {
        let signed = signed.ok_or_else(|| Status::invalid_argument("no signed proposal"))?;
        let bad = |m: &str| Status::invalid_argument(format!("proposal: {m}"));
        let proposal = pb::Proposal::decode(signed.proposal_bytes.as_slice())
            .map_err(|_| bad("not a Proposal"))?;
        let header =
            pb::Header::decode(proposal.header.as_slice()).map_err(|_| bad("bad header"))?;
        let ch = pb::ChannelHeader::decode(header.channel_header.as_slice())
            .map_err(|_| bad("bad channel header"))?;
        let sh = pb::SignatureHeader::decode(header.signature_header.as_slice())
            .map_err(|_| bad("bad signature header"))?;
        let id = verify_signature(&sh.creator, &signed.proposal_bytes, &signed.signature)
            .map_err(|e| Status::permission_denied(format!("proposal signature: {e}")))?;
        if !st
            .enrolled
            .get(&id.mspid)
            .is_some_and(|certs| certs.contains(&id.id_bytes))
        {
            return Err(Status::permission_denied(format!(
                "creator is not an enrolled member of {}",
                id.mspid
            )));
        }
        if ch.r#type != pb::HeaderType::EndorserTransaction as i32 {
            return Err(bad("header type is not ENDORSER_TRANSACTION"));
        }
        if ch.channel_id != self.channel || channel != self.channel {
            return Err(Status::not_found(format!(
                "channel {:?} not found",
                ch.channel_id
            )));
        }
        if ch.tx_id != transaction_id(&sh.nonce, &sh.creator) {
            return Err(bad("tx_id is not hex(SHA-256(nonce ‖ creator))"));
        }
        if ch.tx_id != tx_id {
            return Err(bad("request transaction_id differs from the proposal's"));
        }
        let ext = pb::ChaincodeHeaderExtension::decode(ch.extension.as_slice())
            .map_err(|_| bad("bad header extension"))?;
        if ext.chaincode_id.map(|c| c.name) != Some(self.chaincode.clone()) {
            return Err(Status::not_found("chaincode not found on this channel"));
        }
        let cpp = pb::ChaincodeProposalPayload::decode(proposal.payload.as_slice())
            .map_err(|_| bad("bad payload"))?;
        let spec = pb::ChaincodeInvocationSpec::decode(cpp.input.as_slice())
            .map_err(|_| bad("bad invocation spec"))?;
        let mut args = spec
            .chaincode_spec
            .and_then(|s| s.input)
            .map(|i| i.args)
            .unwrap_or_default();
        if args.is_empty() {
            return Err(bad("no function name"));
        }
        let function = String::from_utf8(args.remove(0)).map_err(|_| bad("function name"))?;
        Ok(CheckedProposal {
            tx_id: ch.tx_id,
            creator: sh.creator,
            header: proposal.header,
            signature_header: header.signature_header,
            payload: proposal.payload,
            function,
            args,
        })
    }

    fn simulate(&self, st: &State, p: &CheckedProposal) -> (contract::Outcome, Reads) {
        let mut reads = Vec::new();
        let caller = match contract::Caller::from_creator(&p.creator) {
            Ok(c) => c,
            Err(e) => {
                return (
                    contract::Outcome {
                        response: contract::error_response(400, &e),
                        writes: BTreeMap::new(),
                    },
                    reads,
                )
            }
        };
        let out = contract::invoke(
            &st.config,
            &caller,
            &mut |k| {
                let v = st.world.get(k).cloned();
                reads.push((k.to_owned(), v.clone()));
                v
            },
            &p.function,
            &p.args,
        );
        (out, reads)
    }

    /// [`Self::check_proposal`], counting a refusal.
    fn checked_proposal(
        &self,
        st: &mut State,
        tx_id: &str,
        channel: &str,
        signed: Option<&pb::SignedProposal>,
    ) -> Result<CheckedProposal, Status> {
        let checked = self.check_proposal(st, tx_id, channel, signed);
        checked.map_err(|s| self.refuse(st, s))
    }

    fn refuse(&self, st: &mut State, s: Status) -> Status {
        st.refused += 1;
        s
    }
}

struct CheckedProposal {
    tx_id: String,
    creator: Vec<u8>,
    header: Vec<u8>,
    signature_header: Vec<u8>,
    payload: Vec<u8>,
    function: String,
    args: Vec<Vec<u8>>,
}

/// A refused endorsement as a real Fabric gateway reports it (checked against Fabric 3.1.5 by
/// `tests/fabric_real.rs`): `ABORTED`, "failed to endorse transaction, see attached details for
/// more info", and per peer a `gateway.ErrorDetail` "chaincode response STATUS, MESSAGE" in the
/// `google.rpc.Status` details.
fn chaincode_error(r: &pb::Response) -> Status {
    let detail = pb::ErrorDetail {
        address: "peer0.sim:7051".into(),
        msp_id: "PeerOrgMSP".into(),
        message: format!("chaincode response {}, {}", r.status, r.message),
    };
    let message = "failed to endorse transaction, see attached details for more info";
    let status = super::client::RpcStatus {
        code: tonic::Code::Aborted as i32,
        message: message.into(),
        details: vec![super::client::RpcAny {
            type_url: "type.googleapis.com/gateway.ErrorDetail".into(),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(
        tonic::Code::Aborted,
        message,
        tonic::codegen::Bytes::from(status.encode_to_vec()),
    )
}

#[tonic::async_trait]
impl Gateway for SimulatedGateway {
    async fn endorse(
        &self,
        request: Request<pb::EndorseRequest>,
    ) -> Result<TonicResponse<pb::EndorseResponse>, Status> {
        let req = request.into_inner();
        let mut st = self.lock();
        let p = self.checked_proposal(
            &mut st,
            &req.transaction_id,
            &req.channel_id,
            req.proposed_transaction.as_ref(),
        )?;
        if !st.seen_tx.insert(p.tx_id.clone()) {
            return Err(self.refuse(&mut st, Status::already_exists("duplicate transaction ID")));
        }
        let (outcome, reads) = self.simulate(&st, &p);
        if !(200..400).contains(&outcome.response.status) {
            return Err(chaincode_error(&outcome.response));
        }
        let results = serde_json::to_vec(
            &outcome
                .writes
                .iter()
                .map(|(k, v)| (k.clone(), hex::encode(v)))
                .collect::<BTreeMap<_, _>>(),
        )
        .unwrap_or_default();
        let action = pb::ChaincodeAction {
            results,
            events: Vec::new(),
            response: Some(outcome.response.clone()),
            chaincode_id: Some(pb::ChaincodeId {
                name: self.chaincode.clone(),
                ..Default::default()
            }),
        };
        let prp = pb::ProposalResponsePayload {
            proposal_hash: proposal_hash(&p.header, &p.payload)
                .map_err(|_| Status::internal("hashing the proposal"))?,
            extension: action.encode_to_vec(),
        }
        .encode_to_vec();
        let endorser = self.peer.serialized().to_vec();
        let mut signed_bytes = prp.clone();
        signed_bytes.extend_from_slice(&endorser);
        let endorsement = pb::Endorsement {
            signature: self.peer.sign(&signed_bytes),
            endorser,
        };
        let mut cpp = p.payload.clone();
        if st.misbehaviour == Some(Misbehaviour::SwapArguments) {
            let mut decoded = pb::ChaincodeProposalPayload::decode(cpp.as_slice())
                .map_err(|_| Status::internal("re-decoding"))?;
            decoded.input.push(0); // a different invocation
            cpp = decoded.encode_to_vec();
        }
        let tx = pb::Transaction {
            actions: vec![pb::TransactionAction {
                header: p.signature_header.clone(),
                payload: pb::ChaincodeActionPayload {
                    chaincode_proposal_payload: cpp,
                    action: Some(pb::ChaincodeEndorsedAction {
                        proposal_response_payload: prp,
                        endorsements: vec![endorsement],
                    }),
                }
                .encode_to_vec(),
            }],
        };
        let header = pb::Header::decode(p.header.as_slice())
            .map_err(|_| Status::internal("re-decoding the header"))?;
        let payload = pb::Payload {
            header: Some(header),
            data: tx.encode_to_vec(),
        }
        .encode_to_vec();
        st.pending.insert(
            p.tx_id.clone(),
            Pending {
                creator: p.creator.clone(),
                payload: payload.clone(),
                reads,
                writes: outcome.writes,
            },
        );
        Ok(TonicResponse::new(pb::EndorseResponse {
            prepared_transaction: Some(pb::Envelope {
                payload,
                signature: Vec::new(),
            }),
        }))
    }

    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<TonicResponse<pb::SubmitResponse>, Status> {
        let req = request.into_inner();
        let mut st = self.lock();
        if req.channel_id != self.channel {
            return Err(self.refuse(&mut st, Status::not_found("channel not found")));
        }
        let Some(env) = req.prepared_transaction else {
            return Err(self.refuse(&mut st, Status::invalid_argument("no transaction")));
        };
        if st.committed.contains_key(&req.transaction_id) {
            return Err(self.refuse(&mut st, Status::already_exists("already submitted")));
        }
        let Some(pending) = st.pending.remove(&req.transaction_id) else {
            return Err(self.refuse(
                &mut st,
                Status::not_found("transaction was not endorsed here"),
            ));
        };
        if env.payload != pending.payload {
            st.pending.insert(req.transaction_id.clone(), pending);
            return Err(self.refuse(
                &mut st,
                Status::invalid_argument("envelope payload differs from the endorsed transaction"),
            ));
        }
        if let Err(e) = verify_signature(&pending.creator, &env.payload, &env.signature) {
            st.pending.insert(req.transaction_id.clone(), pending);
            return Err(self.refuse(
                &mut st,
                Status::permission_denied(format!("envelope signature: {e}")),
            ));
        }
        // Commit: MVCC validation against what endorsement read.
        let conflict = pending
            .reads
            .iter()
            .any(|(k, v)| st.world.get(k) != v.as_ref());
        st.blocks += 1;
        let block = st.blocks;
        let code = if conflict {
            pb::TxValidationCode::MvccReadConflict
        } else {
            for (k, v) in pending.writes {
                st.world.insert(k, v);
            }
            pb::TxValidationCode::Valid
        };
        st.committed
            .insert(req.transaction_id, (code, block, pending.creator));
        Ok(TonicResponse::new(pb::SubmitResponse {}))
    }

    async fn commit_status(
        &self,
        request: Request<pb::SignedCommitStatusRequest>,
    ) -> Result<TonicResponse<pb::CommitStatusResponse>, Status> {
        let signed = request.into_inner();
        let mut st = self.lock();
        let req = match pb::CommitStatusRequest::decode(signed.request.as_slice()) {
            Ok(r) => r,
            Err(_) => {
                return Err(self.refuse(
                    &mut st,
                    Status::invalid_argument("not a CommitStatusRequest"),
                ))
            }
        };
        if let Err(e) = verify_signature(&req.identity, &signed.request, &signed.signature) {
            return Err(self.refuse(
                &mut st,
                Status::permission_denied(format!("commit status signature: {e}")),
            ));
        }
        let Some((code, block, creator)) = st.committed.get(&req.transaction_id).cloned() else {
            return Err(Status::not_found("transaction not committed"));
        };
        if creator != req.identity {
            return Err(self.refuse(
                &mut st,
                Status::permission_denied("only the transaction's creator may ask"),
            ));
        }
        Ok(TonicResponse::new(pb::CommitStatusResponse {
            result: code as i32,
            block_number: block,
        }))
    }

    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<TonicResponse<pb::EvaluateResponse>, Status> {
        let req = request.into_inner();
        let mut st = self.lock();
        let p = self.checked_proposal(
            &mut st,
            &req.transaction_id,
            &req.channel_id,
            req.proposed_transaction.as_ref(),
        )?;
        let (outcome, _) = self.simulate(&st, &p);
        if outcome.response.status >= 400 {
            return Err(chaincode_error(&outcome.response));
        }
        Ok(TonicResponse::new(pb::EvaluateResponse {
            result: Some(outcome.response),
        }))
    }
}
