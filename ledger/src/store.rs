//! Durable storage of the ledger's entries, behind a small trait of our own so the backend can
//! change in one place (sled now; redb is the planned swap-in — openraft dropped its sled store
//! over memory and disk growth, which `medtech bench ledger` will measure).
//!
//! [`EntryStore`] is what replication needs underneath: append a batch durably (it returns only
//! after the batch is on disk), read by index, truncate a suffix (Raft conflict resolution), and a
//! few metadata values (the Raft vote, the applied index). [`DurableLog`] keeps the Merkle tree in
//! step with the stored entries and rebuilds it on open, so a restarted node has exactly the tree
//! of what it acknowledged.

use crate::merkle::{Hash, MerkleLog};

/// Storage failures.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (disk, corruption).
    #[error("storage backend: {0}")]
    Backend(String),
    /// The stored data is not what this build wrote (a gap, a bad key).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A request outside the stored range.
    #[error("index {index} is outside the {len} stored entries")]
    OutOfRange {
        /// Requested index or length.
        index: u64,
        /// Stored entries.
        len: u64,
    },
}

/// An append-only, durable sequence of entries with a few metadata values.
pub trait EntryStore {
    /// Number of stored entries.
    fn len(&self) -> u64;
    /// Whether the store is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends entries at the end; returns once they are durable.
    fn append(&mut self, entries: &[Vec<u8>]) -> Result<(), StoreError>;
    /// The entry at `index`.
    fn get(&self, index: u64) -> Result<Vec<u8>, StoreError>;
    /// Drops every entry at `len` and beyond (durably).
    fn truncate(&mut self, len: u64) -> Result<(), StoreError>;
    /// Stores a metadata value durably.
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Reads a metadata value.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Makes every earlier write durable (for stores in lazy mode; a no-op otherwise).
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Appends entries and sets metadata values in one durable step (one fsync where the
    /// backend allows). The default is [`Self::append`] then [`Self::put_meta`]; after a crash
    /// between the two, the entries are there without the metadata, which callers detect by
    /// storing the expected length in the metadata.
    fn append_with_meta(
        &mut self,
        entries: &[Vec<u8>],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError> {
        self.append(entries)?;
        for (k, v) in meta {
            self.put_meta(k, v)?;
        }
        Ok(())
    }
}

/// Storage under the Raft log: entries by Raft index, plus the vote and purge marks. Every
/// mutating call is durable when it returns, except [`RaftLogBackend::purge_with_mark`].
pub trait RaftLogBackend: Send + Sync + Clone + 'static {
    /// Stores `(index, bytes)` pairs (overwriting).
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError>;
    /// Entries with `from ≤ index < to`, in order.
    fn range(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The entry with the largest index.
    fn last(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Drops every entry with `index ≥ from`.
    fn truncate_from(&self, from: u64) -> Result<(), StoreError>;
    /// Drops every entry with `index ≤ upto`.
    fn purge_upto(&self, upto: u64) -> Result<(), StoreError>;
    /// Stores a metadata value.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Reads a metadata value.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores the purge mark `key = value`, then drops every entry with `index ≤ upto`.
    ///
    /// The one mutating call that need not be durable when it returns (openraft requires only
    /// that a purge leaves no hole): a backend may let it ride on the next durable write,
    /// provided that a crash keeps either both parts or neither, or the mark without the
    /// removal (entries below the mark are ignored). The default is the two durable calls.
    fn purge_with_mark(&self, key: &str, value: &[u8], upto: u64) -> Result<(), StoreError> {
        self.put_meta(key, value)?;
        self.purge_upto(upto)
    }
}

/// The Raft log in the node's sled database (trees `raft_log` and `raft_meta`).
#[derive(Clone)]
pub struct SledRaftLog {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl SledRaftLog {
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }
}

impl RaftLogBackend for SledRaftLog {
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (i, e) in entries {
            batch.insert(&i.to_be_bytes(), e.as_slice());
        }
        self.log.apply_batch(batch).map_err(backend)?;
        self.flush()
    }

    fn range(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.log
            .range(from.to_be_bytes()..to.to_be_bytes())
            .map(|r| r.map(|(_, v)| v.to_vec()).map_err(backend))
            .collect()
    }

    fn last(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.log.last().map_err(backend)?.map(|(_, v)| v.to_vec()))
    }

    fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        let keys: Vec<_> = self
            .log
            .range(from.to_be_bytes()..)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        // From the end, so a crash part-way leaves no hole.
        for k in keys.into_iter().rev() {
            self.log.remove(k).map_err(backend)?;
        }
        self.flush()
    }

