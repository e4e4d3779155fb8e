//! The Fabric Gateway client over tonic: `Evaluate` for reads, and `Endorse` → check and sign
//! the prepared transaction → `Submit` → `CommitStatus` for writes (see [`super::transaction`]).

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use medtech_protos::fabric as pb;
use medtech_protos::fabric::gateway_client::GatewayClient as RawClient;

use super::identity::MspIdentity;
use super::transaction::{Invocation, ProposedTransaction};
use super::FabricError;
use crate::entry::now_ms;

/// Largest gateway response accepted.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Where the gateway is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct GatewayEndpoint {
    /// `host:port` of a Fabric peer running the gateway service.
    pub address: String,
    /// The TLS CA certificate (PEM) of the peer's organization; `None` for plaintext (only for
    /// a peer with TLS disabled, i.e. never in production).
    pub tls_ca_pem: Option<String>,
    /// Overrides the TLS server name (default: the host of `address`).
    pub server_name: Option<String>,
    /// Client certificate and key (PEM) if the peer requires mutual TLS.
    pub client_tls: Option<(String, String)>,
    /// How long to wait for a transaction to commit.
    pub commit_timeout: Duration,
}

/// A committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Transaction ID.
    pub tx_id: String,
    /// The block that holds it.
    pub block: u64,
    /// The chaincode's response at endorsement.
    pub response: pb::Response,
}

/// An endorsed transaction, checked to be the proposal's, not yet signed or submitted.
#[derive(Clone, Debug)]
pub struct Endorsed {
    /// The proposal.
    pub proposal: ProposedTransaction,
    /// The unsigned transaction the gateway prepared from the endorsements.
    pub prepared: pb::Envelope,
    /// The chaincode's response.
    pub response: pb::Response,
}

/// A Gateway client acting as one MSP identity on one channel and chaincode.
#[derive(Clone)]
pub struct GatewayClient {
    raw: RawClient<Channel>,
    identity: std::sync::Arc<MspIdentity>,
    channel: String,
    chaincode: String,
    commit_timeout: Duration,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("identity", &self.identity)
            .field("channel", &self.channel)
            .field("chaincode", &self.chaincode)
            .finish_non_exhaustive()
    }
}

/// `google.rpc.Status`, the envelope of a gRPC error's details.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<RpcAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcAny {
    #[prost(string, tag = "1")]
    pub(crate) type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
}

