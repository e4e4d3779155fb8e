//! A committee member's ledger node: storage, Raft, the gRPC server, proposal forwarding and
//! checkpoint cosigning, behind one handle.
//!
//! Bootstrapping: every member starts with the same committee configuration (names, signing
//! keys, Raft ids, addresses, certificate digests); one member calls [`LedgerNode::initialize`]
//! with the whole committee as voters. Restarting a member reopens its disk and rejoins.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use medtech_protos::ledger::v1 as pb;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, Raft, SnapshotPolicy};
use pb::raft_service_client::RaftServiceClient;
use pb::raft_service_server::RaftServiceServer;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::log_store::LogStore;
use super::network::{Network, ProposalHandler, RaftServer, MAX_MESSAGE_BYTES};
use super::state_machine::{Ledger, StateMachine};
use super::{CommitteeNode, NodeId, Proposal, Receipt, TypeConfig};
use crate::backend::{AnyStore, Backend};
use crate::checkpoint::{Checkpoint, NodeKey, SignedCheckpoint};
use crate::entry::{now_ms, sign_entry, AuthorId, Kind};
use crate::state::CommitteeConfig;
use crate::tls::NodeTls;
use crate::Error;

/// The scratch file in a node's data directory that its ledger state's per-query records spill
/// to (recreated at every start; see [`crate::book`]).
pub const STATE_SPILL_FILE: &str = "state-cache.redb";

/// Raft timing and compaction.
#[derive(Clone, Debug)]
pub struct RaftTuning {
    /// Leader heartbeat.
    pub heartbeat_ms: u64,
    /// Election timeout range.
    pub election_ms: (u64, u64),
    /// Build a snapshot (and purge the Raft log) after this many applied Raft entries.
    pub snapshot_every: u64,
    /// Raft entries kept below the last snapshot (for followers slightly behind).
    pub keep_after_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_ms: (400, 800),
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
        }
    }
}

