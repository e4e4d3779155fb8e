//! The device record (the original's `DeviceData`, BRIEF §1): 15 fields keyed by the device's
//! UDI, with the validation every ingest path applies.
//!
//! Timestamps are whole seconds since the Unix epoch (UTC). `MedicalSpeciality` is carried by
//! number (0 = unspecified, 1..=55); [`SPECIALITIES`] names them. Only three names are fixed by
//! the brief (1 = ALLERGY_AND_IMMUNOLOGY, 21 = CARDIOLOGY, 55 = CLINICAL_NEUROPHYSIOLOGY); the
//! others are this project's and can be renamed without touching stored data, which keeps the
//! numbers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Names of `MedicalSpeciality` values 1..=55 (index 0 is value 1).
pub const SPECIALITIES: [&str; 55] = [
    "ALLERGY_AND_IMMUNOLOGY",
    "ANESTHESIOLOGY",
    "COLON_AND_RECTAL_SURGERY",
    "DERMATOLOGY",
    "EMERGENCY_MEDICINE",
    "FAMILY_MEDICINE",
    "INTERNAL_MEDICINE",
    "MEDICAL_GENETICS",
    "NEUROLOGICAL_SURGERY",
    "NUCLEAR_MEDICINE",
    "OBSTETRICS_AND_GYNECOLOGY",
    "OPHTHALMOLOGY",
    "ORTHOPAEDIC_SURGERY",
    "OTOLARYNGOLOGY",
    "PATHOLOGY",
    "PEDIATRICS",
    "PHYSICAL_MEDICINE_AND_REHABILITATION",
    "PLASTIC_SURGERY",
    "PREVENTIVE_MEDICINE",
    "PSYCHIATRY",
    "CARDIOLOGY",
    "RADIOLOGY",
    "GENERAL_SURGERY",
    "THORACIC_SURGERY",
    "UROLOGY",
    "ENDOCRINOLOGY",
    "GASTROENTEROLOGY",
    "HEMATOLOGY",
    "INFECTIOUS_DISEASE",
    "NEPHROLOGY",
    "ONCOLOGY",
    "PULMONOLOGY",
    "RHEUMATOLOGY",
    "GERIATRIC_MEDICINE",
    "CRITICAL_CARE_MEDICINE",
    "NEONATOLOGY",
    "PEDIATRIC_CARDIOLOGY",
    "NEUROLOGY",
    "VASCULAR_SURGERY",
    "RADIATION_ONCOLOGY",
    "INTERVENTIONAL_RADIOLOGY",
    "SLEEP_MEDICINE",
    "PAIN_MEDICINE",
    "SPORTS_MEDICINE",
    "HOSPICE_AND_PALLIATIVE_MEDICINE",
    "NEURORADIOLOGY",
    "CARDIAC_ELECTROPHYSIOLOGY",
    "TRANSPLANT_HEPATOLOGY",
    "MATERNAL_FETAL_MEDICINE",
    "REPRODUCTIVE_ENDOCRINOLOGY",
    "MEDICAL_TOXICOLOGY",
    "UNDERSEA_AND_HYPERBARIC_MEDICINE",
    "CLINICAL_PHARMACOLOGY",
    "DENTISTRY",
    "CLINICAL_NEUROPHYSIOLOGY",
];

/// Names of `DeviceCategory` values 1..=2.
pub const CATEGORIES: [&str; 2] = ["PORTABLE", "WEARABLE"];

/// The name of speciality `v` (`UNSPECIFIED` for 0).
pub fn speciality_name(v: u8) -> &'static str {
    match v {
        0 => "UNSPECIFIED",
        v => SPECIALITIES
            .get(usize::from(v) - 1)
            .copied()
            .unwrap_or("UNKNOWN"),
    }
}

/// The name of category `v` (`UNSPECIFIED` for 0).
pub fn category_name(v: u8) -> &'static str {
    match v {
        0 => "UNSPECIFIED",
        v => CATEGORIES
            .get(usize::from(v) - 1)
            .copied()
            .unwrap_or("UNKNOWN"),
    }
}

