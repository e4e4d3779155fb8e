//! The project's Fabric subset (`proto/fabric/{gateway,chaincode_shim}.proto`) against the real
//! schema.
//!
//! The subset is written by hand (the project does not copy upstream `.proto` files), so it can
//! share its authors' mistakes; one did: `EndorseResponse` kept the pre-2.4 schema and no real
//! peer's reply decoded. This test compiles both the subset and the real `hyperledger/fabric-protos`
//! sources shipped in `../shared/fabric/protos` with `protoc`, and checks every message, enum and
//! RPC the project declares, field by field — number, name, type, label and referenced type —
//! against the real one of the same name.
//!
//! Where the real sources are absent the test says so and passes, except under `CI=true`, where a
//! missing copy is a failure (CI always has `shared/` beside the checkout).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

/// The real sources: `$MEDTECH_FABRIC_DIR/protos`, or `shared/fabric/protos` beside an ancestor of
/// this crate.
fn real_protos() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("MEDTECH_FABRIC_DIR") {
        return Some(PathBuf::from(d).join("protos"));
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/fabric/protos"))
        .find(|p| p.join("gateway/gateway.proto").is_file())
}

/// The directory holding `google/protobuf/timestamp.proto` (Debian's `libprotobuf-dev`).
fn well_known_include() -> Option<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/usr/include"),
        PathBuf::from("/usr/local/include"),
    ];
    if let Ok(d) = std::env::var("PROTOC_INCLUDE") {
        dirs.insert(0, PathBuf::from(d));
    }
    dirs.into_iter()
        .find(|d| d.join("google/protobuf/timestamp.proto").is_file())
}

fn compile(includes: &[&Path], files: &[&str], out: &Path) -> FileDescriptorSet {
    let protoc = std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into());
    let mut cmd = Command::new(&protoc);
    cmd.arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()));
    for i in includes {
        cmd.arg(format!("-I{}", i.display()));
    }
    cmd.args(files);
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {protoc}: {e}"));
    assert!(
        o.status.success(),
        "protoc {files:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    FileDescriptorSet::decode(std::fs::read(out).unwrap().as_slice()).unwrap()
}

/// Every message, enum and service of a descriptor set, by name relative to its package
/// (`ChaincodeSpec.Type`), with the package it lives in.
#[derive(Default)]
struct Index {
    messages: BTreeMap<String, Vec<(String, DescriptorProto)>>,
    enums: BTreeMap<String, Vec<(String, EnumDescriptorProto)>>,
    services: BTreeMap<String, Vec<(String, ServiceDescriptorProto)>>,
}

impl Index {
    fn of(set: &FileDescriptorSet) -> Index {
        let mut ix = Index::default();
        for f in &set.file {
            let pkg = f.package().to_owned();
            for m in &f.message_type {
                ix.add_message(&pkg, "", m);
            }
            for e in &f.enum_type {
                ix.enums
                    .entry(e.name().to_owned())
                    .or_default()
                    .push((pkg.clone(), e.clone()));
            }
            for s in &f.service {
                ix.services
                    .entry(s.name().to_owned())
                    .or_default()
                    .push((pkg.clone(), s.clone()));
            }
        }
        ix
    }

    fn add_message(&mut self, pkg: &str, prefix: &str, m: &DescriptorProto) {
        let name = format!("{prefix}{}", m.name());
        for n in &m.nested_type {
            self.add_message(pkg, &format!("{name}."), n);
        }
        for e in &m.enum_type {
            self.enums
                .entry(format!("{name}.{}", e.name()))
                .or_default()
                .push((pkg.to_owned(), e.clone()));
        }
        self.messages
            .entry(name)
            .or_default()
            .push((pkg.to_owned(), m.clone()));
    }
}

/// The real packages, in the order a name is looked up when two define it.
const REAL_PACKAGES: [&str; 5] = ["gateway", "protos", "common", "msp", "google.protobuf"];

fn pick<T>(candidates: Option<&Vec<(String, T)>>) -> Option<&(String, T)> {
    let c = candidates?;
    REAL_PACKAGES
        .iter()
        .find_map(|p| c.iter().find(|(pkg, _)| pkg == p))
}

/// `.protos.ChaincodeSpec.Type` -> `ChaincodeSpec.Type`, given every package of the set.
fn relative(type_name: &str, packages: &[String]) -> String {
    let t = type_name.trim_start_matches('.');
    packages
        .iter()
        .filter(|p| t.starts_with(&format!("{p}.")))
        .max_by_key(|p| p.len())
        .map(|p| t[p.len() + 1..].to_owned())
        .unwrap_or_else(|| t.to_owned())
}

fn describe(f: &FieldDescriptorProto, packages: &[String]) -> String {
    let ty = match f.r#type() {
        Type::Message | Type::Enum => relative(f.type_name(), packages),
        other => format!("{other:?}"),
    };
    let label = if f.label() == Label::Repeated {
        "repeated "
    } else {
        ""
    };
    format!("{label}{ty} {} = {}", f.name(), f.number())
}

fn packages(set: &FileDescriptorSet) -> Vec<String> {
    set.file.iter().map(|f| f.package().to_owned()).collect()
}