/// Everything a member's ledger node needs.
pub struct NodeConfig {
    /// This member's Raft id.
    pub id: NodeId,
    /// Its signing key (entries and checkpoints); its name is the member name.
    pub key: NodeKey,
    /// Its TLS material.
    pub tls: NodeTls,
    /// Data directory (sled).
    pub data_dir: PathBuf,
    /// The ledger's origin.
    pub origin: String,
    /// The genesis committee (signing keys, threshold).
    pub genesis: CommitteeConfig,
    /// Every member's Raft id, address and certificate digest (this one included).
    pub members: BTreeMap<NodeId, CommitteeNode>,
    /// Raft tuning.
    pub raft: RaftTuning,
    /// How often to cosign the log when it has grown (None: never).
    pub cosign_every: Option<Duration>,
    /// Storage backend.
    pub backend: Backend,
    /// Keep the ledger state's per-query records in a scratch file beyond a bound
    /// ([`STATE_SPILL_FILE`], see [`crate::book`]) instead of all in memory: memory stays
    /// bounded, at a cost in throughput (docs/performance.md).
    pub state_spill: bool,
    /// Links cut on purpose (scenario tests); empty in production.
    pub faults: super::network::LinkFaults,
    /// The application rules of the state machine ([`crate::rules`]; `None`: the bare
    /// ledger's, which refuse every release). A committee node passes the federation's.
    pub rules: Option<crate::rules::RulesFactory>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("id", &self.id)
            .field("name", &self.key.name())
            .field("data_dir", &self.data_dir)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

struct Inner {
    id: NodeId,
    key: NodeKey,
    origin: String,
    raft: Raft<TypeConfig>,
    sm: StateMachine<AnyStore>,
    network: Network,
    members: BTreeMap<NodeId, CommitteeNode>,
    own_seq: Mutex<u64>,
    local_addr: SocketAddr,
    data_dir: PathBuf,
}

/// A running ledger node.
pub struct LedgerNode {
    inner: Arc<Inner>,
    stop_server: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

struct Handler(std::sync::Weak<Inner>);

#[tonic::async_trait]
impl ProposalHandler for Handler {
    async fn propose_local(&self, entry: Vec<u8>) -> pb::ProposeReply {
        let Some(inner) = self.0.upgrade() else {
            return pb::ProposeReply {
                error: "node is shutting down".into(),
                ..Default::default()
            };
        };
        let written =
            tokio::time::timeout(PROPOSE_TIMEOUT, inner.raft.client_write(Proposal(entry))).await;
        let Ok(written) = written else {
            return pb::ProposeReply {
                error: not_committed(),
                ..Default::default()
            };
        };
        match written {
            Ok(resp) => pb::ProposeReply {
                raft_index: resp.log_id.index,
                accepted: resp.data.sequence.is_some(),
                sequence: resp.data.sequence.unwrap_or(0),
                rejection: resp.data.rejection.unwrap_or_default(),
                ..Default::default()
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => pb::ProposeReply {
                leader_hint: f.leader_id.unwrap_or(0),
                error: "not the leader".into(),
                ..Default::default()
            },
            Err(e) => pb::ProposeReply {
                error: e.to_string(),
                ..Default::default()
            },
        }
    }

    fn fetch(&self, req: &pb::FetchRequest) -> Result<pb::FetchReply, tonic::Status> {
        let inner = self
            .0
            .upgrade()
            .ok_or_else(|| tonic::Status::unavailable("node is shutting down"))?;
        fetch_from(&inner, req)
    }
}

fn fetch_from(inner: &Inner, req: &pb::FetchRequest) -> Result<pb::FetchReply, tonic::Status> {
    let internal = |e: String| tonic::Status::internal(e);
    let l = inner.sm.read().map_err(|e| internal(e.to_string()))?;
    let tree = l.log().tree();
    if req.proof_size > tree.size() {
        return Err(tonic::Status::failed_precondition(format!(
            "this member has {} entries, not {}",
            tree.size(),
            req.proof_size
        )));
    }
    let mut entries = Vec::new();
    for i in req.from..req.to {
        entries.push(l.log().get(i).map_err(|e| internal(e.to_string()))?);
    }
    let consistency_proof = if req.to == req.proof_size || req.to == 0 {
        Vec::new()
    } else {
        tree.consistency_proof(req.to, req.proof_size)
            .map_err(|e| internal(e.to_string()))?
            .iter()
            .map(|h| h.to_vec())
            .collect()
    };
    Ok(pb::FetchReply {
        entries,
        consistency_proof,
    })
}

impl LedgerNode {
    /// Opens storage, starts Raft and serves the committee endpoint on `listener`.
    pub async fn start(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, Error> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Io(e.to_string()))?;
        let (mut store, raft_log) = config.backend.open(&config.data_dir)?;
        // The state machine's writes ride on the Raft log's fsyncs (see `RedbStore::set_lazy`).
        store.set_lazy(true);
        let raft_log = LogStore::new(raft_log);
        let sm = StateMachine::open_with_spill(
            store,
            &config.origin,
            config.genesis.clone(),
            config
                .state_spill
                .then(|| config.data_dir.join(STATE_SPILL_FILE))
                .as_deref(),
            config.rules.as_ref(),
        )
        .map_err(|e| Error::Storage(e.to_string()))?;
        let raft_config = Config {
            cluster_name: config.origin.clone(),
            heartbeat_interval: config.raft.heartbeat_ms,
            election_timeout_min: config.raft.election_ms.0,
            election_timeout_max: config.raft.election_ms.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.raft.snapshot_every),
            max_in_snapshot_log_to_keep: config.raft.keep_after_snapshot,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
        let network = Network::with_faults(&config.tls, config.key.name(), config.faults.clone());
        sm.set_fetcher(Arc::new(network.clone()))
            .map_err(|e| Error::Storage(e.to_string()))?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            network.clone(),
            raft_log,
            sm.clone(),
        )
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;

