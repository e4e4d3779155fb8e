//! The storage backend a node runs on, chosen at start-up: redb (default) or sled, both behind
//! [`EntryStore`] and [`RaftLogBackend`].

use std::path::Path;

use crate::redb_store::{RedbRaftLog, RedbStore};
use crate::store::{EntryStore, RaftLogBackend, SledRaftLog, SledStore, StoreError};

/// Which embedded database a node uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// redb (default).
    #[default]
    Redb,
    /// sled 0.34.
    Sled,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redb" => Ok(Backend::Redb),
            "sled" => Ok(Backend::Sled),
            other => Err(format!("unknown backend {other:?} (redb or sled)")),
        }
    }
}

/// A node's applied-entry store.
pub enum AnyStore {
    /// redb.
    Redb(RedbStore),
    /// sled.
    Sled(SledStore),
}

/// A node's Raft log storage.
#[derive(Clone)]
pub enum AnyRaftLog {
    /// redb.
    Redb(RedbRaftLog),
    /// sled.
    Sled(SledRaftLog),
}

impl Backend {
    /// Opens the backend's database in `dir`: the entry store and the Raft log sharing it.
    pub fn open(self, dir: &Path) -> Result<(AnyStore, AnyRaftLog), StoreError> {
        Ok(match self {
            Backend::Redb => {
                let s = RedbStore::open(dir)?;
                let l = s.raft_log();
                (AnyStore::Redb(s), AnyRaftLog::Redb(l))
            }
            Backend::Sled => {
                let s = SledStore::open(dir)?;
                let l = s.raft_log()?;
                (AnyStore::Sled(s), AnyRaftLog::Sled(l))
            }
        })
    }
}

impl AnyStore {
    /// Lazy state-machine writes where the backend supports them (redb; see
    /// [`RedbStore::set_lazy`]). sled flushes every write regardless.
    pub fn set_lazy(&mut self, lazy: bool) {
        if let AnyStore::Redb(s) = self {
            s.set_lazy(lazy);
        }
    }
}

macro_rules! both {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Redb($s) => $e,
            AnyStore::Sled($s) => $e,
        }
    };
}

impl EntryStore for AnyStore {
    fn len(&self) -> u64 {
        both!(self, s => s.len())
    }
    fn append(&mut self, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        both!(self, s => s.append(entries))
    }
    fn get(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        both!(self, s => s.get(index))
    }
    fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        both!(self, s => s.truncate(len))
    }
    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        both!(self, s => s.put_meta(key, value))
    }
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        both!(self, s => s.get_meta(key))
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        both!(self, s => s.sync())
    }
    fn append_with_meta(
        &mut self,
        entries: &[Vec<u8>],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), StoreError> {
        both!(self, s => s.append_with_meta(entries, meta))
    }
}

macro_rules! both_log {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            AnyRaftLog::Redb($s) => $e,
            AnyRaftLog::Sled($s) => $e,
        }
    };
}

impl RaftLogBackend for AnyRaftLog {
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        both_log!(self, s => s.append(entries))
    }
    fn range(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        both_log!(self, s => s.range(from, to))
    }
    fn last(&self) -> Result<Option<Vec<u8>>, StoreError> {
        both_log!(self, s => s.last())
    }
    fn truncate_from(&self, from: u64) -> Result<(), StoreError> {
        both_log!(self, s => s.truncate_from(from))
    }
    fn purge_upto(&self, upto: u64) -> Result<(), StoreError> {
        both_log!(self, s => s.purge_upto(upto))
    }
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        both_log!(self, s => s.put_meta(key, value))
    }
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        both_log!(self, s => s.get_meta(key))
    }
    fn purge_with_mark(&self, key: &str, value: &[u8], upto: u64) -> Result<(), StoreError> {
        both_log!(self, s => s.purge_with_mark(key, value, upto))
    }
}
