//! The Raft transport: tonic gRPC over mutually authenticated TLS (rustls).
//!
//! Every member serves `medtech.ledger.v1.RaftService` with its certificate and requires a
//! client certificate from the committee CA. That is not enough on its own — every member holds
//! such a certificate — so each Raft RPC is also matched to its sender: the node id the RPC
//! claims (the leader or candidate in its vote) must be pinned, in the current Raft membership
//! (or, before the first membership entry arrives, in the node's committee configuration), to
//! the SHA-256 of the certificate the connection presented. Otherwise the RPC is refused with
//! `PERMISSION_DENIED` and never reaches openraft.
//!
//! Payloads are openraft messages in postcard ([`PAYLOAD_FORMAT`]); responses carry
//! `Result<response, RaftError>` so remote Raft errors come back typed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use medtech_protos::ledger::v1 as pb;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::Raft;
use pb::raft_service_client::RaftServiceClient;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Response, Status};

use super::{CommitteeNode, NodeId, TypeConfig};
use crate::tls::{cert_digest, NodeTls};

/// The payload format this build speaks: postcard-encoded openraft 0.9 messages.
pub const PAYLOAD_FORMAT: u32 = 1;

/// Largest gRPC message accepted (snapshot chunks and entry batches stay far below).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

fn encode<T: Serialize>(v: &T) -> Result<pb::RaftPayload, postcard::Error> {
    Ok(pb::RaftPayload {
        format: PAYLOAD_FORMAT,
        data: postcard::to_stdvec(v)?,
    })
}

fn decode<T: DeserializeOwned>(p: &pb::RaftPayload) -> Result<T, String> {
    if p.format != PAYLOAD_FORMAT {
        return Err(format!(
            "payload format {} is not {PAYLOAD_FORMAT}",
            p.format
        ));
    }
    postcard::from_bytes(&p.data).map_err(|e| format!("payload does not decode: {e}"))
}

/// A transport error as an `std::error::Error` for openraft's wrappers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

/// Network links cut on purpose, for fault-injection scenarios: a set of directed links
/// `(from, to)` between member names. A member never sends anything over a cut link — Raft
/// RPCs, forwarded proposals and catch-up fetches alike fail as `Unreachable` — so cutting
/// both directions between two groups is a network partition, with the real TLS transport
/// still carrying everything else. Empty (the default) in production; nothing outside the
/// process can change it.
#[derive(Clone, Debug, Default)]
pub struct LinkFaults(Arc<RwLock<BTreeSet<(String, String)>>>);

