//! The anchoring chaincode as a service: [`super::contract`] behind Fabric's chaincode shim
//! protocol, for the peer's `ccaas` external builder (the peer dials the chaincode).
//!
//! The exchange on one `protos.Chaincode/Connect` stream (fabric-protos
//! `peer/chaincode_shim.proto`; the Go shim's `handler.go` is the reference behaviour):
//! 1. the chaincode sends `REGISTER` carrying `ChaincodeID{name = package ID}`; the peer answers
//!    `REGISTERED`, then `READY`;
//! 2. for each invocation the peer sends `TRANSACTION` (payload: `ChaincodeInput`, the signed
//!    proposal, the transaction and channel IDs). The chaincode asks for each key it reads
//!    (`GET_STATE` → `RESPONSE` with the value, empty when absent) and, when the contract
//!    accepts, writes each key (`PUT_STATE` → `RESPONSE`); it ends with `COMPLETED` carrying the
//!    contract's `Response` (a status ≥ 400 makes the peer refuse to endorse, with its message);
//! 3. `KEEPALIVE` is echoed.
//!
//! Invocations run concurrently, each on a blocking thread that waits for the peer's answers to
//! its own requests (routed by channel and transaction ID). The caller the contract sees is the
//! proposal's creator ([`Caller::from_signed_proposal`]); its signature was checked by the peer.

use std::collections::HashMap;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use medtech_protos::fabric as pb;
use medtech_protos::fabric_shim::chaincode_message::Type as MsgType;
use medtech_protos::fabric_shim::chaincode_server::{Chaincode, ChaincodeServer};
use medtech_protos::fabric_shim::{ChaincodeMessage, GetState, PutState};

use super::contract::{self, Caller, ContractConfig};

/// How long an invocation waits for the peer's answer to one state request.
const PEER_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

type Waiting = Arc<Mutex<HashMap<(String, String), std_mpsc::Sender<ChaincodeMessage>>>>;

/// The anchoring chaincode's shim service.
#[derive(Clone, Debug)]
pub struct AnchorChaincode {
    package_id: String,
    config: Arc<ContractConfig>,
}

impl AnchorChaincode {
    /// The chaincode registered as `package_id` (the `CHAINCODE_ID` the peer's lifecycle gave the
    /// installed package), applying `config`.
    pub fn new(package_id: &str, config: ContractConfig) -> Self {
        AnchorChaincode {
            package_id: package_id.to_owned(),
            config: Arc::new(config),
        }
    }

    /// The tonic service.
    pub fn into_service(self) -> ChaincodeServer<Self> {
        ChaincodeServer::new(self)
            .max_decoding_message_size(4 << 20)
            .max_encoding_message_size(4 << 20)
    }
}

fn message(kind: MsgType, payload: Vec<u8>, txid: &str, channel: &str) -> ChaincodeMessage {
    ChaincodeMessage {
        r#type: kind as i32,
        timestamp: None,
        payload,
        txid: txid.to_owned(),
        proposal: None,
        channel_id: channel.to_owned(),
    }
}