        let own = AuthorId::Node(config.key.name().to_owned());
        let next = sm
            .read()
            .map_err(|e| Error::Storage(e.to_string()))?
            .state()
            .next_seq(&own);
        let inner = Arc::new(Inner {
            id: config.id,
            key: config.key,
            origin: config.origin,
            raft: raft.clone(),
            sm,
            network,
            members: config.members.clone(),
            own_seq: Mutex::new(next),
            local_addr,
            data_dir: config.data_dir.clone(),
        });

        let server = RaftServer::new(
            raft,
            config.members,
            Arc::new(Handler(Arc::downgrade(&inner))),
        );
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &config.tls.cert_pem,
                &config.tls.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&config.tls.ca_pem));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let router = Server::builder()
            .tls_config(tls)
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .add_service(
                RaftServiceServer::new(server)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            );
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server_task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        let mut node = LedgerNode {
            inner,
            stop_server: Some(stop_tx),
            tasks: vec![server_task],
        };
        if let Some(every) = config.cosign_every {
            node.tasks.push(node.spawn_cosigner(every));
        }
        node.tasks
            .push(node.spawn_reconfigurer(Duration::from_millis(
                config.raft.heartbeat_ms.saturating_mul(4).max(100),
            )));
        Ok(node)
    }

    /// Binds `addr` and starts (see [`Self::start`]).
    pub async fn start_on(config: NodeConfig, addr: SocketAddr) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Io(format!("binding {addr}: {e}")))?;
        Self::start(config, listener).await
    }

    /// Makes the whole configured committee the first Raft membership (call on one member,
    /// once, on a fresh cluster).
    pub async fn initialize(&self) -> Result<(), Error> {
        let members: BTreeMap<NodeId, CommitteeNode> = self.inner.members.clone();
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| Error::Raft(e.to_string()))
    }

    /// A cheap handle for proposing from other tasks.
    pub fn clone_handle(&self) -> NodeHandle {
        NodeHandle(self.inner.clone())
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address it serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The Raft handle (metrics, membership changes).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// The current leader, as this node knows it.
    pub async fn leader(&self) -> Option<NodeId> {
        self.inner.raft.current_leader().await
    }

    /// Read access to the applied ledger.
    pub fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Ledger<AnyStore>>, Error> {
        self.inner
            .sm
            .read()
            .map_err(|e| Error::Storage(e.to_string()))
    }

    /// A receiver of the applied log size, which changes once new entries are applied and
    /// durable: wait on it (`changed()`) instead of polling [`Self::entries_from`].
    pub fn applied_size(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.sm.applied_size()
    }

    /// Size and root of the applied log.
    pub fn head(&self) -> Result<(u64, crate::merkle::Hash), Error> {
        let l = self.read()?;
        Ok((l.log().tree().size(), l.log().root()))
    }

    /// Bytes on disk of this node's database.
    pub fn disk_bytes(&self) -> Result<u64, Error> {
        dir_bytes(&self.inner.data_dir).map_err(|e| Error::Io(e.to_string()))
    }

    /// Waits until this node's view is linearizable (it is the leader and a quorum confirmed it
    /// after everything committed so far was applied): use before a budget check.
    pub async fn linearizable(&self) -> Result<(), Error> {
        self.inner
            .raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| Error::Raft(e.to_string()))
    }

    /// Proposes a signed entry: locally when this node leads, else forwarded to the leader.
    /// Returns once the entry is committed and applied (accepted or rejected).
    pub async fn propose(&self, entry: Vec<u8>) -> Result<Receipt, Error> {
        propose(&self.inner, entry).await
    }

    /// Signs `kind` as this member with its next sequence number and proposes it.
    pub async fn propose_own(&self, kind: Kind) -> Result<Receipt, Error> {
        propose_own(&self.inner, kind).await
    }

    /// Cosigns the current log head if this member has not cosigned that size yet.
    pub async fn cosign_now(&self) -> Result<Option<Receipt>, Error> {
        cosign(&self.inner).await
    }

    /// The ledger as one file: genesis committee, every applied entry, and every checkpoint
    /// cosigned by at least `t` members of the genesis committee.
    pub fn export(&self) -> Result<crate::export::LedgerExport, Error> {
        self.clone_handle().export()
    }

    /// The latest checkpoint with at least `t` cosignatures.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, Error> {
        Ok(self.read()?.state().latest_checkpoint())
    }

    /// Anchors cosigned checkpoints to Fabric while this node is the Raft leader: every
    /// `every`, the newest checkpoint with `t` cosignatures is anchored if it is newer than the
    /// last (see [`crate::fabric::Anchorer::run`]). Stops with the node.
    pub fn spawn_anchoring(&mut self, anchorer: crate::fabric::Anchorer, every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        let for_proofs = weak.clone();
        let proof = move |old: u64, new: u64| {
            let inner = for_proofs.upgrade()?;
            let sm = inner.sm.read().ok()?;
            sm.log().tree().consistency_proof(old, new).ok()
        };
        let for_committee = weak.clone();
        let anchorer = anchorer.with_committee(move || {
            let inner = for_committee.upgrade()?;
            let sm = inner.sm.read().ok()?;
            let c = sm.state().committee();
            Some((c.members.clone(), c.threshold))
        });
        let latest = move || {
            let inner = weak.upgrade()?;
            let leader = inner.raft.metrics().borrow().current_leader;
            if leader != Some(inner.id) {
                return None;
            }
            let sm = inner.sm.read().ok()?;
            sm.state().latest_checkpoint()
        };
        self.tasks
            .push(tokio::spawn(anchorer.run(every, latest, Box::new(proof))));
    }

    /// While leader, keeps the Raft membership equal to the applied committee's endpoints: a
    /// `ConfigChange` entry, once applied, adds new members as learners (waiting until they have
    /// caught up), then replaces the voters. Committees without endpoints are left alone.
    fn spawn_reconfigurer(&self, every: Duration) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = reconfigure(&inner).await {
                    tracing::warn!(error = %e, "membership change deferred");
                }
            }
        })
    }

    fn spawn_cosigner(&self, every: Duration) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = cosign(&inner).await {
                    tracing::debug!(error = %e, "cosigning deferred");
                }
            }
        })
    }

    /// Stops Raft and the server and closes storage.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        let r = self.inner.raft.shutdown().await;
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        r.map_err(|e| Error::Raft(e.to_string()))
    }
}