/// The `gateway.ErrorDetail`s a Fabric gateway attaches to an error (what each peer said).
pub fn error_details(s: &tonic::Status) -> Vec<pb::ErrorDetail> {
    use prost::Message as _;
    RpcStatus::decode(s.details())
        .map(|st| {
            st.details
                .iter()
                .filter(|a| a.type_url.ends_with("/gateway.ErrorDetail"))
                .filter_map(|a| pb::ErrorDetail::decode(a.value.as_slice()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A gateway error as this client reports it. A chaincode's refusal, which a Fabric gateway
/// reports as `ABORTED` with an `ErrorDetail` "chaincode response STATUS, MESSAGE" per peer,
/// becomes [`FabricError::Chaincode`]; anything else is a transport error carrying the details.
fn transport(s: tonic::Status) -> FabricError {
    let details = error_details(&s);
    for d in &details {
        if let Some(rest) = d.message.strip_prefix("chaincode response ") {
            if let Some((status, message)) = rest.split_once(", ") {
                if let Ok(status) = status.parse::<i32>() {
                    return FabricError::Chaincode {
                        status,
                        message: message.to_owned(),
                    };
                }
            }
        }
    }
    let mut m = format!("{:?}: {}", s.code(), s.message());
    for d in details {
        m.push_str(&format!(" [{} {}: {}]", d.msp_id, d.address, d.message));
    }
    FabricError::Transport(m)
}

impl GatewayClient {
    /// A lazily connecting client.
    pub fn connect_lazy(
        endpoint: &GatewayEndpoint,
        identity: MspIdentity,
        channel: &str,
        chaincode: &str,
    ) -> Result<Self, FabricError> {
        let scheme = if endpoint.tls_ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{}", endpoint.address))
            .map_err(|e| FabricError::Transport(format!("bad address {}: {e}", endpoint.address)))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if let Some(ca) = &endpoint.tls_ca_pem {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some(name) = &endpoint.server_name {
                tls = tls.domain_name(name.clone());
            }
            if let Some((cert, key)) = &endpoint.client_tls {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            ep = ep
                .tls_config(tls)
                .map_err(|e| FabricError::Transport(format!("TLS: {e}")))?;
        }
        let raw = RawClient::new(ep.connect_lazy()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let commit_timeout = if endpoint.commit_timeout.is_zero() {
            Duration::from_secs(60)
        } else {
            endpoint.commit_timeout
        };
        Ok(GatewayClient {
            raw,
            identity: std::sync::Arc::new(identity),
            channel: channel.to_owned(),
            chaincode: chaincode.to_owned(),
            commit_timeout,
        })
    }

    fn invocation(&self, function: &str, args: &[&[u8]]) -> Invocation {
        Invocation {
            channel: self.channel.clone(),
            chaincode: self.chaincode.clone(),
            function: function.to_owned(),
            args: args.iter().map(|a| a.to_vec()).collect(),
        }
    }

    /// Evaluates `function(args)` on one peer (a read; nothing is ordered).
    pub async fn evaluate(
        &self,
        function: &str,
        args: &[&[u8]],
    ) -> Result<pb::Response, FabricError> {
        let p = ProposedTransaction::new(
            &self.identity,
            &self.invocation(function, args),
            now_ms(),
            &mut rand_core::OsRng,
        );
        let resp = self
            .raw
            .clone()
            .evaluate(pb::EvaluateRequest {
                transaction_id: p.tx_id.clone(),
                channel_id: self.channel.clone(),
                proposed_transaction: Some(p.signed),
                target_organizations: Vec::new(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        resp.result
            .ok_or_else(|| FabricError::Gateway("evaluate returned no result".into()))
    }

    /// Endorses `function(args)` and checks that the prepared transaction is this proposal's
    /// ([`ProposedTransaction::check_prepared`]); nothing is ordered yet.
    pub async fn endorse(&self, function: &str, args: &[&[u8]]) -> Result<Endorsed, FabricError> {
        let p = ProposedTransaction::new(
            &self.identity,
            &self.invocation(function, args),
            now_ms(),
            &mut rand_core::OsRng,
        );
        self.endorse_proposal(p).await
    }

    /// Endorses an already built proposal (see [`Self::endorse`]).
    pub async fn endorse_proposal(
        &self,
        proposal: ProposedTransaction,
    ) -> Result<Endorsed, FabricError> {
        let endorsed = self
            .raw
            .clone()
            .endorse(pb::EndorseRequest {
                transaction_id: proposal.tx_id.clone(),
                channel_id: self.channel.clone(),
                proposed_transaction: Some(proposal.signed.clone()),
                endorsing_organizations: Vec::new(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        let prepared = endorsed
            .prepared_transaction
            .ok_or_else(|| FabricError::Gateway("endorse returned no transaction".into()))?;
        let response = proposal.check_prepared(&prepared)?;
        Ok(Endorsed {
            proposal,
            prepared,
            response,
        })
    }

    /// Submits `function(args)` and waits until it is committed valid.
    pub async fn submit(&self, function: &str, args: &[&[u8]]) -> Result<Committed, FabricError> {
        let Endorsed {
            proposal: p,
            prepared,
            response,
        } = self.endorse(function, args).await?;
        let mut raw = self.raw.clone();
        let envelope = p.sign_prepared(&self.identity, &prepared);
        raw.submit(pb::SubmitRequest {
            transaction_id: p.tx_id.clone(),
            channel_id: self.channel.clone(),
            prepared_transaction: Some(envelope),
        })
        .await
        .map_err(transport)?;
        let status_request = p.commit_status_request(&self.identity);
        let deadline = tokio::time::Instant::now() + self.commit_timeout;
        let mut wait = Duration::from_millis(20);
        loop {
            match raw.commit_status(status_request.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.result == pb::TxValidationCode::Valid as i32 {
                        return Ok(Committed {
                            tx_id: p.tx_id,
                            block: r.block_number,
                            response,
                        });
                    }
                    let code = pb::TxValidationCode::try_from(r.result)
                        .map(|c| c.as_str_name().to_owned())
                        .unwrap_or_else(|_| format!("code {}", r.result));
                    return Err(FabricError::Invalid {
                        tx_id: p.tx_id,
                        code,
                    });
                }
                // A real gateway blocks until commit and answers `Cancelled` or
                // `DeadlineExceeded` when its own wait runs out: retry those, and not-yet-known.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::NotFound
                            | tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unavailable
                    ) => {}
                Err(s) => return Err(transport(s)),
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Err(FabricError::CommitTimeout(p.tx_id));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}