    fn purge_upto(&self, upto: u64) -> Result<(), StoreError> {
        let keys: Vec<_> = self
            .log
            .range(..=upto.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(backend)?;
        self.flush()
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key.as_bytes(), value).map_err(backend)?;
        self.flush()
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(key.as_bytes())
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }
}

/// In-memory store, for tests and simulations.
#[derive(Debug, Default)]
pub struct MemStore {
    entries: Vec<Vec<u8>>,
    meta: std::collections::BTreeMap<String, Vec<u8>>,
}

impl EntryStore for MemStore {
    fn len(&self) -> u64 {
        self.entries.len() as u64
    }
    fn append(&mut self, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        self.entries.extend_from_slice(entries);
        Ok(())
    }
    fn get(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .cloned()
            .ok_or(StoreError::OutOfRange {
                index,
                len: self.len(),
            })
    }
    fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        if len > self.len() {
            return Err(StoreError::OutOfRange {
                index: len,
                len: self.len(),
            });
        }
        self.entries.truncate(len as usize);
        Ok(())
    }
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key).cloned())
    }
}

/// sled-backed store: entries keyed by big-endian index in one tree, metadata in another; every
/// mutating call ends with `flush` (fsync) before it returns.
pub struct SledStore {
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    len: u64,
}

/// Opens a sled database, waiting up to 2 s for a lock that this process is releasing.
///
/// sled 0.34 releases its file lock from a background flusher thread shortly after the last
/// handle is dropped, not in `Drop` itself (spacejam/sled#1289), so an in-process reopen (a
/// restarted member, a store reopened by a test) can briefly find the lock still held. Lock
/// conflicts are retried every 10 ms for up to 2 s before they are reported; every other error is
/// returned at once. Another process holding the lock for longer still gets the error.
pub fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            // sled 0.34 reports a held lock as `ErrorKind::Other` with the cause only in the
            // message ("could not acquire lock on …: WouldBlock"), so match the message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SledStore {
    /// Opens (or creates) a store in `dir`, checking that the stored indices are contiguous.
    pub fn open(dir: &std::path::Path) -> Result<Self, StoreError> {
        // sled's page cache defaults to 1 GiB; a committee node is sized far below that.
        let db = open_sled(
            &sled::Config::new()
                .path(dir)
                .cache_capacity(SLED_CACHE_BYTES),
        )
        .map_err(backend)?;
        let entries = db.open_tree("entries").map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        let len = match entries.last().map_err(backend)? {
            None => 0,
            Some((k, _)) => index_of(&k)? + 1,
        };
        if entries.len() as u64 != len {
            return Err(StoreError::Corrupt(format!(
                "{} entries stored but the last index is {}",
                entries.len(),
                len.saturating_sub(1)
            )));
        }
        Ok(SledStore {
            db,
            entries,
            meta,
            len,
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    /// The Raft log kept in the same database (one fsync covers both).
    pub fn raft_log(&self) -> Result<SledRaftLog, StoreError> {
        Ok(SledRaftLog {
            db: self.db.clone(),
            log: self.db.open_tree("raft_log").map_err(backend)?,
            meta: self.db.open_tree("raft_meta").map_err(backend)?,
        })
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }
}

/// sled page-cache budget per node.
pub const SLED_CACHE_BYTES: u64 = 64 << 20;

fn index_of(key: &[u8]) -> Result<u64, StoreError> {
    let k: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt("entry key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(k))
}

impl EntryStore for SledStore {
    fn len(&self) -> u64 {
        self.len
    }

    fn append(&mut self, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, e) in entries.iter().enumerate() {
            batch.insert(&(self.len + k as u64).to_be_bytes(), e.as_slice());
        }
        self.entries.apply_batch(batch).map_err(backend)?;
        self.flush()?;
        self.len += entries.len() as u64;
        Ok(())
    }

    fn get(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        if index >= self.len {
            return Err(StoreError::OutOfRange {
                index,
                len: self.len,
            });
        }
        self.entries
            .get(index.to_be_bytes())
            .map_err(backend)?
            .map(|v| v.to_vec())
            .ok_or_else(|| StoreError::Corrupt(format!("entry {index} is missing")))
    }

    fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        if len > self.len {
            return Err(StoreError::OutOfRange {
                index: len,
                len: self.len,
            });
        }
        // Remove from the end so a crash mid-way leaves a contiguous prefix.
        for i in (len..self.len).rev() {
            self.entries.remove(i.to_be_bytes()).map_err(backend)?;
        }
        self.flush()?;
        self.len = len;
        Ok(())
    }

    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key.as_bytes(), value).map_err(backend)?;
        self.flush()
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(key.as_bytes())
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn append_with_meta(
        &mut self,
        entries: &[Vec<u8>],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, e) in entries.iter().enumerate() {
            batch.insert(&(self.len + k as u64).to_be_bytes(), e.as_slice());
        }
        self.entries.apply_batch(batch).map_err(backend)?;
        let mut batch = sled::Batch::default();
        for (k, v) in meta {
            batch.insert(k.as_bytes(), v.as_slice());
        }
        self.meta.apply_batch(batch).map_err(backend)?;
        self.flush()?;
        self.len += entries.len() as u64;
        Ok(())
    }
}

