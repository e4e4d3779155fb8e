//! Time of one hospital's local evaluation of a query over its devices (docs/performance.md,
//! "Local evaluation"): what every member spends per query before any cryptography.
//!
//!     cargo run --release -p medtech-federation --example query_eval -- 1000000
//!
//! Writes the given number of synthetic devices into a store, then evaluates the query
//! benchmark's Count (a string filter), Grouped count (speciality), Average (usage hours) and a
//! Count with several filters of every column type, 25 times each, and prints the median and
//! the fastest time of each with its result.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use medtech_federation::data::{generate, DeviceStore};
use medtech_federation::query::{Compiled, Platform, QuerySpec};
use serde_json::json;

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
        store
            .write(&generate::devices("hospital-a", first, n, 1), |_, _| {})
            .unwrap();
        first += n;
    }
    let cols = store.columns();
    let platform = Platform::new(&["hospital-a".to_owned()]);
    let specs = [
        (
            "count, device_type equals",
            json!({ "kind": "count", "filters": [{ "field": "device_type", "op": "equals", "value": "Pacemaker" }], "epsilon": 0.01 }),
        ),
        (
            "grouped count, speciality",
            json!({ "kind": "grouped_count", "target": "speciality", "epsilon": 0.01 }),
        ),
        (
            "average, usage_hours",
            json!({ "kind": "average", "target": "usage_hours", "epsilon": 0.01 }),
        ),
        (
            "count, five filters + time range",
            json!({ "kind": "count", "filters": [
            { "field": "manufacturer", "op": "contains", "value": "a" },
            { "field": "battery_level", "op": "greater_than", "value": 20 },
            { "field": "active_status", "op": "equals", "value": true },
            { "field": "production_date", "op": "after", "value": "2010-01-01T00:00:00Z" },
            { "field": "model", "op": "ends_with", "value": "0" }
        ], "start_time": "2020-01-01T00:00:00Z", "epsilon": 0.01 }),
        ),
    ];
    println!("{} devices", cols.len());
    for (name, spec) in specs {
        let spec: QuerySpec = serde_json::from_value(spec).unwrap();
        let q = Compiled::new(spec, &platform, 5, 3).unwrap();
        let mut times = Vec::new();
        let mut out = Vec::new();
        for _ in 0..25 {
            let t = Instant::now();
            out = q.evaluate(cols);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let shown: Vec<i128> = out.iter().take(4).copied().collect();
        println!(
            "{name:<36} median {:>7.2} ms  fastest {:>7.2} ms  first outputs {shown:?} of {}",
            times[times.len() / 2],
            times[0],
            out.len()
        );
    }
}