#[tonic::async_trait]
impl Chaincode for AnchorChaincode {
    type ConnectStream = ReceiverStream<Result<ChaincodeMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<ChaincodeMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, rx) = mpsc::channel::<Result<ChaincodeMessage, Status>>(256);
        let register = message(
            MsgType::Register,
            pb::ChaincodeId {
                name: self.package_id.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
            "",
            "",
        );
        out.send(Ok(register))
            .await
            .map_err(|_| Status::internal("stream closed"))?;
        let waiting: Waiting = Arc::default();
        let config = self.config.clone();
        tokio::spawn(async move {
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "chaincode stream from the peer failed");
                        break;
                    }
                };
                match MsgType::try_from(msg.r#type) {
                    Ok(MsgType::Registered) => tracing::info!("registered with the peer"),
                    Ok(MsgType::Ready) => tracing::info!("ready"),
                    Ok(MsgType::Keepalive) => {
                        let _ = out.send(Ok(msg)).await;
                    }
                    Ok(MsgType::Transaction | MsgType::Init) => {
                        let (out, waiting, config) = (out.clone(), waiting.clone(), config.clone());
                        tokio::task::spawn_blocking(move || {
                            run_transaction(msg, &out, &waiting, &config)
                        });
                    }
                    Ok(MsgType::Response | MsgType::Error) => {
                        let key = (msg.channel_id.clone(), msg.txid.clone());
                        let to = waiting.lock().ok().and_then(|w| w.get(&key).cloned());
                        match to {
                            Some(to) => {
                                let _ = to.send(msg);
                            }
                            None => tracing::warn!(txid = %key.1, "answer for no open invocation"),
                        }
                    }
                    other => tracing::warn!(kind = ?other, "unexpected message from the peer"),
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One invocation, on a blocking thread: runs the contract, reading and writing through the
/// peer, and answers `COMPLETED` (or `ERROR` when the exchange with the peer fails).
fn run_transaction(
    msg: ChaincodeMessage,
    out: &mpsc::Sender<Result<ChaincodeMessage, Status>>,
    waiting: &Waiting,
    config: &ContractConfig,
) {
    let (txid, channel) = (msg.txid.clone(), msg.channel_id.clone());
    let key = (channel.clone(), txid.clone());
    let (to_me, answers) = std_mpsc::channel();
    if let Ok(mut w) = waiting.lock() {
        w.insert(key.clone(), to_me);
    }
    let result = invoke(&msg, out, &answers, config);
    if let Ok(mut w) = waiting.lock() {
        w.remove(&key);
    }
    let reply = match result {
        Ok(response) => message(
            MsgType::Completed,
            response.encode_to_vec(),
            &txid,
            &channel,
        ),
        Err(e) => message(MsgType::Error, e.into_bytes(), &txid, &channel),
    };
    let _ = out.blocking_send(Ok(reply));
}

fn invoke(
    msg: &ChaincodeMessage,
    out: &mpsc::Sender<Result<ChaincodeMessage, Status>>,
    answers: &std_mpsc::Receiver<ChaincodeMessage>,
    config: &ContractConfig,
) -> Result<pb::Response, String> {
    let input = pb::ChaincodeInput::decode(msg.payload.as_slice())
        .map_err(|e| format!("transaction payload is not a ChaincodeInput: {e}"))?;
    let Some((function, args)) = input.args.split_first() else {
        return Ok(contract::error_response(400, "no function named"));
    };
    let function = String::from_utf8_lossy(function).into_owned();
    let caller = match msg.proposal.as_ref().map(Caller::from_signed_proposal) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Ok(contract::error_response(400, &e)),
        None => return Ok(contract::error_response(400, "no signed proposal")),
    };
    let ask = |kind: MsgType, payload: Vec<u8>| -> Result<Vec<u8>, String> {
        out.blocking_send(Ok(message(kind, payload, &msg.txid, &msg.channel_id)))
            .map_err(|_| "the peer's stream closed".to_owned())?;
        let a = answers
            .recv_timeout(PEER_ANSWER_TIMEOUT)
            .map_err(|_| "no answer from the peer".to_owned())?;
        match MsgType::try_from(a.r#type) {
            Ok(MsgType::Response) => Ok(a.payload),
            _ => Err(format!(
                "the peer refused a state request: {}",
                String::from_utf8_lossy(&a.payload)
            )),
        }
    };
    let mut failed = None;
    let outcome = contract::invoke(
        config,
        &caller,
        &mut |k| {
            let payload = GetState {
                key: k.to_owned(),
                collection: String::new(),
            }
            .encode_to_vec();
            match ask(MsgType::GetState, payload) {
                Ok(v) if v.is_empty() => None,
                Ok(v) => Some(v),
                Err(e) => {
                    failed.get_or_insert(e);
                    None
                }
            }
        },
        &function,
        args,
    );
    if let Some(e) = failed {
        return Err(e);
    }
    if (200..400).contains(&outcome.response.status) {
        for (k, v) in outcome.writes {
            let payload = PutState {
                key: k,
                value: v,
                collection: String::new(),
            }
            .encode_to_vec();
            ask(MsgType::PutState, payload)?;
        }
    }
    Ok(outcome.response)
}