impl LinkFaults {
    /// Cuts both directions between every member of `a` and every member of `b`.
    pub fn partition(&self, a: &[String], b: &[String]) {
        let mut cut = match self.0.write() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        for x in a {
            for y in b {
                cut.insert((x.clone(), y.clone()));
                cut.insert((y.clone(), x.clone()));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        match self.0.write() {
            Ok(mut c) => c.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }

    /// Whether `from` may not send to `to`.
    pub fn is_cut(&self, from: &str, to: &str) -> bool {
        let cut = match self.0.read() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        !cut.is_empty() && cut.contains(&(from.to_owned(), to.to_owned()))
    }
}

/// Creates clients to other members.
#[derive(Clone)]
pub struct Network {
    tls: ClientTlsConfig,
    me: String,
    faults: LinkFaults,
    /// One channel per member name and address, shared by every clone: tonic multiplexes
    /// requests over one HTTP/2 connection and dials it again when it breaks, so forwarded
    /// proposals and fetches need no TCP and TLS handshake of their own (one per forwarded
    /// proposal before; docs/performance.md).
    channels: Arc<std::sync::Mutex<BTreeMap<(String, String), Channel>>>,
}

/// How often an idle connection to a member is pinged, and how long a ping may go
/// unanswered before the connection is dropped (and dialled again on next use).
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

impl Network {
    /// With this member's TLS material (its certificate is presented as the client identity).
    pub fn new(tls: &NodeTls) -> Self {
        Self::with_faults(tls, "", LinkFaults::default())
    }

    /// As [`Self::new`], for member `me`, refusing to send over the links `faults` cuts.
    pub fn with_faults(tls: &NodeTls, me: &str, faults: LinkFaults) -> Self {
        let cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_pem))
            .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
        Network {
            tls: cfg,
            me: me.to_owned(),
            faults,
            channels: Arc::default(),
        }
    }

    fn cut(&self, to: &str) -> Option<String> {
        self.faults
            .is_cut(&self.me, to)
            .then(|| format!("link {} -> {to} is cut", self.me))
    }

    /// A lazily connecting channel to `node` (TLS name = member name).
    pub fn channel(&self, node: &CommitteeNode) -> Result<Channel, String> {
        if let Some(e) = self.cut(&node.name) {
            return Err(e);
        }
        let key = (node.name.clone(), node.addr.clone());
        let mut channels = match self.channels.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some(ch) = channels.get(&key) {
            return Ok(ch.clone());
        }
        let ep = Endpoint::from_shared(format!("https://{}", node.addr))
            .map_err(|e| format!("bad address {}: {e}", node.addr))?
            .tls_config(self.tls.clone().domain_name(node.name.clone()))
            .map_err(|e| format!("TLS config: {e}"))?
            .connect_timeout(std::time::Duration::from_millis(500))
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let ch = ep.connect_lazy();
        channels.insert(key, ch.clone());
        Ok(ch)
    }
}

/// A client to one member.
pub struct NetworkClient {
    target: NodeId,
    node: CommitteeNode,
    client: Result<RaftServiceClient<Channel>, String>,
    network: Network,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &CommitteeNode) -> NetworkClient {
        let client = self.channel(node).map(|ch| {
            RaftServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        NetworkClient {
            target,
            node: node.clone(),
            client,
            network: self.clone(),
        }
    }
}

type RpcErr<E> = RPCError<NodeId, CommitteeNode, RaftError<NodeId, E>>;

impl NetworkClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if let Some(e) = self.network.cut(&self.node.name) {
            return Err(RPCError::Unreachable(Unreachable::new(&TransportError(e))));
        }
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(
                    e.clone(),
                ))))
            }
        };
        let payload = encode(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&TransportError(e.to_string()))))?;
        let mut request = Request::new(payload);
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let err = TransportError(format!("{kind} to {}: {status}", self.node));
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        RPCError::Unreachable(Unreachable::new(&err))
                    }
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&TransportError(e))))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call("vote", &rpc, &option).await
    }
}

/// The node-side services behind the endpoint (implemented by [`super::node::LedgerNode`]).
#[tonic::async_trait]
pub trait ProposalHandler: Send + Sync + 'static {
    /// Proposes `entry` locally (this node should be the leader).
    async fn propose_local(&self, entry: Vec<u8>) -> pb::ProposeReply;
    /// Applied entries `[from, to)` with the consistency proof from `to` to `proof_size`.
    fn fetch(&self, req: &pb::FetchRequest) -> Result<pb::FetchReply, Status>;
}

/// Largest number of entries in one fetch.
pub const FETCH_CHUNK: u64 = 512;

/// Where a member installing a snapshot gets the entries it lacks.
#[tonic::async_trait]
pub trait EntryFetcher: Send + Sync + 'static {
    /// Asks `members` in turn for entries `[from, to)` with the consistency proof from `to`
    /// to `proof_size`; returns the first complete answer.
    async fn fetch(
        &self,
        members: &[CommitteeNode],
        req: pb::FetchRequest,
    ) -> Result<pb::FetchReply, String>;
}

#[tonic::async_trait]
impl EntryFetcher for Network {
    async fn fetch(
        &self,
        members: &[CommitteeNode],
        req: pb::FetchRequest,
    ) -> Result<pb::FetchReply, String> {
        let want = req.to.saturating_sub(req.from) as usize;
        let mut errors = Vec::new();
        for m in members {
            let ch = match self.channel(m) {
                Ok(ch) => ch,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut client = RaftServiceClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            match client.fetch_entries(req).await {
                Ok(r) if r.get_ref().entries.len() == want => return Ok(r.into_inner()),
                Ok(r) => errors.push(format!(
                    "{m}: {} entries instead of {want}",
                    r.get_ref().entries.len()
                )),
                Err(s) => errors.push(format!("{m}: {}", s.message())),
            }
        }
        Err(format!("no member served entries: {}", errors.join("; ")))
    }
}

/// The server side: checks the sender's certificate, then hands the RPC to openraft.
pub struct RaftServer {
    raft: Raft<TypeConfig>,
    pinned: Arc<BTreeMap<NodeId, CommitteeNode>>,
    proposals: Arc<dyn ProposalHandler>,
}

impl RaftServer {
    /// For `raft`, with the committee configuration's pinned members.
    pub fn new(
        raft: Raft<TypeConfig>,
        pinned: BTreeMap<NodeId, CommitteeNode>,
        proposals: Arc<dyn ProposalHandler>,
    ) -> Self {
        RaftServer {
            raft,
            pinned: Arc::new(pinned),
            proposals,
        }
    }

