//! Device ingest and local query evaluation, against a plain reference over the same records.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_federation::data::generate::devices;
use medtech_federation::data::ingest::{parse, to_csv, Format};
use medtech_federation::data::{Device, DeviceStore};
use medtech_federation::query::{Compiled, Filter, Op, Platform, QueryKind, QuerySpec};
use medtech_protos::Message as _;

fn platform() -> Platform {
    Platform::new(&["h1".to_owned(), "h2".to_owned()])
}

#[test]
fn json_ndjson_csv_and_protobuf_uploads_give_the_same_devices() {
    let ds = devices("h1", 0, 50, 3);
    let json = serde_json::to_vec(&ds).unwrap();
    let ndjson: Vec<u8> = ds
        .iter()
        .flat_map(|d| {
            let mut l = serde_json::to_vec(d).unwrap();
            l.push(b'\n');
            l
        })
        .collect();
    let csv = to_csv(&ds).unwrap();
    let batch = medtech_protos::data::v1::DeviceBatch {
        devices: ds.iter().map(Device::to_pb).collect(),
    }
    .encode_to_vec();
    let mut delimited = Vec::new();
    for d in &ds {
        d.to_pb().encode_length_delimited(&mut delimited).unwrap();
    }
    for (f, bytes) in [
        (Format::Json, json),
        (Format::Ndjson, ndjson),
        (Format::Csv, csv),
        (Format::Protobuf, batch),
        (Format::Protobuf, delimited),
    ] {
        let p = parse(f, &bytes).unwrap();
        assert!(p.errors.is_empty(), "{f:?}: {:?}", p.errors);
        let got: Vec<Device> = p.devices.into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, ds, "{f:?}");
    }
}

#[test]
fn bad_records_are_reported_one_by_one_and_the_rest_are_kept() {
    let good = serde_json::to_value(&devices("h1", 0, 1, 1)[0]).unwrap();
    let mut bad_battery = good.clone();
    bad_battery["battery_level"] = 101.into();
    bad_battery["udi"] = "U-2".into();
    let mut bad_enum = good.clone();
    bad_enum["speciality"] = "PODIATRY".into();
    bad_enum["udi"] = "U-3".into();
    let mut extra = good.clone();
    extra["colour"] = "red".into();
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("last_sync_time");
    let body =
        serde_json::to_vec(&vec![good, bad_battery, bad_enum, extra, missing, 7.into()]).unwrap();
    let p = parse(Format::Json, &body).unwrap();
    assert_eq!(p.devices.len(), 1);
    let msgs: Vec<(u64, String)> = p
        .errors
        .iter()
        .map(|e| (e.record, e.error.clone()))
        .collect();
    assert_eq!(msgs.len(), 5, "{msgs:?}");
    assert!(msgs[0].1.contains("battery_level = 101"), "{msgs:?}");
    assert_eq!(p.errors[0].udi.as_deref(), Some("U-2"));
    assert!(msgs[1].1.contains("PODIATRY"), "{msgs:?}");
    assert!(msgs[2].1.contains("unknown field \"colour\""), "{msgs:?}");
    assert!(
        msgs[3].1.contains("missing field last_sync_time"),
        "{msgs:?}"
    );
    assert_eq!(msgs[4].0, 6);
    // Whole-upload failures are errors, not panics.
    for (f, b) in [
        (Format::Json, b"{not json".to_vec()),
        (Format::Json, b"42".to_vec()),
        (Format::Ndjson, vec![0xff, 0xfe]),
        (Format::Protobuf, vec![0xff; 9]),
    ] {
        assert!(parse(f, &b).is_err(), "{f:?}");
    }
    // A CSV row with a bad value names its line (the header is line 1).
    let mut csv = to_csv(&devices("h1", 0, 2, 1)).unwrap();
    csv.extend_from_slice(b"x,h1,m,m,f,ECG Monitor,yesterday,0,0,0,1,1,1,true,1,1\n");
    let p = parse(Format::Csv, &csv).unwrap();
    assert_eq!(p.devices.len(), 2);
    assert_eq!(p.errors[0].record, 4);
    assert!(
        p.errors[0].error.contains("production_date"),
        "{:?}",
        p.errors
    );
}

#[test]
fn a_second_record_with_the_same_udi_updates_the_device_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut ds = devices("h1", 0, 100, 5);
    {
        let mut s = DeviceStore::open(dir.path()).unwrap();
        let w = s.write(&ds, |_, _| {}).unwrap();
        assert_eq!((w.inserted, w.updated), (100, 0));
        ds[7].battery_level = 3;
        let w = s.write(&ds[5..10], |_, _| {}).unwrap();
        assert_eq!((w.inserted, w.updated), (0, 5));
        assert_eq!(s.len(), 100);
    }
    let s = DeviceStore::open(dir.path()).unwrap();
    assert_eq!(s.len(), 100);
    assert_eq!(s.get(&ds[7].udi).unwrap().unwrap().battery_level, 3);
}

