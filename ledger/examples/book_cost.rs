//! What a spilled [`Book`] costs per operation, in the pattern the ledger bench drives (a new
//! query id: one lookup in the queries book, two in the charges book, one insert in each).
//!
//!     cargo run --release -p medtech-ledger --example book_cost -- 200000
//!
//! Prints the cost per id over each 100,000, its percentiles (the longest are the ids whose
//! insert started a flush), and the same loop over a memory book.
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
    // The time of each id's operations: a flush that blocks the caller shows as a long one.
    let mut each = Vec::with_capacity(n as usize);
    for i in 0..n {
        let id = format!("c{}-q{}", i % 64, i / 64);
        let t = Instant::now();
        assert!(!queries.contains(&id));
        assert!(charges.get(&id).is_none());
        assert!(charges.get(&id).is_none());
        queries.insert(&id, record.clone());
        charges.insert(&id, record.clone());
        each.push(t.elapsed().as_secs_f64() * 1e6);
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
    each.sort_by(f64::total_cmp);
    let at = |q: f64| each[((each.len() - 1) as f64 * q) as usize];
    println!(
        "per id (µs): p50 {:.1}, p99 {:.1}, p99.99 {:.0}, max {:.0}",
        at(0.5),
        at(0.99),
        at(0.9999),
        at(1.0)
    );
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
