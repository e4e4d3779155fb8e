//! The Raft log over a [`RaftLogBackend`]: entries (postcard) keyed by Raft index, the vote, the
//! committed mark and the last purged log id. Every write is durable before the call returns
//! (and before openraft's flush callback fires).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};

use super::{io_err, NodeId, StorageError, TypeConfig};
use crate::store::RaftLogBackend;

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

/// The Raft log of one node.
#[derive(Clone)]
pub struct LogStore<B: RaftLogBackend> {
    backend: B,
}

impl<B: RaftLogBackend> LogStore<B> {
    /// Over `backend`.
    pub fn new(backend: B) -> Self {
        LogStore { backend }
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self
            .backend
            .get_meta(key)
            .map_err(|e| io_err(StorageIOError::read, e))?
        {
            None => Ok(None),
            Some(b) => postcard::from_bytes(&b)
                .map(Some)
                .map_err(|e| io_err(StorageIOError::read, format!("{key}: {e}"))),
        }
    }

    fn put<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), StorageError> {
        let b = postcard::to_stdvec(v).map_err(|e| io_err(StorageIOError::write, e))?;
        self.backend
            .put_meta(key, &b)
            .map_err(|e| io_err(StorageIOError::write, e))
    }
}

fn decode(b: &[u8]) -> Result<Entry<TypeConfig>, StorageError> {
    postcard::from_bytes(b).map_err(|e| io_err(StorageIOError::read_logs, e))
}

impl<B: RaftLogBackend> RaftLogReader<TypeConfig> for LogStore<B> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.backend
            .range(from, to)
            .map_err(|e| io_err(StorageIOError::read_logs, e))?
            .iter()
            .map(|b| decode(b))
            .collect()
    }
}

impl<B: RaftLogBackend> RaftLogStorage<TypeConfig> for LogStore<B> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.meta(PURGED)?;
        let last = match self
            .backend
            .last()
            .map_err(|e| io_err(StorageIOError::read_logs, e))?
        {
            Some(b) => Some(decode(&b)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put(VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.meta(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        self.put(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        for e in entries {
            let b = postcard::to_stdvec(&e).map_err(|e| io_err(StorageIOError::write_logs, e))?;
            batch.push((e.log_id.index, b));
        }
        // Durable when `append` returns, so the callback can fire at once.
        let res = self.backend.append(&batch);
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                Err(io_err(StorageIOError::write_logs, msg))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.backend
            .truncate_from(log_id.index)
            .map_err(|e| io_err(StorageIOError::write_logs, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        // The mark and the removal go together (`purge_with_mark`); entries left below a mark
        // after a crash are simply ignored.
        let mark = postcard::to_stdvec(&log_id).map_err(|e| io_err(StorageIOError::write, e))?;
        self.backend
            .purge_with_mark(PURGED, &mark, log_id.index)
            .map_err(|e| io_err(StorageIOError::write_logs, e))
    }
}
