//! A ceremony across processes: three `medtech-ceremony join` processes on loopback, mutually
//! authenticated TLS, pinned certificates and identity keys (512-bit key).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use medtech_ceremony::files::load_key;
use medtech_ceremony::sharefile::{open, parse_key_file, Unlock};
use medtech_ceremony::transcript::verify;
use medtech_threshold::Plaintext;
use rand_core::OsRng;

mod common;
use common::{cli, keygen, BIN};

/// Keys and a configuration for three parties in `dir`.
fn prepare(dir: &Path) {
    let members: Vec<String> = (1..=3).map(|i| keygen(dir, i)).collect();
    let config = dir.join("ceremony.json");
    let mut args = vec![
        "config",
        "--bits",
        "512",
        "--threshold",
        "2",
        "--out",
        config.to_str().unwrap(),
    ];
    args.extend(members.iter().map(String::as_str));
    cli(&args);
}

fn join(dir: &Path, i: u16, timeout: &str) -> Child {
    Command::new(BIN)
        .args([
            "join",
            "--config",
            dir.join("ceremony.json").to_str().unwrap(),
            "--index",
            &i.to_string(),
            "--keys",
            dir.join(format!("keys-{i}")).to_str().unwrap(),
            "--out",
            dir.join(format!("out-{i}")).to_str().unwrap(),
            "--round-timeout",
            timeout,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn three_processes_over_tls_produce_one_verified_key() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let children: Vec<Child> = (1..=3).map(|i| join(dir.path(), i, "60")).collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t: Vec<Vec<u8>> = (1..=3)
        .map(|i| std::fs::read(dir.path().join(format!("out-{i}/transcript.json"))).unwrap())
        .collect();
    assert!(
        t[0] == t[1] && t[1] == t[2],
        "every party wrote the same transcript"
    );
    let key = load_key(&dir.path().join("out-1/threshold-key.json")).unwrap();
    let verdict = verify(&t[0], None, Some(&key));
    assert!(verdict.ok(), "{verdict:?}");
    // Parties 1 and 3 test-decrypt with their own sealed shares.
    let c = key
        .public_key()
        .encrypt(&Plaintext::from_i64(8_675_309), &mut OsRng)
        .unwrap();
    let partials: Vec<_> = [1, 3]
        .iter()
        .map(|i| {
            let out = dir.path().join(format!("out-{i}"));
            let k = parse_key_file(&std::fs::read(out.join("share.key")).unwrap()).unwrap();
            let s = open(
                &std::fs::read(out.join("share.json")).unwrap(),
                &key,
                &Unlock::Key(&k),
            )
            .unwrap();
            s.partial_decrypt(&key, b"join-test", &c, &mut OsRng)
                .unwrap()
        })
        .collect();
    let out = key.combine_partials(b"join-test", &c, &partials).unwrap();
    assert_eq!(out.decryption.plaintext, Plaintext::from_i64(8_675_309));
}

#[test]
fn an_absent_party_is_named_when_the_round_times_out() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    // Party 3 never starts.
    let children: Vec<Child> = (1..=2).map(|i| join(dir.path(), i, "3")).collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("party 3") || err.contains("[3]"), "{err}");
    }
}

#[test]
fn keys_that_are_not_the_pinned_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    // Party 2 runs with freshly made keys instead of the ones the configuration pins.
    let other = dir.path().join("impostor");
    cli(&[
        "keygen",
        "--index",
        "2",
        "--name",
        "hospital-2",
        "--address",
        "127.0.0.1:1",
        "--out",
        other.to_str().unwrap(),
    ]);
    let out = Command::new(BIN)
        .args([
            "join",
            "--config",
            dir.path().join("ceremony.json").to_str().unwrap(),
            "--index",
            "2",
            "--keys",
            other.to_str().unwrap(),
            "--out",
            dir.path().join("out-2").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the identity key"));
}