/// A handle to a running node for other tasks (it does not keep the node running: after
/// [`LedgerNode::shutdown`] its proposals fail).
#[derive(Clone)]
pub struct NodeHandle(Arc<Inner>);

impl NodeHandle {
    /// See [`LedgerNode::propose`].
    pub async fn propose(&self, entry: Vec<u8>) -> Result<Receipt, Error> {
        propose(&self.0, entry).await
    }

    /// See [`LedgerNode::propose_own`].
    pub async fn propose_own(&self, kind: Kind) -> Result<Receipt, Error> {
        propose_own(&self.0, kind).await
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        self.0.key.name()
    }

    /// The ledger's origin.
    pub fn origin(&self) -> &str {
        &self.0.origin
    }

    /// Read access to the applied ledger (state, log, tree).
    pub fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Ledger<AnyStore>>, Error> {
        self.0.sm.read().map_err(|e| Error::Storage(e.to_string()))
    }

    /// Size and root of the applied log.
    pub fn head(&self) -> Result<(u64, crate::merkle::Hash), Error> {
        let l = self.read()?;
        Ok((l.log().tree().size(), l.log().root()))
    }

    /// See [`LedgerNode::applied_size`].
    pub fn applied_size(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.sm.applied_size()
    }

    /// The Raft leader this member knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.0.raft.metrics().borrow().current_leader
    }

    /// When this member leads: the last log index replicated to each member (by Raft id).
    pub fn replication(&self) -> Option<BTreeMap<NodeId, Option<u64>>> {
        let m = self.0.raft.metrics();
        let m = m.borrow();
        m.replication.as_ref().map(|r| {
            r.iter()
                .map(|(id, log)| (*id, log.as_ref().map(|l| l.index)))
                .collect()
        })
    }

    /// See [`LedgerNode::linearizable`].
    pub async fn linearizable(&self) -> Result<(), Error> {
        self.0
            .raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| Error::Raft(e.to_string()))
    }

    /// Signs an API session token's claims as this member (domain-separated from entries and
    /// checkpoints; see [`crate::checkpoint::verify_api_token`]).
    pub fn sign_api_token(&self, claims: &[u8]) -> [u8; 64] {
        self.0.key.sign_api_token(claims)
    }

    /// See [`LedgerNode::export`].
    pub fn export(&self) -> Result<crate::export::LedgerExport, Error> {
        let l = self.read()?;
        let mut entries = Vec::new();
        for i in 0..l.log().tree().size() {
            entries.push(l.log().get(i)?);
        }
        let g = l.genesis();
        let checkpoints: Vec<SignedCheckpoint> = l
            .state()
            .checkpoint_sizes()
            .filter_map(|s| l.state().checkpoint(s))
            .filter(|c| c.valid_signers(&g.members).len() >= g.threshold)
            .collect();
        let mut export = crate::export::LedgerExport::new(
            &self.0.origin,
            g.threshold,
            &g.members,
            &entries,
            &checkpoints,
        );
        export.close_tolerance = g.close_tolerance;
        Ok(export)
    }

    /// Reports a checkpoint of this ledger seen elsewhere (an auditor's copy, a Fabric anchor,
    /// a gossiped note). If it conflicts with this node's log at its size, every committee
    /// member that validly signed it equivocated: each is named in a `Misbehaviour` entry
    /// carrying the note as evidence, which every member re-checks ([`crate::state`]).
    /// Returns the members named (empty when the note agrees with the log).
    pub async fn report_checkpoint(&self, note: &str) -> Result<Vec<String>, Error> {
        let other = SignedCheckpoint::from_note(note)
            .map_err(|e| Error::Config(format!("not a checkpoint note: {e}")))?;
        let (mine, members) = {
            let l = self.read()?;
            let size = other.checkpoint.size;
            if other.checkpoint.origin != l.state().origin() || size > l.log().tree().size() {
                return Err(Error::Config(format!(
                    "the note is for {:?} at size {size}, which this log cannot compare",
                    other.checkpoint.origin
                )));
            }
            if size == 0 {
                return Ok(Vec::new());
            }
            let root = l
                .log()
                .tree()
                .root_at(size)
                .map_err(|e| Error::Storage(e.to_string()))?;
            (root, l.state().committee().members.clone())
        };
        if other.checkpoint.root == mine {
            return Ok(Vec::new());
        }
        let culprits: Vec<String> = other.valid_signers(&members).into_iter().collect();
        for c in &culprits {
            let kind = Kind::Misbehaviour(medtech_protos::ledger::v1::Misbehaviour {
                culprit: c.clone(),
                query_id: String::new(),
                reason: format!(
                    "signed a checkpoint of size {} whose root is not the log's (equivocation)",
                    other.checkpoint.size
                ),
                evidence: note.as_bytes().to_vec(),
            });
            let r = self.propose_own(kind).await?;
            if let Some(why) = r.rejection {
                return Err(Error::Unavailable(format!(
                    "evidence against {c} refused: {why}"
                )));
            }
        }
        Ok(culprits)
    }

    /// Applied entries (signed bytes) from log index `from`, at most `max` of them, in log
    /// order: how the application follows the ledger.
    pub fn entries_from(&self, from: u64, max: usize) -> Result<Vec<Vec<u8>>, Error> {
        let l = self.read()?;
        let size = l.log().tree().size();
        (from..size.min(from.saturating_add(max as u64)))
            .map(|i| l.log().get(i).map_err(|e| Error::Storage(e.to_string())))
            .collect()
    }
}

