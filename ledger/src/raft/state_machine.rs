//! The replicated state machine: committed proposals in, Merkle leaves out.
//!
//! For each committed proposal, [`LedgerState::check`] decides deterministically whether it is
//! applied; an accepted entry is staged into the [`DurableLog`] (its sequence number is its
//! Merkle index), and at the end of the batch the staged entries and the applied Raft position
//! are written in one durable step. After a crash between an entry write and its position
//! record (impossible with one sled batch per tree and one flush, but checked anyway) the
//! unrecorded suffix is dropped on open and Raft applies it again.
//!
//! A snapshot is the applied entries themselves (they are the state; the rest is derived). A
//! node installing one re-checks every entry, signatures included, so a leader cannot slip in
//! through a snapshot what its followers' state machines would reject in the log.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{io_err, CommitteeNode, NodeId, Receipt, StorageError, TypeConfig};
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

/// Snapshot contents (postcard).
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    version: u32,
    meta: AppliedMeta,
    entries: Vec<Vec<u8>>,
}

/// The ledger as this node has applied it.
pub struct Ledger<S: EntryStore> {
    log: DurableLog<S>,
    state: LedgerState,
    applied: AppliedMeta,
    genesis: CommitteeConfig,
    snapshot: Option<(SnapshotMeta<NodeId, CommitteeNode>, Vec<u8>)>,
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
}

impl<S: EntryStore> Clone for StateMachine<S> {
    fn clone(&self) -> Self {
        StateMachine {
            inner: self.inner.clone(),
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
    /// Opens over `store`: rebuilds the tree, drops an unrecorded suffix, replays the state.
    pub fn open(store: S, origin: &str, genesis: CommitteeConfig) -> Result<Self, StorageError> {
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
        let mut state = LedgerState::new(origin, genesis.clone())
            .map_err(|e| io_err(StorageIOError::read, e))?;
        for i in 0..applied.size {
            let b = log.get(i).map_err(|e| io_err(StorageIOError::read, e))?;
            state
                .replay(&b, i)
                .map_err(|e| io_err(StorageIOError::read, format!("entry {i}: {e}")))?;
        }
        state.set_rejected(applied.rejected);
        Ok(StateMachine {
            inner: Arc::new(RwLock::new(Ledger {
                log,
                state,
                applied,
                genesis,
                snapshot: None,
            })),
        })
    }

    /// Read access to the applied ledger.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, Ledger<S>>, StorageError> {
        self.inner.read().map_err(|_| poisoned())
    }
}

fn meta_bytes(m: &AppliedMeta) -> Result<Vec<u8>, StorageError> {
    postcard::to_stdvec(m).map_err(|e| io_err(StorageIOError::write_state_machine, e))
}

impl<S: EntryStore + Send + Sync + 'static> RaftSnapshotBuilder<TypeConfig> for StateMachine<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = {
            let l = self.inner.read().map_err(|_| poisoned())?;
            let size = l.log.tree().size();
            let mut entries = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            for i in 0..size {
                entries.push(
                    l.log
                        .get(i)
                        .map_err(|e| io_err(StorageIOError::read_state_machine, e))?,
                );
            }
            let payload = SnapshotPayload {
                version: 1,
                meta: l.applied.clone(),
                entries,
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
            (meta, data)
        };
        let mut l = self.inner.write().map_err(|_| poisoned())?;
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
        l.applied.size = l.log.tree().size();
        l.applied.rejected = l.state.rejected();
        let meta = meta_bytes(&l.applied)?;
        l.log
            .commit_staged(&[(APPLIED, meta)])
            .map_err(|e| io_err(StorageIOError::write_state_machine, e))?;
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
        if payload.version != 1 {
            return Err(bad(format!("snapshot version {}", payload.version)));
        }
        let mut l = self.inner.write().map_err(|_| poisoned())?;
        let l = &mut *l;
        // Our applied entries must be a prefix of the snapshot's: Raft never un-applies.
        let ours = l.log.tree().size();
        if (payload.entries.len() as u64) < ours {
            return Err(bad(format!(
                "snapshot holds {} entries but {ours} are applied here",
                payload.entries.len()
            )));
        }
        for i in 0..ours {
            let mine = l.log.get(i).map_err(|e| bad(e.to_string()))?;
            if payload.entries.get(i as usize) != Some(&mine) {
                return Err(bad(format!(
                    "snapshot diverges from the applied log at {i}"
                )));
            }
        }
        // Re-check every new entry against the state as it grows.
        let mut rejected = l.state.rejected();
        for (i, e) in payload.entries.iter().enumerate().skip(ours as usize) {
            match l.state.check(e, l.log.tree(), Verify::Signatures) {
                Ok(parsed) => {
                    let seq = l.log.stage(e.clone());
                    l.state.apply(&parsed, seq);
                }
                Err(r) => {
                    return Err(bad(format!("snapshot entry {i} is not valid: {r}")));
                }
            }
        }
        rejected = rejected.max(payload.meta.rejected);
        l.state.set_rejected(rejected);
        l.applied = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            size: l.log.tree().size(),
            rejected,
        };
        let m = meta_bytes(&l.applied)?;
        l.log
            .commit_staged(&[(APPLIED, m)])
            .map_err(|e| io_err(StorageIOError::write_state_machine, e))?;
        l.snapshot = Some((meta.clone(), data));
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
