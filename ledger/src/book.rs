//! Per-query records with bounded memory: the newest in memory, the rest in a scratch file.
//!
//! The ledger's derived state holds one [`QueryRecord`](crate::state::QueryRecord) and one
//! [`ChargeRecord`] for every query ever admitted. Everything else in the state is bounded by
//! the number of members, researchers and checkpoints, so these two maps are what would make a
//! node's memory grow with its ledger (about 0.8 KB per query: 830 MiB per member after 1M
//! query entries, measured with both maps in memory).
//!
//! A [`Book`] keeps up to `cap` records in memory (the records written since its last flush) and
//! writes them all to a table of a scratch redb file in one transaction when it holds more.
//! A lookup reads memory first, then the file. The file is a *cache*, not state: the state is a
//! function of the applied entries, rebuilt by replaying them whenever a node opens, so the
//! scratch file is created empty at every open ([`Spill::create`]) and never needs an fsync or a
//! recovery of its own. Memory stays at `cap` records per book whatever the ledger's size.
//!
//! A node's agreement with the others rests on a book returning exactly what was last recorded.
//! A read or write of the scratch file that fails therefore cannot be answered with a guess:
//! the book records the fault ([`Spill::fault`]), and the state machine stops the node with a
//! storage error before it records anything that a failed lookup might have decided.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use medtech_noise::{ChargeBook, ChargeRecord};
use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::StoreError;

/// Records a book keeps in memory before writing them to its file (per book).
pub const HOT_RECORDS: usize = 16_384;

/// One flush in this many is committed durably (see [`Book`]'s flush).
const DURABLE_EVERY: u64 = 8;

/// Page-cache budget of the scratch file, shared by the books that use it.
pub const SPILL_CACHE_BYTES: usize = 8 << 20;

/// The scratch file the books of one ledger state spill to.
#[derive(Clone)]
pub struct Spill {
    db: Arc<Database>,
    fault: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("fault", &self.fault())
            .finish_non_exhaustive()
    }
}

impl Spill {
    /// Creates the scratch file at `path`, replacing whatever was there (a previous run's cache).
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "cannot replace {}: {e}",
                    path.display()
                )))
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        let db = Database::builder()
            .set_cache_size(SPILL_CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Ok(Spill {
            db: Arc::new(db),
            fault: Arc::new(Mutex::new(None)),
        })
    }

    /// The first failure to read or write the file, if any (the state is then unreliable and
    /// the node must stop).
    pub fn fault(&self) -> Option<String> {
        match self.fault.lock() {
            Ok(f) => f.clone(),
            Err(_) => Some("spill fault lock poisoned".into()),
        }
    }

    fn record_fault(&self, what: String) {
        if let Ok(mut f) = self.fault.lock() {
            f.get_or_insert(what);
        }
    }
}

/// Records by query id: in memory only, or spilled to a [`Spill`] file beyond `cap`.
pub struct Book<V> {
    hot: BTreeMap<String, V>,
    disk: Option<(Spill, TableDefinition<'static, &'static str, &'static [u8]>)>,
    cap: usize,
    flushes: u64,
}

impl<V> std::fmt::Debug for Book<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Book")
            .field("in_memory", &self.hot.len())
            .field("spills", &self.disk.is_some())
            .finish()
    }
}

impl<V> Default for Book<V> {
    fn default() -> Self {
        Book::memory()
    }
}

impl<V> Book<V> {
    /// A book that keeps everything in memory (tests, simulations, offline verification).
    pub fn memory() -> Self {
        Book {
            hot: BTreeMap::new(),
            disk: None,
            cap: usize::MAX,
            flushes: 0,
        }
    }

    /// A book that spills to `table` of `spill` once it holds more than `cap` records.
    pub fn spilled(spill: Spill, table: &'static str, cap: usize) -> Self {
        Book {
            hot: BTreeMap::new(),
            disk: Some((spill, TableDefinition::new(table))),
            cap: cap.max(1),
            flushes: 0,
        }
    }

    /// Records held in memory now.
    pub fn in_memory(&self) -> usize {
        self.hot.len()
    }
}

impl<V: Clone + Serialize + DeserializeOwned> Book<V> {
    /// The record of `id`.
    pub fn get(&self, id: &str) -> Option<V> {
        if let Some(v) = self.hot.get(id) {
            return Some(v.clone());
        }
        self.on_disk(id, |b| {
            postcard::from_bytes(b).map_err(|e| format!("record {id:?} does not decode: {e}"))
        })
    }

    /// Whether `id` has a record (a key lookup: the record is not decoded).
    pub fn contains(&self, id: &str) -> bool {
        self.hot.contains_key(id) || self.on_disk(id, |_| Ok(())).is_some()
    }

    /// Reads `id`'s stored bytes from the file through `read`: `None` when there is no file or
    /// no such record, and on a failure, which is recorded as the spill's fault.
    fn on_disk<T>(&self, id: &str, read: impl FnOnce(&[u8]) -> Result<T, String>) -> Option<T> {
        let (spill, table) = self.disk.as_ref()?;
        let lookup = || -> Result<Option<T>, String> {
            let r = spill.db.begin_read().map_err(|e| e.to_string())?;
            let t = match r.open_table(*table) {
                Ok(t) => t,
                // Nothing spilled yet.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            match t.get(id).map_err(|e| e.to_string())? {
                None => Ok(None),
                Some(b) => read(b.value()).map(Some),
            }
        };
        match lookup() {
            Ok(v) => v,
            Err(e) => {
                spill.record_fault(format!("reading {}: {e}", table.name()));
                None
            }
        }
    }