/// One step of [`LedgerNode::spawn_reconfigurer`].
async fn reconfigure(inner: &Inner) -> Result<(), Error> {
    let (leader, voters, known) = {
        let m = inner.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        (
            m.current_leader,
            membership.voter_ids().collect::<BTreeSet<_>>(),
            membership
                .nodes()
                .map(|(id, _)| *id)
                .collect::<BTreeSet<_>>(),
        )
    };
    if leader != Some(inner.id) {
        return Ok(());
    }
    let target: BTreeMap<NodeId, CommitteeNode> = {
        let sm = inner.sm.read().map_err(|e| Error::Storage(e.to_string()))?;
        sm.state()
            .committee()
            .voters()
            .into_iter()
            .map(|(id, (name, e))| {
                (
                    id,
                    CommitteeNode {
                        name: name.to_owned(),
                        addr: e.addr.clone(),
                        cert_sha256: e.cert_sha256.clone(),
                    },
                )
            })
            .collect()
    };
    let target_ids: BTreeSet<NodeId> = target.keys().copied().collect();
    if target.is_empty() || target_ids == voters {
        return Ok(());
    }
    for (id, node) in &target {
        if !known.contains(id) {
            tracing::info!(member = %node, "adding member as learner");
            tokio::time::timeout(
                Duration::from_secs(60),
                inner.raft.add_learner(*id, node.clone(), true),
            )
            .await
            .map_err(|_| Error::Unavailable(format!("member {node} did not catch up")))?
            .map_err(|e| Error::Raft(e.to_string()))?;
        }
    }
    inner
        .raft
        .change_membership(target_ids.clone(), false)
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    tracing::info!(voters = ?target_ids, "Raft membership now matches the committee");
    Ok(())
}

