//! redb backend for the ledger's storage traits: one database file per node with four tables
//! (`entries`, `meta`, `raft_log`, `raft_meta`). Every mutating call is one write transaction
//! committed with `Durability::Immediate` (fsync before it returns), so
//! [`EntryStore::append_with_meta`] is atomic: entries and the applied position land together
//! or not at all.
//!
//! Chosen over sled for the node because sled's memory and disk grow well past issue 5's bounds
//! (docs/performance.md); sled stays available behind the same traits.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::store::{EntryStore, RaftLogBackend, StoreError};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// redb page-cache budget per node.
pub const REDB_CACHE_BYTES: usize = 32 << 20;

fn rb(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

/// The applied-entry store in redb.
pub struct RedbStore {
    db: Arc<Database>,
    len: u64,
    lazy: bool,
}

/// The Raft log in the same redb database.
#[derive(Clone)]
pub struct RedbRaftLog {
    db: Arc<Database>,
}

impl RedbStore {
    /// Opens (or creates) `dir/ledger.redb`, checking that stored indices are contiguous.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(e.to_string()))?;
        let db = Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(dir.join("ledger.redb"))
            .map_err(rb)?;
        let w = db.begin_write().map_err(rb)?;
        {
            w.open_table(ENTRIES).map_err(rb)?;
            w.open_table(META).map_err(rb)?;
            w.open_table(RAFT_LOG).map_err(rb)?;
            w.open_table(RAFT_META).map_err(rb)?;
        }
        w.commit().map_err(rb)?;
        let (count, len) = {
            let r = db.begin_read().map_err(rb)?;
            let t = r.open_table(ENTRIES).map_err(rb)?;
            let count = t.len().map_err(rb)?;
            let len = match t.last().map_err(rb)? {
                None => 0,
                Some((k, _)) => k.value() + 1,
            };
            (count, len)
        };
        if count != len {
            return Err(StoreError::Corrupt(format!(
                "{count} entries stored but the last index is {}",
                len.saturating_sub(1)
            )));
        }
        Ok(RedbStore {
            db: Arc::new(db),
            len,
            lazy: false,
        })
    }

    /// Lazy mode: entry appends commit without an fsync of their own; they become durable with
    /// the next durable commit on the database — in a node, the next Raft log append, which is
    /// always durable — or an explicit [`EntryStore::sync`]. Safe for the state machine because
    /// everything it applies is still in the durable Raft log until a snapshot (which syncs
    /// first) lets Raft purge it; after a crash the state machine is a consistent earlier
    /// version (redb transactions are atomic) and Raft applies the rest again.
    pub fn set_lazy(&mut self, lazy: bool) {
        self.lazy = lazy;
    }

    /// The Raft log kept in the same database.
    pub fn raft_log(&self) -> RedbRaftLog {
        RedbRaftLog {
            db: self.db.clone(),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(rb)?;
        f(&mut w)?;
        w.commit().map_err(rb)
    }
}

fn put_entries(
    w: &redb::WriteTransaction,
    start: u64,
    entries: &[Vec<u8>],
) -> Result<(), StoreError> {
    let mut t = w.open_table(ENTRIES).map_err(rb)?;
    for (k, e) in entries.iter().enumerate() {
        t.insert(start + k as u64, e.as_slice()).map_err(rb)?;
    }
    Ok(())
}

fn get_meta_in(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let r = db.begin_read().map_err(rb)?;
    let t = r.open_table(table).map_err(rb)?;
    Ok(t.get(key).map_err(rb)?.map(|v| v.value().to_vec()))
}

impl EntryStore for RedbStore {
    fn len(&self) -> u64 {
        self.len
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.write(|_| Ok(()))
    }

    fn append(&mut self, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        self.append_with_meta(entries, &[])
    }

    fn get(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        if index >= self.len {
            return Err(StoreError::OutOfRange {
                index,
                len: self.len,
            });
        }
        let r = self.db.begin_read().map_err(rb)?;
        let t = r.open_table(ENTRIES).map_err(rb)?;
        t.get(index)
            .map_err(rb)?
            .map(|v| v.value().to_vec())
            .ok_or_else(|| StoreError::Corrupt(format!("entry {index} is missing")))
    }

    fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        if len > self.len {
            return Err(StoreError::OutOfRange {
                index: len,
                len: self.len,
            });
        }
        let old = self.len;
        self.write(|w| {
            let mut t = w.open_table(ENTRIES).map_err(rb)?;
            for i in len..old {
                t.remove(i).map_err(rb)?;
            }
            Ok(())
        })?;
        self.len = len;
        Ok(())
    }

    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|w| {
            w.open_table(META)
                .map_err(rb)?
                .insert(key, value)
                .map_err(rb)?;
            Ok(())
        })
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get_meta_in(&self.db, META, key)
    }

    fn append_with_meta(
        &mut self,
        entries: &[Vec<u8>],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let start = self.len;
        let lazy = self.lazy;
        self.write(|w| {
            if lazy {
                w.set_durability(redb::Durability::None).map_err(rb)?;
            }
            put_entries(w, start, entries)?;
            let mut t = w.open_table(META).map_err(rb)?;
            for (k, v) in meta {
                t.insert(*k, v.as_slice()).map_err(rb)?;
            }
            Ok(())
        })?;
        self.len += entries.len() as u64;
        Ok(())
    }
}