    /// Records (or replaces) the record of `id`.
    pub fn insert(&mut self, id: &str, v: V) {
        self.hot.insert(id.to_owned(), v);
        if self.hot.len() > self.cap {
            self.flush();
        }
    }

    /// Changes the record of `id` if there is one.
    pub fn update(&mut self, id: &str, f: impl FnOnce(&mut V)) {
        if let Some(v) = self.hot.get_mut(id) {
            f(v);
        } else if let Some(mut v) = self.get(id) {
            f(&mut v);
            self.insert(id, v);
        }
    }

    /// Writes every in-memory record to the file (no-op for a memory book).
    fn flush(&mut self) {
        let Some((spill, table)) = self.disk.as_ref() else {
            return;
        };
        // The file is a cache rebuilt at every start: no commit needs to survive a crash. A
        // durable commit now and then lets redb reuse the pages earlier commits freed (it
        // cannot after non-durable ones), which bounds the file.
        self.flushes += 1;
        let durable = self.flushes.is_multiple_of(DURABLE_EVERY);
        let write = || -> Result<(), String> {
            let mut w = spill.db.begin_write().map_err(|e| e.to_string())?;
            if !durable {
                w.set_durability(redb::Durability::None)
                    .map_err(|e| e.to_string())?;
            }
            {
                let mut t = w.open_table(*table).map_err(|e| e.to_string())?;
                for (k, v) in &self.hot {
                    let b = postcard::to_stdvec(v).map_err(|e| e.to_string())?;
                    t.insert(k.as_str(), b.as_slice())
                        .map_err(|e| e.to_string())?;
                }
            }
            w.commit().map_err(|e| e.to_string())
        };
        match write() {
            Ok(()) => self.hot.clear(),
            // Keep the records in memory: the state stays right while the node stops.
            Err(e) => spill.record_fault(format!("writing {}: {e}", table.name())),
        }
    }
}

impl ChargeBook for Book<ChargeRecord> {
    fn charge(&self, query: &str) -> Option<ChargeRecord> {
        self.get(query)
    }
    fn record(&mut self, query: &str, rec: ChargeRecord) {
        self.insert(query, rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_spilled_book_answers_like_a_memory_book_across_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(&dir.path().join("s.redb")).unwrap();
        let mut disk: Book<u64> = Book::spilled(spill.clone(), "t", 3);
        let mut mem: Book<u64> = Book::memory();
        for i in 0..20u64 {
            let k = format!("q{}", i % 7);
            disk.update(&k, |v| *v += i);
            mem.update(&k, |v| *v += i);
            if disk.get(&k).is_none() {
                disk.insert(&k, i);
                mem.insert(&k, i);
            }
            assert!(disk.in_memory() <= 3);
        }
        for i in 0..8 {
            let k = format!("q{i}");
            assert_eq!(disk.get(&k), mem.get(&k), "{k}");
        }
        assert_eq!(spill.fault(), None);
    }

    #[test]
    fn the_scratch_file_of_a_previous_run_is_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let mut b: Book<u64> = Book::spilled(Spill::create(&path).unwrap(), "t", 1);
            b.insert("a", 1);
            b.insert("b", 2);
            assert!(b.in_memory() < 2, "flushed to the file");
        }
        let b: Book<u64> = Book::spilled(Spill::create(&path).unwrap(), "t", 1);
        assert_eq!(b.get("a"), None);
    }

    #[test]
    fn a_record_of_another_type_in_the_file_is_a_fault_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(&dir.path().join("s.redb")).unwrap();
        let mut bytes: Book<Vec<u8>> = Book::spilled(spill.clone(), "t", 1);
        bytes.insert("a", vec![b'o', 0xff, 0xfe]);
        bytes.insert("b", vec![]);
        // Read back as text: not UTF-8.
        let text: Book<String> = Book::spilled(spill.clone(), "t", 1);
        assert_eq!(text.get("a"), None);
        assert!(spill.fault().is_some_and(|f| f.contains("does not decode")));
    }

    proptest! {
        #[test]
        fn any_sequence_of_inserts_and_updates_reads_back_as_in_memory(
            ops in proptest::collection::vec((0u8..12, any::<u32>(), any::<bool>()), 1..80),
            cap in 1usize..6,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let spill = Spill::create(&dir.path().join("s.redb")).unwrap();
            let mut disk: Book<Vec<u32>> = Book::spilled(spill.clone(), "t", cap);
            let mut mem: Book<Vec<u32>> = Book::memory();
            for (k, v, update) in ops {
                let k = format!("k{k}");
                if update {
                    disk.update(&k, |x| x.push(v));
                    mem.update(&k, |x| x.push(v));
                } else {
                    disk.insert(&k, vec![v]);
                    mem.insert(&k, vec![v]);
                }
                prop_assert!(disk.in_memory() <= cap);
            }
            for k in 0..12 {
                let k = format!("k{k}");
                prop_assert_eq!(disk.get(&k), mem.get(&k));
                prop_assert_eq!(disk.contains(&k), mem.contains(&k));
            }
            prop_assert_eq!(spill.fault(), None);
        }
    }
}