/// Stored entries with their Merkle tree kept in step.
///
/// This is the log of *applied* entries, which only ever grows; [`EntryStore::truncate`] exists
/// for recovery. Entries can be *staged* (in the tree, not yet on disk) so a batch is written
/// with one fsync; readers of the tree see staged entries, and [`Self::commit_staged`] must
/// follow before anything is acknowledged.
pub struct DurableLog<S: EntryStore> {
    store: S,
    tree: MerkleLog,
    staged: Vec<Vec<u8>>,
}

impl<S: EntryStore> DurableLog<S> {
    /// Opens over a store, rebuilding the tree from every stored entry.
    pub fn open(store: S) -> Result<Self, StoreError> {
        let mut tree = MerkleLog::new();
        for i in 0..store.len() {
            tree.append(&store.get(i)?);
        }
        Ok(DurableLog {
            store,
            tree,
            staged: Vec::new(),
        })
    }

    /// Adds an entry to the tree and the pending batch; returns its sequence number.
    pub fn stage(&mut self, entry: Vec<u8>) -> u64 {
        let seq = self.tree.append(&entry);
        self.staged.push(entry);
        seq
    }

    /// Writes the staged entries with `meta` in one durable step.
    pub fn commit_staged(&mut self, meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        self.store.append_with_meta(&self.staged, meta)?;
        self.staged.clear();
        Ok(())
    }

    /// Appends durably, then extends the tree; returns the new size.
    pub fn append(&mut self, entries: &[Vec<u8>]) -> Result<u64, StoreError> {
        self.commit_staged(&[])?;
        self.store.append(entries)?;
        for e in entries {
            self.tree.append(e);
        }
        Ok(self.tree.size())
    }

    /// The tree.
    pub fn tree(&self) -> &MerkleLog {
        &self.tree
    }

    /// The root.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Appends with metadata in one durable step, then extends the tree; returns the new size.
    pub fn append_with_meta(
        &mut self,
        entries: &[Vec<u8>],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<u64, StoreError> {
        self.commit_staged(&[])?;
        self.store.append_with_meta(entries, meta)?;
        for e in entries {
            self.tree.append(e);
        }
        Ok(self.tree.size())
    }

    /// Drops every entry at `len` and beyond: only for recovery of entries stored by an apply
    /// whose completion was never recorded (they will be applied again).
    pub fn truncate_unrecorded(&mut self, len: u64) -> Result<(), StoreError> {
        self.staged.clear();
        self.store.truncate(len)?;
        let mut tree = MerkleLog::new();
        for i in 0..len {
            tree.append(&self.store.get(i)?);
        }
        self.tree = tree;
        Ok(())
    }

    /// Makes every earlier write durable (see [`EntryStore::sync`]).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.store.sync()
    }

    /// The entry at `index`.
    pub fn get(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        let stored = self.store.len();
        if index >= stored {
            if let Some(e) = usize::try_from(index - stored)
                .ok()
                .and_then(|i| self.staged.get(i))
            {
                return Ok(e.clone());
            }
        }
        self.store.get(index)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopen_waits_for_a_lock_that_is_being_released() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path());
        let held = config.open().unwrap();
        // While the first handle is open, a plain open is refused.
        assert!(config.open().is_err());
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
        });
        let db = open_sled(&config).expect("the lock is released within the wait");
        releaser.join().unwrap();
        drop(db);
    }

    #[test]
    fn a_lock_held_for_good_is_still_reported() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path());
        let _held = config.open().unwrap();
        let started = std::time::Instant::now();
        let err = open_sled(&config).expect_err("the lock is never released");
        assert!(err.to_string().contains("could not acquire lock"), "{err}");
        assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    }
}