async fn propose(inner: &Inner, entry: Vec<u8>) -> Result<Receipt, Error> {
    let mut last_err = String::from("no leader");
    for attempt in 0..20u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(6)))).await;
        }
        let written = tokio::time::timeout(
            PROPOSE_TIMEOUT,
            inner.raft.client_write(Proposal(entry.clone())),
        )
        .await;
        let Ok(written) = written else {
            // A leader cut off from its quorum keeps the proposal pending: give up on it
            // (openraft answers nothing until a newer leader truncates it, which may be never).
            return Err(Error::Unavailable(not_committed()));
        };
        match written {
            Ok(resp) => return Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let Some(node) = f.leader_node else {
                    last_err = "no leader elected".into();
                    continue;
                };
                match forward(inner, &node, entry.clone()).await {
                    Ok(r) => return Ok(r),
                    Err(e) => last_err = e,
                }
            }
            Err(e) => return Err(Error::Raft(e.to_string())),
        }
    }
    Err(Error::Unavailable(last_err))
}

/// How long this node waits for a proposal it leads to commit. A leader cut off from its
/// quorum holds proposals until a newer leader's log replaces them, which may never be
/// reported to it; the caller gets [`Error::Unavailable`] instead of waiting forever. The
/// proposal may still commit later: a retry of it is refused as a repeated author sequence,
/// and the API's idempotency keys make a retried query charge once.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

fn not_committed() -> String {
    format!(
        "not committed within {} s (this node may be cut off from the committee's majority); \
         it may still commit: retry with the same idempotency key",
        PROPOSE_TIMEOUT.as_secs()
    )
}

/// How long a forwarded proposal may take before it is tried again: the channel to the
/// leader is kept between proposals, so one that went silent must not hold the proposer. A
/// retry of a proposal that did commit is refused as a repeated author sequence and changes
/// nothing.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

