//! Re-sharing across processes: a 3-member committee (t = 2) from a dealer-free ceremony moves
//! its key to a new committee where member 3 has left and a new hospital has joined, with one
//! `medtech-ceremony reshare` process per participant over mutually authenticated TLS (512-bit
//! key).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use medtech_ceremony::files::load_key;
use medtech_ceremony::reshare::verify_reshare;
use medtech_ceremony::sharefile::{open, parse_key_file, Unlock};
use medtech_threshold::{KeyShare, Plaintext, ThresholdPublicKey};
use rand_core::OsRng;

mod common;
use common::{cli, keygen, BIN};

fn p(dir: &Path, rel: &str) -> String {
    dir.join(rel).to_str().unwrap().to_string()
}

/// A ceremony of 3 (t = 2) in `dir/ceremony`, ceremony keys for three re-sharing participants,
/// and the configuration: old 1 → new 1, old 2 → new 2 (both deal), a newcomer → new 3; old
/// member 3 leaves.
fn prepare(dir: &Path) {
    cli(&[
        "run",
        "--parties",
        "3",
        "--threshold",
        "2",
        "--bits",
        "512",
        "--in-process",
        "--out",
        &p(dir, "ceremony"),
    ]);
    for i in 1..=3 {
        keygen(dir, i);
    }
    cli(&[
        "reshare-config",
        "--key",
        &p(dir, "ceremony/threshold-key.json"),
        "--dealers",
        "1,2",
        "--threshold",
        "2",
        "--out",
        &p(dir, "reshare.json"),
        "--participant",
        &format!("{}:1:1", p(dir, "keys-1/member.json")),
        "--participant",
        &format!("{}:2:2", p(dir, "keys-2/member.json")),
        "--participant",
        &format!("{}:-:3", p(dir, "keys-3/member.json")),
    ]);
}