/// Parses a speciality given by name (any case) or number.
pub fn parse_speciality(s: &str) -> Result<u8, String> {
    parse_enum(s, &SPECIALITIES, "speciality")
}

/// Parses a category given by name (any case) or number.
pub fn parse_category(s: &str) -> Result<u8, String> {
    parse_enum(s, &CATEGORIES, "category")
}

fn parse_enum(s: &str, names: &[&str], what: &str) -> Result<u8, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<u8>() {
        if usize::from(v) <= names.len() {
            return Ok(v);
        }
        return Err(format!("{what} {v} is not between 0 and {}", names.len()));
    }
    if t.eq_ignore_ascii_case("UNSPECIFIED") || t.is_empty() {
        return Ok(0);
    }
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(t))
        .map(|i| (i + 1) as u8)
        .ok_or_else(|| format!("{t:?} is not a {what}"))
}

/// Earliest timestamp accepted (1970-01-01).
pub const MIN_TIME: i64 = 0;
/// Latest timestamp accepted (2100-01-01T00:00:00Z).
pub const MAX_TIME: i64 = 4_102_444_800;
/// Longest string field, in bytes.
pub const MAX_STRING: usize = 256;
/// Longest UDI, in bytes.
pub const MAX_UDI: usize = 128;
/// Largest `usage_hours` (100 years).
pub const MAX_USAGE_HOURS: i64 = 876_600;
/// Largest `sync_frequency_seconds` (one week).
pub const MAX_SYNC_FREQUENCY: i64 = 604_800;

/// One device's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Unique Device Identifier: the record's key.
    pub udi: String,
    /// Owning hospital.
    pub hospital: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Firmware version.
    pub firmware_version: String,
    /// Device type ("ECG Monitor", ...).
    pub device_type: String,
    /// Production date (Unix seconds).
    pub production_date: i64,
    /// Last service (Unix seconds).
    pub last_service_date: i64,
    /// Warranty expiry (Unix seconds).
    pub warranty_expiry_date: i64,
    /// Last synchronisation (Unix seconds).
    pub last_sync_time: i64,
    /// Hours in use.
    pub usage_hours: i64,
    /// Battery level, percent.
    pub battery_level: i64,
    /// Seconds between synchronisations.
    pub sync_frequency_seconds: i64,
    /// In service.
    pub active_status: bool,
    /// `MedicalSpeciality` value, 0..=55.
    pub speciality: u8,
    /// `DeviceCategory` value, 0..=2.
    pub category: u8,
}

