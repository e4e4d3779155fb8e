//! The replicated state machine: committed proposals in, Merkle leaves out.
//!
//! For each committed proposal, [`LedgerState::check`] decides deterministically whether it is
//! applied; an accepted entry is staged into the [`DurableLog`] (its sequence number is its
//! Merkle index), and at the end of the batch the staged entries and the applied Raft position
//! are written in one step (one redb transaction). In a node these writes are lazy — they
//! become durable with the next Raft log fsync — and a snapshot syncs before Raft may purge
//! the log it covers, so after a crash the state machine is a consistent earlier version and
//! Raft applies the rest again from its durable log. An entry suffix stored without its position
//! record (possible with sled's two trees) is dropped on open and applied again.
//!
//! A snapshot is a *reference*, not a copy: the applied Raft position and membership with the
//! Merkle log's size and root at that point (a few hundred bytes, built in O(1)). The entries are
//! the state and are already durable, so compaction needs nothing more. A member that installs a
//! snapshot fetches the entries it lacks from the other members in chunks
//! ([`EntryFetcher`]); each chunk comes with an RFC 6962 consistency proof from the chunk's end to
//! the snapshot's size, checked against the snapshot's root before the chunk is kept, and every
//! entry is re-checked under the ledger's rules, signatures included — so neither a leader nor
//! the member serving the entries can slip in what the log would have rejected. Memory stays
//! bounded by one chunk, and a member only receives what it is missing.

use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use medtech_protos::ledger::v1 as pb;

use super::network::{EntryFetcher, FETCH_CHUNK};
use super::{io_err, CommitteeNode, NodeId, Receipt, StorageError, TypeConfig};
use crate::book::{Spill, HOT_RECORDS};
use crate::merkle::{verify_consistency, Hash};
use crate::rules::RulesFactory;
use crate::state::{CommitteeConfig, LedgerState, Verify};
use crate::store::{DurableLog, EntryStore};

const APPLIED: &str = "applied";

/// What is recorded with each applied batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, CommitteeNode>,
    size: u64,
    rejected: u64,
}

/// Snapshot contents (postcard): where the log stood.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    version: u32,
    meta: AppliedMeta,
    root: Hash,
}

/// The snapshot format this build writes and reads.
const SNAPSHOT_VERSION: u32 = 2;

/// The ledger as this node has applied it.
pub struct Ledger<S: EntryStore> {
    log: DurableLog<S>,
    state: LedgerState,
    applied: AppliedMeta,
    genesis: CommitteeConfig,
    snapshot: Option<(SnapshotMeta<NodeId, CommitteeNode>, Vec<u8>)>,
    fetcher: Option<Arc<dyn EntryFetcher>>,
}

impl<S: EntryStore> Ledger<S> {
    /// The Merkle log with its entries.
    pub fn log(&self) -> &DurableLog<S> {
        &self.log
    }

    /// The derived state.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// The genesis committee.
    pub fn genesis(&self) -> &CommitteeConfig {
        &self.genesis
    }

    /// The last applied Raft log id.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.applied.last_applied
    }
}

/// The state machine handle given to openraft (cheap to clone; readers share it).
pub struct StateMachine<S: EntryStore> {
    inner: Arc<RwLock<Ledger<S>>>,
    /// The applied log size, published after every durable apply (followers of the ledger wait
    /// on it instead of polling).
    applied: Arc<tokio::sync::watch::Sender<u64>>,
}

impl<S: EntryStore> Clone for StateMachine<S> {
    fn clone(&self) -> Self {
        StateMachine {
            inner: self.inner.clone(),
            applied: self.applied.clone(),
        }
    }
}

fn poisoned() -> StorageError {
    io_err(
        StorageIOError::read_state_machine,
        "state machine lock poisoned",
    )
}

