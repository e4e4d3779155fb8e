//! Parsing device uploads: JSON (an array of records), NDJSON (one record per line), CSV (a
//! header row naming the fields) and protobuf (`DeviceBatch`, or a stream of length-delimited
//! `DeviceData`). Every record is parsed and validated on its own: a bad record is reported
//! with its position and reason and the rest go on.
//!
//! JSON and CSV use the protobuf field names. Timestamps are Unix seconds or RFC 3339
//! (`2024-05-01T12:00:00Z`); `speciality` and `category` are names or numbers; `active_status`
//! is `true`/`false` (CSV also `1`/`0`). Unknown fields are errors, so a misspelt column is
//! caught rather than silently dropped. Every format's UDIs are normalised the same way
//! ([`normalise_udi`]: trimmed, upper-case).

use serde::Serialize;
use serde_json::{Map, Value};

use super::device::{parse_category, parse_speciality, Device};
use medtech_protos::Message as _;

/// An upload's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A JSON array of records (or one record).
    Json,
    /// One JSON record per line.
    Ndjson,
    /// CSV with a header row.
    Csv,
    /// Protobuf `DeviceBatch`, or length-delimited `DeviceData` records.
    Protobuf,
}

impl Format {
    /// From an HTTP content type.
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ct.as_str() {
            "application/json" => Some(Format::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Format::Ndjson)
            }
            "text/csv" => Some(Format::Csv),
            "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
            _ => None,
        }
    }

    /// From a file name's extension.
    pub fn from_path(p: &std::path::Path) -> Option<Format> {
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            "pb" | "bin" | "protobuf" => Some(Format::Protobuf),
            _ => None,
        }
    }
}

/// Why one record was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordError {
    /// 1-based record number (the line for NDJSON and CSV data rows, the element for JSON).
    pub record: u64,
    /// The record's UDI, if it got as far as having one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udi: Option<String>,
    /// What is wrong.
    pub error: String,
}

/// Parsed records and refusals, in input order.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid records with their record numbers.
    pub devices: Vec<(u64, Device)>,
    /// Refused records.
    pub errors: Vec<RecordError>,
}

impl Parsed {
    /// Every format's records pass here: the UDI is normalised ([`normalise_udi`]) once, the
    /// same way whatever the format, and then the record is validated.
    fn push(&mut self, record: u64, r: Result<Device, (Option<String>, String)>) {
        match r.and_then(|mut d| {
            d.udi = normalise_udi(&d.udi);
            match d.validate() {
                Ok(()) => Ok(d),
                Err(e) => Err((Some(d.udi), e)),
            }
        }) {
            Ok(d) => self.devices.push((record, d)),
            Err((udi, error)) => self.errors.push(RecordError { record, udi, error }),
        }
    }

    /// Keeps the records of `hospital`; the others become errors (a member stores only its own
    /// hospital's devices).
    pub fn only_hospital(mut self, hospital: &str) -> Parsed {
        let (own, other): (Vec<_>, Vec<_>) = std::mem::take(&mut self.devices)
            .into_iter()
            .partition(|(_, d)| d.hospital == hospital);
        self.devices = own;
        self.errors
            .extend(other.into_iter().map(|(record, d)| RecordError {
                record,
                error: format!(
                "the record is for hospital {:?}; this member stores {hospital:?}'s devices only",
                d.hospital
            ),
                udi: Some(d.udi),
            }));
        self.errors.sort_by_key(|e| e.record);
        self
    }
}

/// A UDI as the store keys it: surrounding white space trimmed and letters upper-cased, for
/// every upload format, so `" abc-1"` from JSON and `ABC-1` from CSV are one device. (UDI
/// issuing agencies' identifiers are upper-case; none tells two devices apart by case.)
pub fn normalise_udi(udi: &str) -> String {
    udi.trim().to_uppercase()
}

/// The whole upload could not be read (as opposed to a single bad record).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UploadError(pub String);