/// The store key of a UDI: a name-based UUID (SHA-256 of the UDI, truncated to 16 bytes, with
/// the RFC 9562 version-8 and variant bits set), so the same UDI always lands on the same record.
pub fn device_key(udi: &str) -> [u8; 16] {
    let d = Sha256::digest(udi.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k[6] = (k[6] & 0x0f) | 0x80;
    k[8] = (k[8] & 0x3f) | 0x80;
    k
}

fn check_string(field: &str, v: &str, required: bool) -> Result<(), String> {
    if required && v.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    if v.len() > MAX_STRING {
        return Err(format!("{field} is longer than {MAX_STRING} bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

fn check_range(field: &str, v: i64, lo: i64, hi: i64) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(format!("{field} = {v} is outside {lo}..={hi}"));
    }
    Ok(())
}

impl Device {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.udi.trim().is_empty() || self.udi.len() > MAX_UDI {
            return Err(format!("udi must be 1 to {MAX_UDI} bytes"));
        }
        if self.udi.chars().any(char::is_control) {
            return Err("udi contains control characters".into());
        }
        check_string("hospital", &self.hospital, true)?;
        check_string("manufacturer", &self.manufacturer, false)?;
        check_string("model", &self.model, false)?;
        check_string("firmware_version", &self.firmware_version, false)?;
        check_string("device_type", &self.device_type, true)?;
        for (f, v) in [
            ("production_date", self.production_date),
            ("last_service_date", self.last_service_date),
            ("warranty_expiry_date", self.warranty_expiry_date),
            ("last_sync_time", self.last_sync_time),
        ] {
            check_range(f, v, MIN_TIME, MAX_TIME)?;
        }
        check_range("usage_hours", self.usage_hours, 0, MAX_USAGE_HOURS)?;
        check_range("battery_level", self.battery_level, 0, 100)?;
        check_range(
            "sync_frequency_seconds",
            self.sync_frequency_seconds,
            0,
            MAX_SYNC_FREQUENCY,
        )?;
        if usize::from(self.speciality) > SPECIALITIES.len() {
            return Err(format!("speciality {} is not 0..=55", self.speciality));
        }
        if usize::from(self.category) > CATEGORIES.len() {
            return Err(format!("category {} is not 0..=2", self.category));
        }
        Ok(())
    }

    /// From the protobuf `DeviceData` (validated separately).
    pub fn from_pb(d: &medtech_protos::data::v1::DeviceData) -> Result<Self, String> {
        let ts = |name: &str, t: &Option<medtech_protos::data::v1::Timestamp>| match t {
            Some(t) => Ok(t.seconds),
            None => Err(format!("{name} is missing")),
        };
        Ok(Device {
            udi: d.udi.clone(),
            hospital: d.hospital.clone(),
            manufacturer: d.manufacturer.clone(),
            model: d.model.clone(),
            firmware_version: d.firmware_version.clone(),
            device_type: d.device_type.clone(),
            production_date: ts("production_date", &d.production_date)?,
            last_service_date: ts("last_service_date", &d.last_service_date)?,
            warranty_expiry_date: ts("warranty_expiry_date", &d.warranty_expiry_date)?,
            last_sync_time: ts("last_sync_time", &d.last_sync_time)?,
            usage_hours: d.usage_hours,
            battery_level: d.battery_level,
            sync_frequency_seconds: d.sync_frequency_seconds,
            active_status: d.active_status,
            speciality: u8::try_from(d.speciality)
                .map_err(|_| format!("speciality {} is not 0..=55", d.speciality))?,
            category: u8::try_from(d.category)
                .map_err(|_| format!("category {} is not 0..=2", d.category))?,
        })
    }

    /// To the protobuf `DeviceData`.
    pub fn to_pb(&self) -> medtech_protos::data::v1::DeviceData {
        let ts = |s: i64| {
            Some(medtech_protos::data::v1::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        medtech_protos::data::v1::DeviceData {
            hospital: self.hospital.clone(),
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            firmware_version: self.firmware_version.clone(),
            device_type: self.device_type.clone(),
            production_date: ts(self.production_date),
            last_service_date: ts(self.last_service_date),
            warranty_expiry_date: ts(self.warranty_expiry_date),
            last_sync_time: ts(self.last_sync_time),
            usage_hours: self.usage_hours,
            battery_level: self.battery_level,
            sync_frequency_seconds: self.sync_frequency_seconds,
            active_status: self.active_status,
            speciality: i32::from(self.speciality),
            category: i32::from(self.category),
            udi: self.udi.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_speciality_numbers_the_brief_fixes_hold() {
        assert_eq!(parse_speciality("ALLERGY_AND_IMMUNOLOGY").unwrap(), 1);
        assert_eq!(parse_speciality("cardiology").unwrap(), 21);
        assert_eq!(parse_speciality("CLINICAL_NEUROPHYSIOLOGY").unwrap(), 55);
        assert_eq!(speciality_name(21), "CARDIOLOGY");
        assert!(parse_speciality("56").is_err());
        assert!(parse_speciality("PODIATRY").is_err());
        let mut names: Vec<_> = SPECIALITIES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 55, "names are distinct");
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(device_key("UDI-1"), device_key("UDI-1"));
        assert_ne!(device_key("UDI-1"), device_key("UDI-2"));
        assert_eq!(device_key("x")[6] >> 4, 8, "version 8");
    }
}