impl<S: EntryStore + Send + Sync + 'static> StateMachine<S> {
    /// Opens over `store`: rebuilds the tree, drops an unrecorded suffix, replays the state
    /// (held in memory).
    pub fn open(store: S, origin: &str, genesis: CommitteeConfig) -> Result<Self, StorageError> {
        Self::open_with_spill(store, origin, genesis, None, None)
    }

    /// As [`Self::open`], the state's per-query records spilling to a scratch file at `spill`
    /// beyond [`crate::book::HOT_RECORDS`] each (a node's memory then stays bounded; the file is
    /// recreated at every open, see [`crate::book`]), under the application rules `rules`
    /// makes (`None`: [`crate::rules::RefuseReleases`]).
    pub fn open_with_spill(
        store: S,
        origin: &str,
        genesis: CommitteeConfig,
        spill: Option<&Path>,
        rules: Option<&RulesFactory>,
    ) -> Result<Self, StorageError> {
        let mut log = DurableLog::open(store).map_err(|e| io_err(StorageIOError::read, e))?;
        let applied: AppliedMeta = match log
            .store()
            .get_meta(APPLIED)
            .map_err(|e| io_err(StorageIOError::read, e))?
        {
            Some(b) => postcard::from_bytes(&b).map_err(|e| io_err(StorageIOError::read, e))?,
            None => AppliedMeta::default(),
        };
        let stored = log.tree().size();
        if stored > applied.size {
            log.truncate_unrecorded(applied.size)
                .map_err(|e| io_err(StorageIOError::write, e))?;
        } else if stored < applied.size {
            return Err(io_err(
                StorageIOError::read,
                format!(
                    "{} entries on disk but {} recorded as applied",
                    stored, applied.size
                ),
            ));
        }
        let mut state = match spill {
            None => LedgerState::new(origin, genesis.clone()),
            Some(path) => {
                let spill = Spill::create(path).map_err(|e| io_err(StorageIOError::write, e))?;
                LedgerState::with_spill(origin, genesis.clone(), spill, HOT_RECORDS)
            }
        }
        .map_err(|e| io_err(StorageIOError::read, e))?;
        if let Some(make) = rules {
            state.set_rules(make.make());
        }
        for i in 0..applied.size {
            let b = log.get(i).map_err(|e| io_err(StorageIOError::read, e))?;
            state
                .replay(&b, i)
                .map_err(|e| io_err(StorageIOError::read, format!("entry {i}: {e}")))?;
        }
        spill_ok(&state)?;
        state.set_rejected(applied.rejected);
        let (applied_tx, _) = tokio::sync::watch::channel(applied.size);
        Ok(StateMachine {
            applied: Arc::new(applied_tx),
            inner: Arc::new(RwLock::new(Ledger {
                log,
                state,
                applied,
                genesis,
                snapshot: None,
                fetcher: None,
            })),
        })
    }

    /// Sets where snapshot installs fetch missing entries.
    pub fn set_fetcher(&self, fetcher: Arc<dyn EntryFetcher>) -> Result<(), StorageError> {
        self.inner.write().map_err(|_| poisoned())?.fetcher = Some(fetcher);
        Ok(())
    }

    /// A receiver of the applied log size: it changes once entries are applied and durable.
    pub fn applied_size(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Read access to the applied ledger.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, Ledger<S>>, StorageError> {
        self.inner.read().map_err(|_| poisoned())
    }
}

/// Stops on a failure of the state's scratch file: a lookup that failed may have decided a
/// rejection, so nothing of this batch may be recorded (see [`crate::book`]).
fn spill_ok(state: &LedgerState) -> Result<(), StorageError> {
    match state.storage_fault() {
        None => Ok(()),
        Some(f) => Err(io_err(
            StorageIOError::write_state_machine,
            format!("state spill file: {f}"),
        )),
    }
}

fn meta_bytes(m: &AppliedMeta) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(m).map_err(|e| io_err(StorageIOError::write_state_machine, e))
}