impl RedbRaftLog {
    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(rb)?;
        f(&w)?;
        w.commit().map_err(rb)
    }
}

impl RaftLogBackend for RedbRaftLog {
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        self.write(|w| {
            let mut t = w.open_table(RAFT_LOG).map_err(rb)?;
            for (i, e) in entries {
                t.insert(*i, e.as_slice()).map_err(rb)?;
            }
            Ok(())
        })
    }

    fn range(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let r = self.db.begin_read().map_err(rb)?;
        let t = r.open_table(RAFT_LOG).map_err(rb)?;
        t.range(from..to)
            .map_err(rb)?
            .map(|kv| kv.map(|(_, v)| v.value().to_vec()).map_err(rb))
            .collect()
    }

    fn last(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(rb)?;
        let t = r.open_table(RAFT_LOG).map_err(rb)?;
        let last = t.last().map_err(rb)?.map(|(_, v)| v.value().to_vec());
        Ok(last)
    }

    fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        self.write(|w| {
            let mut t = w.open_table(RAFT_LOG).map_err(rb)?;
            t.retain_in(from.., |_, _| false).map_err(rb)
        })
    }

    fn purge_upto(&self, upto: u64) -> Result<(), StoreError> {
        self.write(|w| {
            let mut t = w.open_table(RAFT_LOG).map_err(rb)?;
            t.retain_in(..=upto, |_, _| false).map_err(rb)
        })
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|w| {
            w.open_table(RAFT_META)
                .map_err(rb)?
                .insert(key, value)
                .map_err(rb)?;
            Ok(())
        })
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get_meta_in(&self.db, RAFT_META, key)
    }

    /// One transaction without an fsync of its own: it becomes durable with the next Raft log
    /// append (always durable), and redb commits are atomic and ordered, so a crash keeps the
    /// mark and the removal together or neither. Before, a purge was two fsynced commits that
    /// every append behind it waited for.
    fn purge_with_mark(&self, key: &str, value: &[u8], upto: u64) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(rb)?;
        w.set_durability(redb::Durability::None).map_err(rb)?;
        {
            w.open_table(RAFT_META)
                .map_err(rb)?
                .insert(key, value)
                .map_err(rb)?;
            w.open_table(RAFT_LOG)
                .map_err(rb)?
                .retain_in(..=upto, |_, _| false)
                .map_err(rb)?;
        }
        w.commit().map_err(rb)
    }
}