/// Parses an upload.
pub fn parse(format: Format, bytes: &[u8]) -> Result<Parsed, UploadError> {
    let mut out = Parsed::default();
    match format {
        Format::Json => {
            let v: Value =
                serde_json::from_slice(bytes).map_err(|e| UploadError(format!("not JSON: {e}")))?;
            let items = match v {
                Value::Array(items) => items,
                Value::Object(_) => vec![v],
                _ => return Err(UploadError("expected a JSON array of records".into())),
            };
            for (i, item) in items.into_iter().enumerate() {
                out.push(i as u64 + 1, from_value(item));
            }
        }
        Format::Ndjson => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| UploadError("NDJSON upload is not UTF-8".into()))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let r = serde_json::from_str::<Value>(line)
                    .map_err(|e| (None, format!("not JSON: {e}")))
                    .and_then(from_value);
                out.push(i as u64 + 1, r);
            }
        }
        Format::Csv => {
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(true)
                .trim(csv::Trim::All)
                .from_reader(bytes);
            let headers = rdr
                .headers()
                .map_err(|e| UploadError(format!("CSV header row: {e}")))?
                .clone();
            for (i, row) in rdr.records().enumerate() {
                // Line numbers count the header as line 1.
                let line = i as u64 + 2;
                let r = row
                    .map_err(|e| (None, format!("CSV: {e}")))
                    .and_then(|row| {
                        let mut m = Map::new();
                        for (h, v) in headers.iter().zip(row.iter()) {
                            m.insert(h.to_owned(), Value::String(v.to_owned()));
                        }
                        from_value(Value::Object(m))
                    });
                out.push(line, r);
            }
        }
        Format::Protobuf => {
            let records = decode_protobuf(bytes)?;
            for (i, d) in records.into_iter().enumerate() {
                let udi = (!d.udi.is_empty()).then(|| d.udi.clone());
                let r = Device::from_pb(&d).map_err(|e| (udi, e));
                out.push(i as u64 + 1, r);
            }
        }
    }
    Ok(out)
}

/// A `DeviceBatch`, or else a stream of length-delimited `DeviceData`.
fn decode_protobuf(bytes: &[u8]) -> Result<Vec<medtech_protos::data::v1::DeviceData>, UploadError> {
    use medtech_protos::data::v1::{DeviceBatch, DeviceData};
    if let Ok(b) = DeviceBatch::decode(bytes) {
        if !b.devices.is_empty() || bytes.is_empty() {
            return Ok(b.devices);
        }
    }
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let d = DeviceData::decode_length_delimited(&mut rest).map_err(|e| {
            UploadError(format!(
                "not a DeviceBatch nor length-delimited DeviceData (record {}): {e}",
                out.len() + 1
            ))
        })?;
        out.push(d);
    }
    Ok(out)
}

const FIELDS: [&str; 16] = [
    "udi",
    "hospital",
    "manufacturer",
    "model",
    "firmware_version",
    "device_type",
    "production_date",
    "last_service_date",
    "warranty_expiry_date",
    "last_sync_time",
    "usage_hours",
    "battery_level",
    "sync_frequency_seconds",
    "active_status",
    "speciality",
    "category",
];

fn from_value(v: Value) -> Result<Device, (Option<String>, String)> {
    let Value::Object(m) = v else {
        return Err((None, "a record must be a JSON object".into()));
    };
    let udi = m.get("udi").and_then(Value::as_str).map(str::to_owned);
    // Validated in `Parsed::push`, after the UDI is normalised.
    convert(&m).map_err(|e| (udi, e))
}