#[test]
fn an_upload_that_names_one_udi_twice_and_spans_batches_keeps_one_row_per_device() {
    // A UDI repeated inside one upload, and records beyond one transaction (BATCH = 20,000):
    // every device keeps one row, the last record wins, and a reopen reads the same columns.
    let dir = tempfile::tempdir().unwrap();
    let mut ds = devices("h1", 0, 20_050, 6);
    let mut again = ds[3].clone();
    again.usage_hours = 4321;
    ds.push(again);
    let mut later = ds[20_010].clone();
    later.battery_level = 1;
    ds.push(later);
    {
        let mut s = DeviceStore::open(dir.path()).unwrap();
        let w = s.write(&ds, |_, _| {}).unwrap();
        assert_eq!((w.inserted, w.updated), (20_050, 2));
        assert_eq!(s.len(), 20_050);
    }
    let s = DeviceStore::open(dir.path()).unwrap();
    assert_eq!(s.len(), 20_050);
    assert_eq!(s.get(&ds[3].udi).unwrap().unwrap().usage_hours, 4321);
    assert_eq!(s.get(&ds[20_010].udi).unwrap().unwrap().battery_level, 1);
    assert_eq!(s.get(&ds[20_049].udi).unwrap().unwrap(), ds[20_049]);
    assert!(s.get("no-such-udi").unwrap().is_none());
}

#[test]
fn a_store_written_by_the_sled_version_is_imported_once_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ds = devices("h2", 0, 300, 7);
    {
        // The earlier layout: one sled tree "devices", UDI key → postcard record.
        let db = sled::open(dir.path()).unwrap();
        let t = db.open_tree("devices").unwrap();
        for d in &ds {
            t.insert(
                medtech_federation::data::device::device_key(&d.udi),
                postcard::to_allocvec(d).unwrap(),
            )
            .unwrap();
        }
        db.flush().unwrap();
    }
    let mut extra = devices("h2", 300, 1, 8);
    {
        let mut s = DeviceStore::open(dir.path()).unwrap();
        assert_eq!(s.len(), 300);
        for d in &ds {
            assert_eq!(&s.get(&d.udi).unwrap().unwrap(), d);
        }
        // Written after the import: must survive, and the import must not run again.
        extra[0].usage_hours = 77;
        s.write(&extra, |_, _| {}).unwrap();
    }
    let s = DeviceStore::open(dir.path()).unwrap();
    assert_eq!(s.len(), 301);
    assert_eq!(s.get(&extra[0].udi).unwrap().unwrap().usage_hours, 77);
}

#[test]
fn a_foreign_or_corrupt_database_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("devices.redb"), b"not a database at all").unwrap();
    assert!(DeviceStore::open(dir.path()).is_err());
}

fn reference(ds: &[Device], keep: impl Fn(&Device) -> bool) -> Vec<&Device> {
    ds.iter().filter(|d| keep(d)).collect()
}