/// Every difference between `ours` and `real`, as readable lines.
fn differences(ours: &FileDescriptorSet, real: &FileDescriptorSet) -> Vec<String> {
    let (ours_pk, real_pk) = (packages(ours), packages(real));
    let (o, r) = (Index::of(ours), Index::of(real));
    let mut out = Vec::new();
    for (name, list) in &o.messages {
        // Map entries are checked through their map field's type name and their own fields.
        let Some((_, mine)) = list.first() else {
            continue;
        };
        let Some((pkg, theirs)) = pick(r.messages.get(name)) else {
            out.push(format!("message {name}: no real message of that name"));
            continue;
        };
        for f in &mine.field {
            let want = describe(f, &ours_pk);
            match theirs.field.iter().find(|g| g.number() == f.number()) {
                None => out.push(format!(
                    "{pkg}.{name}: field {} ({want}) does not exist in the real message",
                    f.number()
                )),
                Some(g) => {
                    let got = describe(g, &real_pk);
                    if got != want {
                        out.push(format!(
                            "{pkg}.{name}: field {}: ours `{want}`, real `{got}`",
                            f.number()
                        ));
                    }
                }
            }
        }
    }
    for (name, list) in &o.enums {
        let Some((_, mine)) = list.first() else {
            continue;
        };
        let Some((pkg, theirs)) = pick(r.enums.get(name)) else {
            out.push(format!("enum {name}: no real enum of that name"));
            continue;
        };
        for v in &mine.value {
            let same = theirs
                .value
                .iter()
                .any(|w| w.number() == v.number() && w.name() == v.name());
            if !same {
                out.push(format!(
                    "{pkg}.{name}: value {} = {} is not in the real enum",
                    v.name(),
                    v.number()
                ));
            }
        }
    }
    for (name, list) in &o.services {
        let Some((_, mine)) = list.first() else {
            continue;
        };
        let Some((pkg, theirs)) = pick(r.services.get(name)) else {
            out.push(format!("service {name}: no real service of that name"));
            continue;
        };
        for m in &mine.method {
            let want = (
                relative(m.input_type(), &ours_pk),
                relative(m.output_type(), &ours_pk),
            );
            match theirs.method.iter().find(|x| x.name() == m.name()) {
                None => out.push(format!("{pkg}.{name}: no method {}", m.name())),
                Some(x) => {
                    let got = (
                        relative(x.input_type(), &real_pk),
                        relative(x.output_type(), &real_pk),
                    );
                    if got != want {
                        out.push(format!(
                            "{pkg}.{name}.{}: ours {want:?}, real {got:?}",
                            m.name()
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The real files holding every message the subset declares (with their imports).
const REAL_FILES: [&str; 7] = [
    "gateway/gateway.proto",
    "peer/chaincode_shim.proto",
    "common/common.proto",
    "msp/identities.proto",
    "peer/proposal.proto",
    "peer/transaction.proto",
    "peer/chaincode.proto",
];

#[test]
fn every_fabric_message_the_project_uses_matches_the_real_schema_field_by_field() {
    let Some(real_dir) = real_protos() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the real Fabric protos (shared/fabric/protos) are missing"
        );
        eprintln!("SKIPPED: no shared/fabric/protos beside the checkout (set MEDTECH_FABRIC_DIR)");
        return;
    };
    let wkt = well_known_include().expect(
        "google/protobuf/timestamp.proto not found: install libprotobuf-dev (scripts/setup.sh)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let ours_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let ours = compile(
        &[&ours_dir],
        &["fabric/gateway.proto", "fabric/chaincode_shim.proto"],
        &tmp.path().join("ours.pb"),
    );
    let real = compile(&[&real_dir, &wkt], &REAL_FILES, &tmp.path().join("real.pb"));
    let diffs = differences(&ours, &real);
    assert!(
        diffs.is_empty(),
        "the Fabric subset differs from the real schema:\n  {}",
        diffs.join("\n  ")
    );
}

/// The comparison can fail: a subset with the pre-2.4 `EndorseResponse` (the defect this test was
/// written for), a renumbered field, a retyped field and an invented message are each reported.
#[test]
fn the_schema_check_reports_a_stale_or_invented_message() {
    let Some(real_dir) = real_protos() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the real Fabric protos (shared/fabric/protos) are missing"
        );
        eprintln!("SKIPPED: no shared/fabric/protos beside the checkout");
        return;
    };
    let wkt = well_known_include().expect("install libprotobuf-dev (scripts/setup.sh)");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("stale.proto"),
        r#"syntax = "proto3";
package gateway;
message Envelope { bytes payload = 1; bytes signature = 2; }
message Response { int32 status = 1; string message = 2; bytes payload = 3; }
message EndorseResponse { Response result = 1; Envelope prepared_transaction = 2; }
message SignatureHeader { bytes creator = 1; bytes nonce = 3; }
message Header { string channel_header = 1; bytes signature_header = 2; }
message Invented { bytes x = 1; }
"#,
    )
    .unwrap();
    let ours = compile(&[tmp.path()], &["stale.proto"], &tmp.path().join("s.pb"));
    let real = compile(&[&real_dir, &wkt], &REAL_FILES, &tmp.path().join("real.pb"));
    let d = differences(&ours, &real).join("\n");
    for needle in [
        "gateway.EndorseResponse: field 1: ours `Response result = 1`, real `Envelope prepared_transaction = 1`",
        "gateway.EndorseResponse: field 2",
        "common.SignatureHeader: field 3",
        "common.Header: field 1: ours `String channel_header = 1`, real `Bytes channel_header = 1`",
        "message Invented: no real message of that name",
    ] {
        assert!(d.contains(needle), "missing {needle:?} in:\n{d}");
    }
    assert_eq!(d.lines().count(), 5, "{d}");
}