fn convert(m: &Map<String, Value>) -> Result<Device, String> {
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field {k:?}"));
    }
    let get = |f: &str| m.get(f).ok_or_else(|| format!("missing field {f}"));
    let string = |f: &str| match get(f)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{f} must be a string, not {other}")),
    };
    let int = |f: &str| match get(f)? {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{f} must be an integer")),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("{f} = {s:?} is not an integer")),
        other => Err(format!("{f} must be an integer, not {other}")),
    };
    let time = |f: &str| match get(f)? {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{f} must be whole Unix seconds")),
        Value::String(s) => parse_time(s).map_err(|e| format!("{f}: {e}")),
        other => Err(format!("{f} must be a timestamp, not {other}")),
    };
    let boolean = |f: &str| match get(f)? {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("{f} = {s:?} is not true or false")),
        },
        other => Err(format!("{f} must be true or false, not {other}")),
    };
    let enumeration = |f: &str, parse: fn(&str) -> Result<u8, String>| match get(f)? {
        Value::Number(n) => parse(&n.to_string()).map_err(|e| format!("{f}: {e}")),
        Value::String(s) => parse(s).map_err(|e| format!("{f}: {e}")),
        other => Err(format!("{f} must be a name or number, not {other}")),
    };
    Ok(Device {
        udi: string("udi")?,
        hospital: string("hospital")?,
        manufacturer: string("manufacturer")?,
        model: string("model")?,
        firmware_version: string("firmware_version")?,
        device_type: string("device_type")?,
        production_date: time("production_date")?,
        last_service_date: time("last_service_date")?,
        warranty_expiry_date: time("warranty_expiry_date")?,
        last_sync_time: time("last_sync_time")?,
        usage_hours: int("usage_hours")?,
        battery_level: int("battery_level")?,
        sync_frequency_seconds: int("sync_frequency_seconds")?,
        active_status: boolean("active_status")?,
        speciality: enumeration("speciality", parse_speciality)?,
        category: enumeration("category", parse_category)?,
    })
}

/// Unix seconds, or an RFC 3339 timestamp.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Ok(v);
    }
    let st = humantime::parse_rfc3339_weak(t)
        .map_err(|e| format!("{t:?} is neither Unix seconds nor RFC 3339 ({e})"))?;
    let secs = st
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{t:?} is before 1970"))?
        .as_secs();
    i64::try_from(secs).map_err(|_| format!("{t:?} is too far in the future"))
}

/// A timestamp as RFC 3339 (for CSV/JSON output).
pub fn format_time(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Writes devices as CSV with the header row [`parse`] reads.
pub fn to_csv(devices: &[Device]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(FIELDS)?;
    for d in devices {
        w.write_record([
            d.udi.clone(),
            d.hospital.clone(),
            d.manufacturer.clone(),
            d.model.clone(),
            d.firmware_version.clone(),
            d.device_type.clone(),
            format_time(d.production_date),
            format_time(d.last_service_date),
            format_time(d.warranty_expiry_date),
            format_time(d.last_sync_time),
            d.usage_hours.to_string(),
            d.battery_level.to_string(),
            d.sync_frequency_seconds.to_string(),
            d.active_status.to_string(),
            super::device::speciality_name(d.speciality).to_owned(),
            super::device::category_name(d.category).to_owned(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_udi_written_differently_in_each_format_is_one_device() {
        let mut d = crate::data::generate::devices("hospital-a", 0, 1, 1).remove(0);
        let udis = ["  gs1-0123-abc ", "GS1-0123-ABC", "Gs1-0123-aBc\t"];
        let mut seen = Vec::new();
        for (i, udi) in udis.iter().enumerate() {
            d.udi = (*udi).to_owned();
            let (format, bytes) = match i {
                0 => (Format::Json, serde_json::to_vec(&[&d]).unwrap()),
                1 => (Format::Csv, to_csv(std::slice::from_ref(&d)).unwrap()),
                _ => (
                    Format::Protobuf,
                    medtech_protos::data::v1::DeviceBatch {
                        devices: vec![d.to_pb()],
                    }
                    .encode_to_vec(),
                ),
            };
            let p = parse(format, &bytes).unwrap();
            assert!(p.errors.is_empty(), "{format:?}: {:?}", p.errors);
            seen.push(p.devices[0].1.udi.clone());
        }
        let line = serde_json::to_string(&d).unwrap();
        let p = parse(Format::Ndjson, line.as_bytes()).unwrap();
        seen.push(p.devices[0].1.udi.clone());
        assert!(seen.iter().all(|u| u == "GS1-0123-ABC"), "{seen:?}");
    }
}
