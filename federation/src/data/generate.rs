//! Synthetic devices like the original's generator (BRIEF §1): its ten device types,
//! `usage_hours` 0–9999, `battery_level` 0–100, `sync_frequency_seconds` 0–3599, every
//! speciality and both categories, dates in the last ten years. Deterministic per seed.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::device::Device;

/// The original's device types.
pub const DEVICE_TYPES: [&str; 10] = [
    "ECG Monitor",
    "Infusion Pump",
    "MRI Scanner",
    "Ultrasound Machine",
    "Defibrillator",
    "Ventilator",
    "Pacemaker",
    "Blood Glucose Monitor",
    "Pulse Oximeter",
    "Endoscope",
];

/// Manufacturers the generator draws from.
pub const MANUFACTURERS: [&str; 6] = [
    "Medtronic",
    "Philips",
    "Siemens Healthineers",
    "GE Healthcare",
    "Abbott",
    "Dräger",
];

/// 2016-01-01T00:00:00Z.
const START: i64 = 1_451_606_400;
/// Ten years.
const SPAN: i64 = 10 * 365 * 86_400;

fn below(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    // Modulo bias below 2^-40 for the small ranges used here.
    rng.next_u64() % n
}

/// `count` devices of `hospital`, numbered from `first`.
pub fn devices(hospital: &str, first: u64, count: u64, seed: u64) -> Vec<Device> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (first..first + count)
        .map(|i| {
            let dt = below(&mut rng, DEVICE_TYPES.len() as u64) as usize;
            let m = below(&mut rng, MANUFACTURERS.len() as u64) as usize;
            let production = START + below(&mut rng, SPAN as u64) as i64;
            let service = production + below(&mut rng, 3 * 365 * 86_400) as i64;
            let warranty = production + (2 + below(&mut rng, 4) as i64) * 365 * 86_400;
            let sync = service + below(&mut rng, 365 * 86_400) as i64;
            Device {
                // In the form uploads normalise UDIs to (crate::data::ingest::normalise_udi).
                udi: format!("{hospital}/UDI-{i:08}").to_uppercase(),
                hospital: hospital.to_owned(),
                manufacturer: MANUFACTURERS[m].to_owned(),
                model: format!("{}-{}", &DEVICE_TYPES[dt][..3].to_uppercase(), 100 + m * 10),
                firmware_version: format!(
                    "{}.{}.{}",
                    1 + below(&mut rng, 3),
                    below(&mut rng, 10),
                    below(&mut rng, 20)
                ),
                device_type: DEVICE_TYPES[dt].to_owned(),
                production_date: production,
                last_service_date: service,
                warranty_expiry_date: warranty,
                last_sync_time: sync,
                usage_hours: below(&mut rng, 10_000) as i64,
                battery_level: below(&mut rng, 101) as i64,
                sync_frequency_seconds: below(&mut rng, 3_600) as i64,
                active_status: below(&mut rng, 10) < 8,
                speciality: 1 + below(&mut rng, 55) as u8,
                category: 1 + below(&mut rng, 2) as u8,
            }
        })
        .collect()
}

/// Devices written per chunk by [`write_file`].
const CHUNK: u64 = 100_000;

/// Writes `count` synthetic devices of `hospital` to `out` (CSV, `.ndjson` or `.json` by
/// extension; CSV on standard output when `None`), in chunks of 100,000 so memory stays flat,
/// with progress on standard error. Chunk `k` is generated from seed `seed + k`.
pub fn write_file(
    hospital: &str,
    count: u64,
    seed: u64,
    out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let format = match out.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
        None | Some("csv") => "csv",
        Some("ndjson") | Some("jsonl") => "ndjson",
        Some("json") => "json",
        Some(other) => {
            anyhow::bail!("unknown output extension .{other} (use .csv, .ndjson or .json)")
        }
    };
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    if format == "json" {
        w.write_all(b"[")?;
    }
    let mut first = 0u64;
    let mut k = 0u64;
    while first < count {
        let n = CHUNK.min(count - first);
        let ds = devices(hospital, first, n, seed.wrapping_add(k));
        match format {
            "csv" => {
                let text = super::ingest::to_csv(&ds)?;
                // Only the first chunk keeps the header row.
                let body = if k == 0 {
                    &text[..]
                } else {
                    let nl = text
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(text.len(), |i| i + 1);
                    &text[nl..]
                };
                w.write_all(body)?;
            }
            "ndjson" => {
                for d in &ds {
                    serde_json::to_writer(&mut w, d)?;
                    w.write_all(b"\n")?;
                }
            }
            _ => {
                for (i, d) in ds.iter().enumerate() {
                    if first + i as u64 > 0 {
                        w.write_all(b",")?;
                    }
                    serde_json::to_writer(&mut w, d)?;
                }
            }
        }
        first += n;
        k += 1;
        if out.is_some() {
            eprintln!("generate: {first} of {count} devices");
        }
    }
    if format == "json" {
        w.write_all(b"]")?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_devices_are_valid_and_deterministic() {
        let a = devices("hospital-a", 0, 500, 1);
        assert_eq!(a, devices("hospital-a", 0, 500, 1));
        for d in &a {
            d.validate().unwrap();
        }
        let specialities: std::collections::BTreeSet<u8> = a.iter().map(|d| d.speciality).collect();
        assert!(specialities.len() > 40);
    }

    #[test]
    fn written_files_parse_back_in_every_format() {
        use crate::data::ingest::{parse, Format};
        let dir = tempfile::tempdir().unwrap();
        for (name, format) in [
            ("d.csv", Format::Csv),
            ("d.ndjson", Format::Ndjson),
            ("d.json", Format::Json),
        ] {
            let p = dir.path().join(name);
            // More than one chunk, so the chunk seams are exercised.
            write_file("hospital-a", CHUNK + 3, 9, Some(&p)).unwrap();
            let parsed = parse(format, &std::fs::read(&p).unwrap()).unwrap();
            assert!(
                parsed.errors.is_empty(),
                "{name}: {:?}",
                parsed.errors.first()
            );
            assert_eq!(parsed.devices.len() as u64, CHUNK + 3, "{name}");
            let udis: std::collections::BTreeSet<_> =
                parsed.devices.iter().map(|(_, d)| d.udi.clone()).collect();
            assert_eq!(
                udis.len() as u64,
                CHUNK + 3,
                "{name}: UDIs repeat across chunks"
            );
        }
    }
}