    /// The certificate digest pinned for `id`: the membership's entry if it has one, else the
    /// configuration's.
    fn pinned_digest(&self, id: NodeId) -> Option<String> {
        let from_membership = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.cert_sha256.clone())
        };
        from_membership.or_else(|| self.pinned.get(&id).map(|n| n.cert_sha256.clone()))
    }

    fn peer_digest<T>(req: &Request<T>) -> Result<String, Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
        Ok(cert_digest(leaf.as_ref()))
    }

    /// Refuses unless the connection's certificate is the one pinned for `claimed`.
    fn authorize<T>(&self, req: &Request<T>, claimed: NodeId) -> Result<(), Status> {
        let presented = Self::peer_digest(req)?;
        match self.pinned_digest(claimed) {
            Some(d) if d == presented => Ok(()),
            Some(_) => Err(Status::permission_denied(format!(
                "certificate does not match node {claimed}"
            ))),
            None => Err(Status::permission_denied(format!(
                "node {claimed} is not a member"
            ))),
        }
    }

    /// Whether the connection's certificate belongs to any known member.
    fn authorize_member<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let presented = Self::peer_digest(req)?;
        let m = self.raft.metrics();
        let known = m
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .any(|(_, n)| n.cert_sha256 == presented)
            || self.pinned.values().any(|n| n.cert_sha256 == presented);
        if known {
            Ok(())
        } else {
            Err(Status::permission_denied("certificate is not a member's"))
        }
    }
}

fn bad_payload(e: String) -> Status {
    Status::invalid_argument(e)
}

fn reply<T: Serialize>(v: &T) -> Result<Response<pb::RaftPayload>, Status> {
    encode(v)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("encoding the reply: {e}")))
}

#[tonic::async_trait]
impl pb::raft_service_server::RaftService for RaftServer {
    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(request.get_ref()).map_err(bad_payload)?;
        self.authorize(
            &request,
            rpc.vote.leader_id().voted_for().unwrap_or_default(),
        )?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request.get_ref()).map_err(bad_payload)?;
        self.authorize(
            &request,
            rpc.vote.leader_id().voted_for().unwrap_or_default(),
        )?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode(request.get_ref()).map_err(bad_payload)?;
        self.authorize(
            &request,
            rpc.vote.leader_id().voted_for().unwrap_or_default(),
        )?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn fetch_entries(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchReply>, Status> {
        self.authorize_member(&request)?;
        let req = request.get_ref();
        if req.to < req.from || req.to - req.from > FETCH_CHUNK || req.proof_size < req.to {
            return Err(Status::invalid_argument(format!(
                "need from <= to <= proof_size and at most {FETCH_CHUNK} entries"
            )));
        }
        self.proposals.fetch(req).map(Response::new)
    }

    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeReply>, Status> {
        self.authorize_member(&request)?;
        let entry = request.into_inner().entry;
        Ok(Response::new(self.proposals.propose_local(entry).await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::CommitteeCa;

    fn node(name: &str, addr: &str) -> CommitteeNode {
        CommitteeNode {
            name: name.into(),
            addr: addr.into(),
            cert_sha256: String::new(),
        }
    }

    fn cached(n: &Network) -> usize {
        n.channels.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Forwarded proposals and fetches reuse one channel per peer (no handshake each), shared
    /// by the network's clones; a peer at a new address gets a new one; a cut link gets none.
    #[tokio::test]
    async fn one_channel_per_peer_and_address_is_kept_and_a_cut_link_gets_none() {
        let ca = CommitteeCa::generate("test committee").unwrap();
        let faults = LinkFaults::default();
        let net = Network::with_faults(&ca.issue("a").unwrap(), "a", faults.clone());
        let b = node("b", "127.0.0.1:1");
        net.channel(&b).unwrap();
        net.clone().channel(&b).unwrap();
        assert_eq!(cached(&net), 1);
        net.channel(&node("b", "127.0.0.1:2")).unwrap();
        assert_eq!(cached(&net), 2);
        faults.partition(&["a".into()], &["c".into()]);
        assert!(net.channel(&node("c", "127.0.0.1:3")).is_err());
        assert_eq!(cached(&net), 2);
    }
}