impl<S: EntryStore + Send + Sync + 'static> RaftSnapshotBuilder<TypeConfig> for StateMachine<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let mut l = self.inner.write().map_err(|_| poisoned())?;
        // Raft purges its log up to this snapshot next: what the snapshot covers must be on disk.
        l.log
            .sync()
            .map_err(|e| io_err(StorageIOError::write_state_machine, e))?;
        let size = l.log.tree().size();
        let payload = SnapshotPayload {
            version: SNAPSHOT_VERSION,
            meta: l.applied.clone(),
            root: l.log.root(),
        };
        let data = postcard::to_stdvec(&payload)
            .map_err(|e| io_err(StorageIOError::write_state_machine, e))?;
        let id = match &l.applied.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, size),
            None => format!("0-0-{size}"),
        };
        let meta = SnapshotMeta {
            last_log_id: l.applied.last_applied,
            last_membership: l.applied.membership.clone(),
            snapshot_id: id,
        };
        l.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<S: EntryStore + Send + Sync + 'static> RaftStateMachine<TypeConfig> for StateMachine<S> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, CommitteeNode>,
        ),
        StorageError,
    > {
        let l = self.inner.read().map_err(|_| poisoned())?;
        Ok((l.applied.last_applied, l.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Receipt>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut l = self.inner.write().map_err(|_| poisoned())?;
        let l = &mut *l;
        let mut receipts = Vec::new();
        for entry in entries {
            l.applied.last_applied = Some(entry.log_id);
            let receipt = match entry.payload {
                EntryPayload::Blank => Receipt::default(),
                EntryPayload::Membership(m) => {
                    l.applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    Receipt::default()
                }
                EntryPayload::Normal(p) => {
                    match l.state.check(&p.0, l.log.tree(), Verify::Signatures) {
                        Ok(parsed) => {
                            let seq = l.log.stage(p.0);
                            l.state.apply(&parsed, seq);
                            Receipt {
                                sequence: Some(seq),
                                rejection: None,
                            }
                        }
                        Err(r) => {
                            l.state.note_rejection();
                            Receipt {
                                sequence: None,
                                rejection: Some(r.to_string()),
                            }
                        }
                    }
                }
            };
            receipts.push(receipt);
        }
        spill_ok(&l.state)?;
        l.applied.size = l.log.tree().size();
        l.applied.rejected = l.state.rejected();
        let meta = meta_bytes(&l.applied)?;
        l.log
            .commit_staged(&[(APPLIED, meta)])
            .map_err(|e| io_err(StorageIOError::write_state_machine, e))?;
        self.applied.send_replace(l.applied.size);
        Ok(receipts)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, CommitteeNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bad = |e: String| io_err(StorageIOError::read_state_machine, e);
        let data = snapshot.into_inner();
        let payload: SnapshotPayload = postcard::from_bytes(&data)
            .map_err(|e| bad(format!("snapshot does not decode: {e}")))?;
        if payload.version != SNAPSHOT_VERSION {
            return Err(bad(format!("snapshot version {}", payload.version)));
        }
        let target = payload.meta.size;
        let members: Vec<CommitteeNode> = meta
            .last_membership
            .membership()
            .nodes()
            .map(|(_, n)| n.clone())
            .collect();
        loop {
            // Without holding the lock across the network call: openraft runs no other state
            // machine operation while this one is pending.
            let (ours, fetcher) = {
                let l = self.inner.read().map_err(|_| poisoned())?;
                (l.log.tree().size(), l.fetcher.clone())
            };
            if ours >= target {
                break;
            }
            let fetcher = fetcher.ok_or_else(|| bad("no entry source to install from".into()))?;
            let to = (ours + FETCH_CHUNK).min(target);
            let reply = fetcher
                .fetch(
                    &members,
                    pb::FetchRequest {
                        from: ours,
                        to,
                        proof_size: target,
                    },
                )
                .await
                .map_err(bad)?;
            let mut l = self.inner.write().map_err(|_| poisoned())?;
            let l = &mut *l;
            for (k, e) in reply.entries.into_iter().enumerate() {
                match l.state.check(&e, l.log.tree(), Verify::Signatures) {
                    Ok(parsed) => {
                        let seq = l.log.stage(e);
                        l.state.apply(&parsed, seq);
                    }
                    // Fatal for this node: its in-memory state took part of the chunk; a
                    // restart reloads it from disk, where nothing of the chunk was written.
                    Err(r) => return Err(bad(format!("fetched entry {}: {r}", ours + k as u64))),
                }
            }
            spill_ok(&l.state)?;
            let proof: Vec<Hash> = reply
                .consistency_proof
                .iter()
                .map(|h| Hash::try_from(h.as_slice()))
                .collect::<Result<_, _>>()
                .map_err(|_| bad("consistency proof hash is not 32 bytes".into()))?;
            let root_here = l.log.root();
            let consistent = if to == target {
                root_here == payload.root
            } else {
                verify_consistency(to, target, &proof, &root_here, &payload.root).is_ok()
            };
            if !consistent {
                return Err(bad(format!(
                    "entries {ours}..{to} are not a prefix of the snapshot's log"
                )));
            }
            // Keep the old applied position: after a crash here the install starts again and
            // resumes from the entries already kept.
            l.applied.size = to;
            let m = meta_bytes(&l.applied)?;
            l.log
                .commit_staged(&[(APPLIED, m)])
                .map_err(|e| io_err(StorageIOError::write_state_machine, e))?;
        }
        let mut l = self.inner.write().map_err(|_| poisoned())?;
        let l = &mut *l;
        let size = l.log.tree().size();
        let root_at = l
            .log
            .tree()
            .root_at(target)
            .map_err(|e| bad(e.to_string()))?;
        if root_at != payload.root {
            return Err(bad(format!(
                "the applied log here ({size} entries) diverges from the snapshot at {target}"
            )));
        }
        let rejected = l.state.rejected().max(payload.meta.rejected);
        l.state.set_rejected(rejected);
        l.applied = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            size,
            rejected,
        };
        let m = meta_bytes(&l.applied)?;
        l.log
            .commit_staged(&[(APPLIED, m)])
            .map_err(|e| io_err(StorageIOError::write_state_machine, e))?;
        l.log
            .sync()
            .map_err(|e| io_err(StorageIOError::write_state_machine, e))?;
        l.snapshot = Some((meta.clone(), data));
        self.applied.send_replace(size);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let l = self.inner.read().map_err(|_| poisoned())?;
        Ok(l.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
