//! Device data at its hospital: the record and its validation, upload parsing, the durable
//! store with its columnar copy, and the synthetic generator.

pub mod device;
pub mod generate;
pub mod ingest;
pub mod store;

pub use device::Device;
pub use store::{Columns, DeviceStore, StoreError, Written};
