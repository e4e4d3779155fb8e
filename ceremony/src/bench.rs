//! `medtech-ceremony bench`: the whole key generation in one process (every party in its own
//! thread, every message encoded and decoded), repeated, with the time per phase, candidates
//! tried, traffic and peak memory.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use medtech_threshold::dkg::sim::{run_in_process, Phase, Run};
use medtech_threshold::dkg::Parameters;
use medtech_threshold::Plaintext;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use serde_json::{json, Value};

/// One benchmark configuration.
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    /// Modulus size.
    pub bits: u32,
    /// Parties n.
    pub parties: u16,
    /// Threshold t.
    pub threshold: u16,
    /// Repetitions (the median is reported).
    pub runs: usize,
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Peak resident set of this process in MiB (`VmHWM`), if the platform reports it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// Checks a generated key the way `test-decrypt` will: every party's share, t at a time.
fn check_key(run: &Run) -> Result<()> {
    let key = &run.outputs[0].key;
    ensure!(
        run.outputs.iter().all(|o| &o.key == key),
        "parties disagree on the key"
    );
    let pk = key.public_key();
    let m = (OsRng.next_u32() >> 1) as i64;
    let c = pk.encrypt(&Plaintext::from_i64(m), &mut OsRng)?;
    let t = usize::from(key.threshold());
    let partials = run.outputs[run.outputs.len() - t..]
        .iter()
        .map(|o| o.share.partial_decrypt(key, b"bench", &c, &mut OsRng))
        .collect::<Result<Vec<_>, _>>()?;
    let out = key.combine_partials(b"bench", &c, &partials)?;
    ensure!(
        out.decryption.plaintext == Plaintext::from_i64(m),
        "test decryption failed"
    );
    Ok(())
}

/// The median of 15 raw GMP modexps with a 4096-bit modulus and a 2048-bit exponent, in ms:
/// the baseline every benchmark prints beside its figures (this machine's speed varies by day).
pub fn modexp_baseline_ms() -> f64 {
    use medtech_threshold::bench_support::ModexpBaseline;
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let b = ModexpBaseline::with_modulus_bits(4096, 2048, &mut rng);
    let mut t: Vec<f64> = (0..15)
        .map(|_| {
            let start = std::time::Instant::now();
            std::hint::black_box(b.run());
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2] * 1000.0).round() / 1000.0
}

/// Runs the benchmark and returns its JSON report; `progress` gets one line per run.
pub fn run(cfg: BenchConfig, mut progress: impl FnMut(&str)) -> Result<Value> {
    ensure!(cfg.runs >= 1, "at least one run");
    // This machine's speed varies by day: a raw modexp measured in the same run (before and
    // after) goes beside every figure.
    let baseline_before = modexp_baseline_ms();
    let mut runs = Vec::new();
    let mut secs = Vec::new();
    for k in 0..cfg.runs {
        let mut session = [0u8; 32];
        OsRng.fill_bytes(&mut session);
        let params = Parameters::new(cfg.bits, cfg.parties, cfg.threshold, session)?;
        // Each party draws from its own ChaCha20 generator seeded by the OS (a system call per
        // random value would dominate the sampling of tens of thousands of candidates).
        let rngs: Vec<ChaCha20Rng> = (0..cfg.parties)
            .map(|_| ChaCha20Rng::from_rng(OsRng))
            .collect::<Result<_, _>>()?;
        let run = run_in_process(&params, rngs, None).context("key generation")?;
        check_key(&run).context("the generated key")?;
        let s = &run.outputs[0].stats;
        let phases: serde_json::Map<String, Value> = [
            Phase::Sieve,
            Phase::Modulus,
            Phase::Biprimality,
            Phase::Gcd,
            Phase::Audit,
            Phase::Certify,
            Phase::Key,
        ]
        .iter()
        .map(|p| {
            let d = run.phase_time.get(p).copied().unwrap_or_default();
            (p.name().to_string(), json!(seconds(d)))
        })
        .collect();
        progress(&format!(
            "run {}/{}: {:.1} s, {} candidates, {} batches",
            k + 1,
            cfg.runs,
            run.elapsed.as_secs_f64(),
            s.candidates_tried,
            s.batches
        ));
        secs.push(run.elapsed.as_secs_f64());
        runs.push(json!({
            "seconds": seconds(run.elapsed),
            "candidates_tried": s.candidates_tried,
            "sieve_survivors": s.sieve_survivors,
            "trial_survivors": s.trial_survivors,
            "first_test_survivors": s.first_test_survivors,
            "batches": s.batches,
            "rounds": run.rounds,
            "traffic_mb": (run.bytes as f64 / 1e6 * 10.0).round() / 10.0,
            "phases": phases,
        }));
    }
    let mut sorted = secs.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let median_run = secs
        .iter()
        .position(|&s| s == median)
        .and_then(|i| runs.get(i).cloned())
        .unwrap_or(Value::Null);
    let rss = peak_rss_mb();
    let baseline_after = modexp_baseline_ms();
    // The number of candidates is geometric, so a median over few runs swings with luck. The
    // steadier figures: time per batch of candidates (excluding the one-off gcd and key stages)
    // and the time that implies for the expected number of candidates, (ln 2^(bits/2) / 2)²
    // pairs plus half a batch.
    let batches: f64 = runs.iter().filter_map(|r| r["batches"].as_f64()).sum();
    let per_run_fixed: f64 = runs
        .iter()
        .map(|r| {
            // Once per run: the gcd step, the certification of the accepted modulus, the key.
            ["gcd", "certify", "key"]
                .iter()
                .map(|p| r["phases"][*p].as_f64().unwrap_or(0.0))
                .sum::<f64>()
        })
        .sum::<f64>()
        / runs.len() as f64;
    let batch_seconds =
        (secs.iter().sum::<f64>() - per_run_fixed * runs.len() as f64) / batches.max(1.0);
    let h = f64::from(cfg.bits / 2) * std::f64::consts::LN_2 / 2.0;
    let batch_size = runs
        .first()
        .and_then(|r| Some(r["candidates_tried"].as_f64()? / r["batches"].as_f64()?))
        .unwrap_or(1.0);
    let expected_batches = (h * h + batch_size / 2.0) / batch_size;
    Ok(json!({
        "bits": cfg.bits,
        "parties": cfg.parties,
        "threshold": cfg.threshold,
        "runs": cfg.runs,
        "seconds": (median * 1000.0).round() / 1000.0,
        "candidates_tried": median_run.get("candidates_tried").cloned().unwrap_or(Value::Null),
        "phases": median_run.get("phases").cloned().unwrap_or(Value::Null),
        "seconds_per_batch": (batch_seconds * 1000.0).round() / 1000.0,
        "batch_candidates": batch_size,
        "expected_seconds": ((expected_batches * batch_seconds + per_run_fixed) * 10.0).round() / 10.0,
        "peak_rss_mb_process": rss,
        "peak_rss_mb_per_party": rss.map(|r| (r / f64::from(cfg.parties) * 10.0).round() / 10.0),
        "all_runs": runs,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "modexp_baseline_ms": {
            "what": "median of 15 GMP modexps, 4096-bit modulus, 2048-bit exponent (a 2048-bit N's N^2)",
            "before": baseline_before,
            "after": baseline_after,
        },
        "note": "all parties in one process on this machine's cores; per-party memory is the process peak divided by n",
    }))
}
