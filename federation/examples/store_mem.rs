//! Resident memory and write time of the device store (docs/performance.md, "Device store").
//!
//!     cargo run --release -p medtech-federation --example store_mem -- 1000000
//!
//! Writes the given number of synthetic devices in uploads of 100,000 (each in transactions of
//! `BATCH` records, as the node does), printing the time per upload and the process's resident
//! set, then reopens the store (which rebuilds the columns) and prints it again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_federation::data::{generate, DeviceStore};

fn rss_mib() -> f64 {
    medtech_federation::bench_query::status_mb(std::process::id(), "VmRSS:")
}

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the number of devices"))
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut store = DeviceStore::open(dir.path()).unwrap();
    let mut first = 0;
    while first < total {
        let n = 100_000.min(total - first);
        let devices = generate::devices("hospital-a", first, n, 1);
        let t = std::time::Instant::now();
        store.write(&devices, |_, _| {}).unwrap();
        first += n;
        println!(
            "{first:>9} devices: upload of {n} written in {:>6.1} ms, resident {:.0} MiB",
            t.elapsed().as_secs_f64() * 1e3,
            rss_mib()
        );
    }
    drop(store);
    let t = std::time::Instant::now();
    let store = DeviceStore::open(dir.path()).unwrap();
    println!(
        "reopened {} devices in {:.2} s, resident {:.0} MiB",
        store.len(),
        t.elapsed().as_secs_f64(),
        rss_mib()
    );
}
