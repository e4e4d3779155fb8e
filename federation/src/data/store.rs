//! A hospital's device store: records in sled (durable; a batch is flushed to disk before
//! ingest reports it), and a columnar copy in memory that queries scan.
//!
//! The columnar copy interns the low-cardinality strings (hospital, manufacturer, model,
//! firmware, device type) so a million devices take about 80 MB, and it is rebuilt from sled
//! when the node starts. A record with a UDI already stored replaces it (an update, not a
//! second device).

use std::collections::HashMap;
use std::path::Path;

use super::device::{device_key, Device};

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled failed.
    #[error("device store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode (disk corruption or a foreign file).
    #[error("device store: stored record does not decode: {0}")]
    Corrupt(String),
}

/// Strings interned to small ids.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_owned());
        self.ids.insert(s.to_owned(), i);
        i
    }

    /// The string with id `i`.
    pub fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", String::as_str)
    }

    /// Every interned string with its id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32, s.as_str()))
    }

    /// The id of `s`, if present.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }
}

/// The string columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrCol {
    /// `hospital`.
    Hospital,
    /// `manufacturer`.
    Manufacturer,
    /// `model`.
    Model,
    /// `firmware_version`.
    Firmware,
    /// `device_type`.
    DeviceType,
}

/// The integer columns (timestamps included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntCol {
    /// `production_date`.
    ProductionDate,
    /// `last_service_date`.
    LastServiceDate,
    /// `warranty_expiry_date`.
    WarrantyExpiryDate,
    /// `last_sync_time`.
    LastSyncTime,
    /// `usage_hours`.
    UsageHours,
    /// `battery_level`.
    BatteryLevel,
    /// `sync_frequency_seconds`.
    SyncFrequency,
}

/// The devices, column by column; row `i` of every column is one device.
#[derive(Clone, Debug, Default)]
pub struct Columns {
    strings: [Vec<u32>; 5],
    interners: [Interner; 5],
    ints: [Vec<i64>; 7],
    /// `active_status`.
    pub active: Vec<bool>,
    /// `speciality`.
    pub speciality: Vec<u8>,
    /// `category`.
    pub category: Vec<u8>,
    rows: HashMap<[u8; 16], u32>,
}

impl Columns {
    /// Number of devices.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// No devices.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// A string column's interned ids.
    pub fn strings(&self, c: StrCol) -> &[u32] {
        &self.strings[c as usize]
    }

    /// A string column's interner.
    pub fn interner(&self, c: StrCol) -> &Interner {
        &self.interners[c as usize]
    }

    /// An integer column.
    pub fn ints(&self, c: IntCol) -> &[i64] {
        &self.ints[c as usize]
    }

    /// The columns of `devices` (later records with the same UDI replace earlier ones), without
    /// a store: for tests and simulations.
    pub fn from_devices(devices: &[Device]) -> Self {
        let mut c = Columns::default();
        for d in devices {
            c.upsert(d);
        }
        c
    }

    /// Inserts or replaces a device; true if it was new.
    fn upsert(&mut self, d: &Device) -> bool {
        let key = device_key(&d.udi);
        let strs = [
            &d.hospital,
            &d.manufacturer,
            &d.model,
            &d.firmware_version,
            &d.device_type,
        ];
        let ints = [
            d.production_date,
            d.last_service_date,
            d.warranty_expiry_date,
            d.last_sync_time,
            d.usage_hours,
            d.battery_level,
            d.sync_frequency_seconds,
        ];
        match self.rows.get(&key) {
            Some(&row) => {
                let r = row as usize;
                for (i, s) in strs.iter().enumerate() {
                    let id = self.interners[i].intern(s);
                    self.strings[i][r] = id;
                }
                for (i, v) in ints.iter().enumerate() {
                    self.ints[i][r] = *v;
                }
                self.active[r] = d.active_status;
                self.speciality[r] = d.speciality;
                self.category[r] = d.category;
                false
            }
            None => {
                let row = self.active.len() as u32;
                for (i, s) in strs.iter().enumerate() {
                    let id = self.interners[i].intern(s);
                    self.strings[i].push(id);
                }
                for (i, v) in ints.iter().enumerate() {
                    self.ints[i].push(*v);
                }
                self.active.push(d.active_status);
                self.speciality.push(d.speciality);
                self.category.push(d.category);
                self.rows.insert(key, row);
                true
            }
        }
    }
}

/// What an ingest did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// New devices.
    pub inserted: u64,
    /// Devices whose record was replaced.
    pub updated: u64,
}

/// Records written per sled batch (each batch is flushed before the next starts).
pub const BATCH: usize = 20_000;

/// The store.
pub struct DeviceStore {
    tree: sled::Tree,
    db: sled::Db,
    columns: Columns,
}

impl DeviceStore {
    /// Opens (or creates) the store in `dir` and loads the columns.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        // A member restarted in-process can find sled's lock still held for a moment.
        let db = medtech_ledger::store::open_sled(
            &sled::Config::new().path(dir).cache_capacity(32 << 20),
        )?;
        let tree = db.open_tree("devices")?;
        let mut columns = Columns::default();
        for kv in tree.iter() {
            let (_, v) = kv?;
            let d: Device =
                postcard::from_bytes(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            columns.upsert(&d);
        }
        Ok(DeviceStore { tree, db, columns })
    }

    /// The columns queries scan.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// No devices.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Writes validated devices in batches of [`BATCH`], each flushed to disk before it counts,
    /// calling `progress(done, total)` after each.
    pub fn write(
        &mut self,
        devices: &[Device],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Written, StoreError> {
        let mut w = Written::default();
        for (i, chunk) in devices.chunks(BATCH).enumerate() {
            let mut batch = sled::Batch::default();
            for d in chunk {
                let bytes =
                    postcard::to_allocvec(d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                batch.insert(&device_key(&d.udi), bytes);
            }
            self.tree.apply_batch(batch)?;
            self.db.flush()?;
            for d in chunk {
                if self.columns.upsert(d) {
                    w.inserted += 1;
                } else {
                    w.updated += 1;
                }
            }
            progress((i * BATCH + chunk.len()).min(devices.len()), devices.len());
        }
        Ok(w)
    }

    /// The stored record of `udi`.
    pub fn get(&self, udi: &str) -> Result<Option<Device>, StoreError> {
        match self.tree.get(device_key(udi))? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
        }
    }
}
