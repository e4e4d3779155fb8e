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
                udi: format!("{hospital}/UDI-{i:08}"),
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
}
