//! Load: several researchers submit concurrently through different members for a fixed time;
//! throughput and latency are printed, and the oracle's invariants are checked afterwards
//! (every release audited, budgets exact, one log everywhere).
//!
//! CI runs it for 10 s at 512 bits. A longer soak: `MEDTECH_SOAK_SECS=600 cargo test --release
//! -p medtech-scenarios --test load -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use medtech_federation::protocol::Outcome;
use medtech_federation::query::QueryKind;
use medtech_scenarios::harness::{query, Committee, Options};
use medtech_scenarios::oracle;

const RESEARCHERS: usize = 4;

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_researchers_for_a_fixed_time_keep_every_invariant() {
    let secs: u64 = std::env::var("MEDTECH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let c = Arc::new(Committee::start(Options::default()).await.unwrap());
    for r in 0..RESEARCHERS {
        c.register(r % c.n(), &format!("r{r}"), 100_000.0, 1_000_000.0)
            .await
            .unwrap();
    }
    let kinds = [
        query(QueryKind::Count, None),
        query(QueryKind::GroupedCount, Some("category")),
        query(QueryKind::Average, Some("battery_level")),
    ];
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for r in 0..RESEARCHERS {
        let c = Arc::clone(&c);
        let kinds = kinds.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0usize;
            let mut k = r;
            while Instant::now() < until {
                let spec = &kinds[k % kinds.len()];
                let via = (r + k) % c.n();
                k += 1;
                let t0 = Instant::now();
                let id = c.submit(via, &format!("r{r}"), spec).await.unwrap();
                match c.wait(&id, Duration::from_secs(120)).await.unwrap() {
                    Outcome::Released(_) => latencies.push(t0.elapsed()),
                    Outcome::Failed(why) => {
                        eprintln!("query {id} failed: {why}");
                        failed += 1;
                    }
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        latencies.extend(l);
        failed += f;
    }
    let wall = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "load: {} researchers, {:.1} s, {} released, {failed} failed, {:.2} queries/s, latency p50 {:.0} ms p99 {:.0} ms, peak RSS {:.0} MiB (whole 5-member committee in one process)",
        RESEARCHERS,
        wall,
        latencies.len(),
        latencies.len() as f64 / wall,
        pct(0.5),
        pct(0.99),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    assert_eq!(failed, 0, "no query fails under load with every member up");
    assert!(!latencies.is_empty());
    let report = oracle::check(&c, Duration::from_secs(60)).await.unwrap();
    assert_eq!(report.released, latencies.len());
    assert_eq!(report.open, 0);
    assert!(report.accused.is_empty(), "{:?}", report.accused);
    println!(
        "load: ledger {} entries, latest cosigned checkpoint at {}, {} proposals refused",
        report.size, report.cosigned_size, report.rejected
    );
    let c = Arc::try_unwrap(c).ok().expect("tasks ended");
    c.shutdown().await.unwrap();
}