async fn forward(inner: &Inner, leader: &CommitteeNode, entry: Vec<u8>) -> Result<Receipt, String> {
    let ch = inner.network.channel(leader)?;
    let mut client = RaftServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let reply = tokio::time::timeout(
        FORWARD_TIMEOUT,
        client.propose(pb::ProposeRequest { entry }),
    )
    .await
    .map_err(|_| format!("forwarding to {leader}: no answer in {FORWARD_TIMEOUT:?}"))?
    .map_err(|s| format!("forwarding to {leader}: {s}"))?
    .into_inner();
    if !reply.error.is_empty() {
        return Err(format!("leader {leader}: {}", reply.error));
    }
    Ok(if reply.accepted {
        Receipt {
            sequence: Some(reply.sequence),
            rejection: None,
        }
    } else {
        Receipt {
            sequence: None,
            rejection: Some(reply.rejection),
        }
    })
}

async fn propose_own(inner: &Inner, kind: Kind) -> Result<Receipt, Error> {
    let mut seq = inner.own_seq.lock().await;
    let author = AuthorId::Node(inner.key.name().to_owned());
    let applied_next = inner
        .sm
        .read()
        .map_err(|e| Error::Storage(e.to_string()))?
        .state()
        .next_seq(&author);
    let this = (*seq).max(applied_next);
    let bytes = sign_entry(&inner.key, &inner.origin, this, now_ms(), kind);
    let r = propose(inner, bytes).await;
    *seq = match &r {
        Ok(rc) if rc.sequence.is_some() => this + 1,
        _ => inner
            .sm
            .read()
            .map_err(|e| Error::Storage(e.to_string()))?
            .state()
            .next_seq(&author),
    };
    r
}

async fn cosign(inner: &Inner) -> Result<Option<Receipt>, Error> {
    let (size, root, done) = {
        let l = inner.sm.read().map_err(|e| Error::Storage(e.to_string()))?;
        let size = l.log().tree().size();
        let done: BTreeSet<u64> = l
            .state()
            .checkpoint_sizes()
            .filter(|s| {
                l.state()
                    .checkpoint(*s)
                    .is_some_and(|c| c.signatures.iter().any(|x| x.name == inner.key.name()))
            })
            .collect();
        let last_mine = done.iter().next_back().copied().unwrap_or(0);
        // Join the largest size others are already cosigning, so the committee converges on
        // one checkpoint instead of each member signing the size it happens to see.
        if let Some(join) = l
            .state()
            .checkpoint_sizes()
            .filter(|s| *s > last_mine && !done.contains(s))
            .max()
        {
            let root = l
                .log()
                .tree()
                .root_at(join)
                .map_err(|e| Error::Storage(e.to_string()))?;
            (join, root, BTreeSet::new())
        } else {
            // Skip when the only entries since our last cosignature are cosignatures.
            let mut grown = false;
            for i in last_mine..size {
                let b = l.log().get(i)?;
                let is_cosig = crate::entry::ParsedEntry::decode(&b)
                    .map(|e| matches!(e.kind(), Some(Kind::Cosignature(_))))
                    .unwrap_or(false);
                if !is_cosig {
                    grown = true;
                    break;
                }
            }
            if !grown || size == 0 {
                return Ok(None);
            }
            (size, l.log().root(), done)
        }
    };
    if done.contains(&size) {
        return Ok(None);
    }
    sign_and_post(inner, size, root).await.map(Some)
}

async fn sign_and_post(
    inner: &Inner,
    size: u64,
    root: crate::merkle::Hash,
) -> Result<Receipt, Error> {
    let cp = Checkpoint {
        origin: inner.origin.clone(),
        size,
        root,
    };
    let line = inner.key.sign_checkpoint(&cp);
    let kind = Kind::Cosignature(pb::Cosignature {
        size,
        root: root.to_vec(),
        signature: line.signature.to_vec(),
    });
    propose_own(inner, kind).await
}

/// Total size of the files under `dir`.
pub fn dir_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let md = e.metadata()?;
        total += if md.is_dir() {
            dir_bytes(&e.path())?
        } else {
            md.len()
        };
    }
    Ok(total)
}