#[test]
fn local_evaluation_matches_a_plain_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut ds = devices("h1", 0, 2_000, 11);
    ds.extend(devices("h2", 0, 500, 12));
    let mut s = DeviceStore::open(dir.path()).unwrap();
    s.write(&ds, |_, _| {}).unwrap();
    let p = platform();
    let q = |kind, target: Option<&str>, filters: Vec<Filter>| {
        Compiled::new(
            QuerySpec {
                kind,
                target: target.map(str::to_owned),
                filters,
                start_time: Some(serde_json::json!("2018-01-01T00:00:00Z")),
                end_time: None,
                epsilon: 1.0,
            },
            &p,
            5,
            3,
        )
        .unwrap()
    };
    let since_2018 = |d: &Device| d.last_sync_time >= 1_514_764_800;
    let f = |field: &str, op, value: serde_json::Value| Filter {
        field: field.into(),
        op,
        value,
    };

    // COUNT counts devices, with string, integer, bool and enum filters.
    let c = q(
        QueryKind::Count,
        Some("manufacturer"),
        vec![
            f("manufacturer", Op::StartsWith, "Med".into()),
            f("usage_hours", Op::GreaterThanOrEqual, 5000.into()),
            f("active_status", Op::Equals, true.into()),
            f("category", Op::Equals, "WEARABLE".into()),
        ],
    );
    let want = reference(&ds, |d| {
        since_2018(d)
            && d.manufacturer.starts_with("Med")
            && d.usage_hours >= 5000
            && d.active_status
            && d.category == 2
    })
    .len() as i128;
    assert!(want > 0);
    assert_eq!(c.evaluate(s.columns()), vec![want]);

    // Grouped by speciality: every one of the 56 bins, empty ones included.
    let g = q(
        QueryKind::GroupedCount,
        Some("speciality"),
        vec![f("device_type", Op::Contains, "Monitor".into())],
    );
    let mut bins = vec![0i128; 56];
    for d in reference(&ds, |d| since_2018(d) && d.device_type.contains("Monitor")) {
        bins[usize::from(d.speciality)] += 1;
    }
    assert_eq!(g.evaluate(s.columns()), bins);
    assert_eq!(g.labels.len(), 56);

    // Grouped by hospital: the public list plus "(other)".
    let h = q(QueryKind::GroupedCount, Some("hospital"), vec![]);
    let got = h.evaluate(s.columns());
    assert_eq!(got.len(), 3);
    assert_eq!(got[2], 0);
    assert_eq!(
        got.iter().sum::<i128>(),
        reference(&ds, since_2018).len() as i128
    );

    // Average of a timestamp in days, with a timestamp filter.
    let a = q(
        QueryKind::Average,
        Some("warranty_expiry_date"),
        vec![f(
            "production_date",
            Op::Before,
            "2020-01-01T00:00:00Z".into(),
        )],
    );
    let sel = reference(&ds, |d| since_2018(d) && d.production_date < 1_577_836_800);
    let centre = (10_957 + 25_567) / 2;
    let sum: i128 = sel
        .iter()
        .map(|d| {
            i128::from(
                d.warranty_expiry_date
                    .div_euclid(86_400)
                    .clamp(10_957, 25_567)
                    - centre,
            )
        })
        .sum();
    assert_eq!(a.evaluate(s.columns()), vec![sum, sel.len() as i128]);
    // The slot encoding round-trips through the recombination.
    let slots = a.contribution_slots(&[sum, sel.len() as i128]).unwrap();
    // Each committed value lands in its slot at its bit offset (the limbs share one slot).
    let mut totals = vec![0i128; a.slots()];
    for (&v, (slot, shift)) in slots.iter().zip(a.placement()) {
        totals[slot] += i128::from(v) << shift;
    }
    assert_eq!(
        a.raw_outputs(&totals, 1).unwrap(),
        vec![vec![sum], vec![sel.len() as i128]]
    );
}

#[test]
fn queries_outside_the_platform_interface_are_refused() {
    let p = platform();
    let spec = |kind, target: Option<&str>, filters: Vec<Filter>, epsilon: f64| QuerySpec {
        kind,
        target: target.map(str::to_owned),
        filters,
        start_time: None,
        end_time: None,
        epsilon,
    };
    let f = |field: &str, op| Filter {
        field: field.into(),
        op,
        value: "x".into(),
    };
    for (s, why) in [
        (
            spec(QueryKind::Average, Some("hospital"), vec![], 1.0),
            "average may not target",
        ),
        (
            spec(QueryKind::GroupedCount, Some("model"), vec![], 1.0),
            "grouped count may not target",
        ),
        (
            spec(QueryKind::GroupedCount, None, vec![], 1.0),
            "needs a target",
        ),
        (spec(QueryKind::Count, None, vec![], 0.0), "epsilon"),
        (spec(QueryKind::Count, None, vec![], f64::NAN), "epsilon"),
        (spec(QueryKind::Count, None, vec![], 50.0), "epsilon"),
        (
            spec(
                QueryKind::Count,
                None,
                vec![f("usage_hours", Op::Contains)],
                1.0,
            ),
            "does not apply",
        ),
        (
            spec(QueryKind::Count, None, vec![f("udi", Op::Equals)], 1.0),
            "udi",
        ),
        (
            spec(QueryKind::Count, None, vec![f("colour", Op::Equals)], 1.0),
            "unknown field",
        ),
        (
            spec(
                QueryKind::Count,
                None,
                vec![f("last_sync_time", Op::After)],
                1.0,
            ),
            "RFC 3339",
        ),
    ] {
        let err = Compiled::new(s, &p, 5, 3).unwrap_err().to_string();
        assert!(err.contains(why), "{err} (wanted {why})");
    }
    // Unknown JSON fields in a query are refused at parse time.
    assert!(
        serde_json::from_str::<QuerySpec>(r#"{"kind":"count","epsilon":1,"extra":1}"#).is_err()
    );
}