/// Participant `i`, dealing with old member `share`'s share file when given.
fn reshare(dir: &Path, i: u16, share: Option<u16>, timeout: &str) -> Child {
    let mut args = vec![
        "reshare".to_string(),
        "--config".into(),
        p(dir, "reshare.json"),
        "--index".into(),
        i.to_string(),
        "--keys".into(),
        p(dir, &format!("keys-{i}")),
        "--out".into(),
        p(dir, &format!("out-{i}")),
        "--round-timeout".into(),
        timeout.into(),
    ];
    if let Some(s) = share {
        args.extend([
            "--share".into(),
            p(dir, &format!("ceremony/party-{s}/share.json")),
            "--share-key".into(),
            p(dir, &format!("ceremony/party-{s}/share.key")),
        ]);
    }
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn share(dir: &Path, rel: &str, key: &ThresholdPublicKey) -> Result<KeyShare, String> {
    let k = parse_key_file(&std::fs::read(dir.join(format!("{rel}/share.key"))).unwrap()).unwrap();
    open(
        &std::fs::read(dir.join(format!("{rel}/share.json"))).unwrap(),
        key,
        &Unlock::Key(&k),
    )
    .map_err(|e| e.to_string())
}

fn decrypts(key: &ThresholdPublicKey, shares: &[&KeyShare], m: i64) -> bool {
    let c = key
        .public_key()
        .encrypt(&Plaintext::from_i64(m), &mut OsRng)
        .unwrap();
    let partials: Vec<_> = shares
        .iter()
        .map(|s| {
            s.partial_decrypt(key, b"reshare-test", &c, &mut OsRng)
                .unwrap()
        })
        .collect();
    matches!(key.combine_partials(b"reshare-test", &c, &partials),
        Ok(out) if out.decryption.plaintext == Plaintext::from_i64(m))
}

#[test]
fn a_hospital_leaves_and_another_joins_over_tls_with_the_same_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    prepare(d);
    let children = [
        reshare(d, 1, Some(1), "60"),
        reshare(d, 2, Some(2), "60"),
        reshare(d, 3, None, "60"),
    ];
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t: Vec<Vec<u8>> = (1..=3)
        .map(|i| std::fs::read(d.join(format!("out-{i}/reshare-transcript.json"))).unwrap())
        .collect();
    assert!(t[0] == t[1] && t[1] == t[2], "one transcript everywhere");
    let old = load_key(&d.join("ceremony/threshold-key.json")).unwrap();
    let new = load_key(&d.join("out-3/threshold-key.json")).unwrap();
    assert!(verify_reshare(&t[0], Some(&new)).ok());
    assert_eq!(new.public_key(), old.public_key(), "same N");
    assert_ne!(new.fingerprint(), old.fingerprint());
    assert_eq!((new.parties(), new.threshold()), (3, 2));

    // `verify` on the command line agrees — given what a reviewer knows from outside the
    // transcript: the old key and every participant's identity key (issue 30 §4).
    let identities: Vec<serde_json::Value> = (1..=3)
        .map(|i| {
            let m: serde_json::Value = serde_json::from_slice(
                &std::fs::read(d.join(format!("keys-{i}/member.json"))).unwrap(),
            )
            .unwrap();
            serde_json::json!({ "party": i, "ed25519": m["ed25519"] })
        })
        .collect();
    std::fs::write(
        d.join("pinned.json"),
        serde_json::to_vec(&identities).unwrap(),
    )
    .unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify".to_string(),
            p(d, "out-1/reshare-transcript.json"),
            "--key".into(),
            p(d, "out-2/threshold-key.json"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Command::new(BIN).args(&args).output().unwrap()
    };
    let old_key = p(d, "ceremony/threshold-key.json");
    let pinned = p(d, "pinned.json");
    let v = verify(&["--old-key", &old_key, "--identities", &pinned]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    assert!(String::from_utf8_lossy(&v.stdout).contains("VERIFIED: key"));
    // Without the pins `verify` refuses to judge.
    let v = verify(&[]);
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stderr).contains("--old-key"));
    // The in-process ceremony gave its members other identity keys than the re-sharing's
    // participants use: chained to it, the transcript does not verify.
    let v = verify(&[
        "--old-key",
        &old_key,
        "--identities",
        &pinned,
        "--previous",
        &p(d, "ceremony/transcript.json"),
    ]);
    assert!(!v.status.success());
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("another identity key there"), "{text}");

    // Any two new members decrypt, the newcomer included.
    let s: Vec<KeyShare> = (1..=3)
        .map(|i| share(d, &format!("out-{i}"), &new).unwrap())
        .collect();
    assert!(decrypts(&new, &[&s[0], &s[2]], 424_242));
    assert!(decrypts(&new, &[&s[1], &s[2]], -17));
    // The leaver's share does not open under the new key, and an old share is not a new one.
    assert!(share(d, "ceremony/party-3", &new).is_err());
    let old1 = share(d, "ceremony/party-1", &old).unwrap();
    assert!(KeyShare::from_secret_bytes(&old1.to_secret_bytes(), &new).is_err());

    // A tampered transcript does not verify: the new key swapped for the old one, or a dealing
    // altered.
    let mut v: serde_json::Value = serde_json::from_slice(&t[0]).unwrap();
    v["new_key"] =
        serde_json::from_slice(&std::fs::read(d.join("ceremony/threshold-key.json")).unwrap())
            .unwrap();
    assert!(!verify_reshare(&serde_json::to_vec(&v).unwrap(), None).ok());
    let mut v: serde_json::Value = serde_json::from_slice(&t[0]).unwrap();
    let dealing = v["dealings"][1].as_str().unwrap().to_string();
    let k = dealing.len() - 10;
    let flipped = if &dealing[k..k + 1] == "0" { "1" } else { "0" };
    v["dealings"][1] = format!("{}{flipped}{}", &dealing[..k], &dealing[k + 1..]).into();
    let tampered = d.join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(!verify_reshare(&std::fs::read(&tampered).unwrap(), None).ok());
    let out = Command::new(BIN)
        .args([
            "verify",
            tampered.to_str().unwrap(),
            "--old-key",
            &old_key,
            "--identities",
            &pinned,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT VERIFIED"));

    // Destroying an old share after the re-sharing: refused while the transcript does not prove
    // the new sharing (a tampered one), done with the verified one.
    let destroy = |transcript: &Path| {
        Command::new(BIN)
            .args([
                "destroy-share",
                "--share",
                &p(d, "ceremony/party-1/share.json"),
                "--share-key",
                &p(d, "ceremony/party-1/share.key"),
                "--transcript",
                transcript.to_str().unwrap(),
                "--key",
                &p(d, "out-1/threshold-key.json"),
                "--config",
                &p(d, "reshare.json"),
            ])
            .output()
            .unwrap()
    };
    let old_files = ["ceremony/party-1/share.json", "ceremony/party-1/share.key"];
    assert!(!destroy(&tampered).status.success());
    assert!(old_files.iter().all(|f| d.join(f).exists()));
    let done = destroy(&d.join("out-1/reshare-transcript.json"));
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(old_files.iter().all(|f| !d.join(f).exists()));
}

#[test]
fn a_dealer_with_another_members_share_is_refused_and_named_by_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    prepare(d);
    // Participant 2 deals as member 2 but is handed member 3's share.
    let children = [
        reshare(d, 1, Some(1), "5"),
        reshare(d, 2, Some(3), "5"),
        reshare(d, 3, None, "5"),
    ];
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let err = |i: usize| String::from_utf8_lossy(&outs[i].stderr).to_string();
    assert!(!outs[1].status.success());
    assert!(err(1).contains("member 3's share"), "{}", err(1));
    for i in [0, 2] {
        assert!(!outs[i].status.success());
        // Participant 2 stopped before it listened: the others name it as unreachable (or, had
        // it connected, as the participant whose dealing never came).
        let e = err(i);
        assert!(
            e.contains("party 2 at") || e.contains("participants [2]"),
            "{e}"
        );
    }
    assert!(
        !d.join("out-3/share.json").exists(),
        "no new share without every dealing"
    );
}
