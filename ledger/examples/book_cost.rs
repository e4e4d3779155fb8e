//! What a spilled [`Book`] costs per operation, in the pattern the ledger bench drives (a new
//! query id: one lookup in the queries book, two in the charges book, one insert in each).
//!
//!     cargo run --release -p medtech-ledger --example book_cost -- 200000
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use medtech_ledger::book::{Book, Spill, HOT_RECORDS};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let spill = Spill::create(&dir.path().join("s.redb")).unwrap();
    let mut queries: Book<Vec<u8>> = Book::spilled(spill.clone(), "queries", HOT_RECORDS);
    let mut charges: Book<Vec<u8>> = Book::spilled(spill.clone(), "charges", HOT_RECORDS);
    let mut memory: Book<Vec<u8>> = Book::memory();
    let record = vec![7u8; 60];
    let t0 = Instant::now();
    let mut window = Instant::now();
    for i in 0..n {
        let id = format!("c{}-q{}", i % 64, i / 64);
        assert!(!queries.contains(&id));
        assert!(charges.get(&id).is_none());
        assert!(charges.get(&id).is_none());
        queries.insert(&id, record.clone());
        charges.insert(&id, record.clone());
        if (i + 1) % 100_000 == 0 {
            println!(
                "{:>8} ids: {:.2} µs per id over the last 100,000",
                i + 1,
                window.elapsed().as_secs_f64() * 1e6 / 100_000.0
            );
            window = Instant::now();
        }
    }
    let spilled = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for i in 0..n {
        let id = format!("c{}-q{}", i % 64, i / 64);
        assert!(!memory.contains(&id));
        memory.insert(&id, record.clone());
    }
    let mem = t1.elapsed().as_secs_f64();
    println!(
        "spilled: {:.2} µs per id; memory: {:.2} µs per id; fault: {:?}",
        spilled * 1e6 / n as f64,
        mem * 1e6 / n as f64,
        spill.fault()
    );
}
