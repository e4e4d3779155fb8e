//! `medtech demo`: a local committee of hospitals runs one private grouped count end to end on
//! the threshold core — key generation, range-proved encrypted contributions, homomorphic
//! aggregation, threshold decryption with one member offline and one cheating.
//!
//! What it does not do yet, and says so when it runs: dealer-free key generation (issue 3), DP
//! noise and budgets (issue 4), the ledger (issue 5) and the node with its HTTP API (issue 6).

use std::io::Write;
use std::time::Instant;

use medtech_threshold::{dealer, PackedCiphertext, PartialDecryption, PartyIndex, SlotLayout};
use rand_core::{OsRng, RngCore};

/// Demo parameters.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Modulus size in bits.
    pub bits: u32,
    /// Hospitals (= committee members).
    pub parties: u16,
    /// Threshold.
    pub threshold: u16,
    /// Number of bins of the grouped count (55 medical specialities).
    pub bins: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            bits: 2048,
            parties: 5,
            threshold: 3,
            bins: 55,
        }
    }
}

/// Runs the demo, writing a narrative to `out`. Returns the decrypted per-bin totals, which it
/// has already checked against the plaintext reference.
pub fn run(cfg: &DemoConfig, out: &mut dyn Write) -> anyhow::Result<Vec<i64>> {
    anyhow::ensure!(cfg.parties >= 2, "the demo needs at least 2 hospitals");
    anyhow::ensure!(
        cfg.threshold >= 2 && cfg.threshold < cfg.parties,
        "the demo needs 2 ≤ t < n (one member goes offline)"
    );
    let mut rng = OsRng;
    writeln!(
        out,
        "MedTech Chain demo: {} hospitals, any {} decrypt, {}-bit Paillier",
        cfg.parties, cfg.threshold, cfg.bits
    )?;
    writeln!(
        out,
        "  (crypto core only: dealer key mode; dealer-free keygen, DP noise, ledger and API are not built yet)"
    )?;

    let t0 = Instant::now();
    let (key, shares) = dealer::generate(cfg.bits, cfg.parties, cfg.threshold, &mut rng)?;
    key.precompute();
    writeln!(
        out,
        "1. key generation (dealer mode): {:.1} s, key fingerprint {}",
        t0.elapsed().as_secs_f64(),
        hex_prefix(&key.fingerprint())
    )?;
    let pk = key.public_key();

    // Each hospital counts its devices per speciality (synthetic) and encrypts the histogram,
    // packed, with a proof that every bin lies in [0, 2^24 − 1].
    let bound: u64 = (1 << 24) - 1;
    let layouts = SlotLayout::cover(pk, 40, cfg.bins)?;
    let query = b"demo/query-1: GROUPED_COUNT(speciality)";
    let mut reference = vec![0i64; cfg.bins as usize];
    let mut aggregate: Vec<Option<PackedCiphertext>> = vec![None; layouts.len()];
    let t0 = Instant::now();
    for h in 1..=cfg.parties {
        let counts: Vec<u64> = (0..cfg.bins)
            .map(|_| u64::from(rng.next_u32() % 500))
            .collect();
        for (r, c) in reference.iter_mut().zip(&counts) {
            *r += *c as i64;
        }
        let mut offset = 0usize;
        for (k, layout) in layouts.iter().enumerate() {
            let slots = layout.slots() as usize;
            let ctx = [&query[..], &h.to_be_bytes()].concat();
            let (ct, proof) = pk.encrypt_in_range(
                *layout,
                &counts[offset..offset + slots],
                bound,
                &ctx,
                &mut rng,
            )?;
            // The committee checks the proof before the contribution enters the aggregate.
            let checked = pk.verify_range(*layout, bound, &ctx, ct.ciphertext(), &proof)?;
            aggregate[k] = Some(match aggregate[k].take() {
                None => checked,
                Some(acc) => acc.add(pk, &checked)?,
            });
            offset += slots;
        }
    }
    writeln!(
        out,
        "2. {} hospitals encrypted {} bins each into {} packed ciphertext(s) with range proofs: {:.2} s",
        cfg.parties,
        cfg.bins,
        layouts.len(),
        t0.elapsed().as_secs_f64()
    )?;

    // Member #2 is offline; member #1 cheats (sends another ciphertext's partial with its proof).
    let t0 = Instant::now();
    let mut totals = Vec::with_capacity(cfg.bins as usize);
    for agg in aggregate.into_iter().flatten() {
        let c = agg.ciphertext();
        let mut partials: Vec<PartialDecryption> = Vec::new();
        for s in shares.iter().filter(|s| s.index() != PartyIndex(2)) {
            partials.push(s.partial_decrypt(&key, query, c, &mut rng)?);
        }
        let decoy = pk.encrypt(&medtech_threshold::Plaintext::from_i64(0), &mut rng)?;
        let cheat = shares[0].partial_decrypt(&key, query, &decoy, &mut rng)?;
        partials[0] = splice(&key, &partials[0], &cheat)?;
        let outcome = key.combine_partials(query, c, &partials)?;
        for e in &outcome.rejected {
            writeln!(out, "   rejected: {e}")?;
        }
        writeln!(
            out,
            "   combined from members {:?}",
            outcome
                .decryption
                .parties
                .iter()
                .map(|p| p.0)
                .collect::<Vec<_>>()
        )?;
        totals.extend(agg.decode(&outcome.decryption.plaintext)?);
    }
    writeln!(
        out,
        "3. threshold decryption with member #2 offline and member #1 cheating: {:.2} s",
        t0.elapsed().as_secs_f64()
    )?;
    anyhow::ensure!(
        totals == reference,
        "decrypted totals differ from the plaintext reference"
    );
    writeln!(
        out,
        "4. totals per speciality (exact, no DP noise yet), first 10 of {}:",
        cfg.bins
    )?;
    writeln!(out, "   {:?}", &totals[..totals.len().min(10)])?;
    writeln!(out, "   matches the plaintext reference: yes")?;
    Ok(totals)
}

/// The cheater's forged partial: its honest index and proof, with another ciphertext's `c_i`.
fn splice(
    key: &medtech_threshold::ThresholdPublicKey,
    honest: &PartialDecryption,
    other: &PartialDecryption,
) -> anyhow::Result<PartialDecryption> {
    let a = honest.to_bytes();
    let b = other.to_bytes();
    let len = |v: &[u8]| -> anyhow::Result<usize> {
        let w: [u8; 4] = v
            .get(7..11)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| anyhow::anyhow!("short"))?;
        Ok(u32::from_be_bytes(w) as usize)
    };
    let (la, lb) = (len(&a)?, len(&b)?);
    let mut forged = a[..7].to_vec();
    forged.extend_from_slice(&b[7..11 + lb]);
    forged.extend_from_slice(&a[11 + la..]);
    Ok(PartialDecryption::from_bytes(key, &forged)?)
}

fn hex_prefix(b: &[u8; 32]) -> String {
    b[..8].iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_runs_and_matches_reference_at_small_size() {
        let cfg = DemoConfig {
            bits: 512,
            parties: 5,
            threshold: 3,
            bins: 55,
        };
        let mut out = Vec::new();
        let totals = run(&cfg, &mut out).unwrap();
        assert_eq!(totals.len(), 55);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("party #1 sent an invalid partial decryption"),
            "{text}"
        );
        assert!(text.contains("matches the plaintext reference: yes"));
    }
}
