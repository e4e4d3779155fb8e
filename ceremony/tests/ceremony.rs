//! The ceremony tool end to end at 512 bits: a rehearsal writes a key, a signed transcript and
//! sealed shares; `verify` accepts it and refuses every tampered variant; the shares open only
//! with their own key file or passphrase; t members test-decrypt a reviewer's challenge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use medtech_ceremony::files::{challenge, load_key};
use medtech_ceremony::rehearsal::{run, RunConfig};
use medtech_ceremony::sharefile::{open, parse_key_file, seal, Unlock};
use medtech_ceremony::transcript::{verify, Identity, Transcript};
use medtech_ceremony::Error;
use medtech_threshold::Plaintext;
use rand_core::OsRng;

fn rehearse(dir: &Path) {
    run(
        &RunConfig {
            bits: 512,
            parties: 5,
            threshold: 3,
            out: dir.to_path_buf(),
            passphrase: None,
        },
        &mut |_| {},
    )
    .unwrap();
}

fn transcript(dir: &Path) -> (Vec<u8>, Transcript) {
    let bytes = std::fs::read(dir.join("transcript.json")).unwrap();
    let t = serde_json::from_slice(&bytes).unwrap();
    (bytes, t)
}

#[test]
fn rehearsal_outputs_verify_and_decrypt_a_challenge() {
    let dir = tempfile::tempdir().unwrap();
    rehearse(dir.path());
    let key = load_key(&dir.path().join("threshold-key.json")).unwrap();
    let (bytes, t) = transcript(dir.path());
    let verdict = verify(&bytes, Some(&t.identities), Some(&key));
    assert!(verdict.ok(), "{verdict:?}");

    let (c, value) = challenge(&key).unwrap();
    let ct = medtech_threshold::Ciphertext::from_bytes(
        key.public_key(),
        &hex::decode(&c.ciphertext).unwrap(),
    )
    .unwrap();
    let ctx = hex::decode(&c.context).unwrap();
    let partials: Vec<_> = [1, 3, 4]
        .iter()
        .map(|i| {
            let d = dir.path().join(format!("party-{i}"));
            let k = parse_key_file(&std::fs::read(d.join("share.key")).unwrap()).unwrap();
            let share = open(
                &std::fs::read(d.join("share.json")).unwrap(),
                &key,
                &Unlock::Key(&k),
            )
            .unwrap();
            share.partial_decrypt(&key, &ctx, &ct, &mut OsRng).unwrap()
        })
        .collect();
    let out = key.combine_partials(&ctx, &ct, &partials).unwrap();
    assert_eq!(out.decryption.plaintext, Plaintext::from_i64(value));

    // A second run into the same directory is refused: nothing is overwritten.
    let again = run(
        &RunConfig {
            bits: 512,
            parties: 5,
            threshold: 3,
            out: dir.path().to_path_buf(),
            passphrase: None,
        },
        &mut |_| {},
    );
    assert!(matches!(again, Err(Error::Format { .. })));
}

#[test]
fn tampered_transcripts_do_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    rehearse(dir.path());
    let key = load_key(&dir.path().join("threshold-key.json")).unwrap();
    let (_, t) = transcript(dir.path());
    let other = {
        let d = tempfile::tempdir().unwrap();
        rehearse(d.path());
        transcript(d.path()).1
    };
    type Tamper = Box<dyn Fn(&mut Transcript)>;
    let flip = |s: &mut String, at: usize| {
        let c = if &s[at..at + 1] == "0" { "1" } else { "0" };
        s.replace_range(at..at + 1, c);
    };
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "a broadcast byte",
            Box::new(move |t| flip(&mut t.broadcasts[7], 120)),
        ),
        (
            "a broadcast dropped",
            Box::new(|t| {
                t.broadcasts.remove(5);
            }),
        ),
        ("the key swapped for another ceremony's", {
            let o = other.clone();
            Box::new(move |t| {
                t.threshold_key = o.threshold_key.clone();
                t.key_fingerprint = o.key_fingerprint.clone();
            })
        }),
        (
            "a signature",
            Box::new(move |t| flip(&mut t.signatures[2].signature, 10)),
        ),
        (
            "signatures reordered",
            Box::new(|t| t.signatures.swap(0, 1)),
        ),
        ("an identity replaced", {
            let o = other.clone();
            Box::new(move |t| t.identities[1] = o.identities[1].clone())
        }),
        (
            "the parameters",
            Box::new(|t| t.parameters.biprime_reps = 32),
        ),
        (
            "the hash chain head",
            Box::new(move |t| flip(&mut t.transcript_hash, 0)),
        ),
        (
            "the format",
            Box::new(|t| t.format = "medtech-ceremony-transcript/0".into()),
        ),
    ];
    for (what, tamper) in cases {
        let mut bad = t.clone();
        tamper(&mut bad);
        let bytes = serde_json::to_vec(&bad).unwrap();
        let verdict = verify(&bytes, Some(&t.identities), Some(&key));
        assert!(!verdict.ok(), "{what}: still verified");
    }
    // Pinned identities that are not the ones in the transcript.
    let (bytes, _) = transcript(dir.path());
    let wrong: Vec<Identity> = other.identities.clone();
    assert!(!verify(&bytes, Some(&wrong), Some(&key)).ok());
    // Garbage.
    assert!(!verify(b"{", None, None).ok());
    assert!(!verify(b"", None, None).ok());
}

#[test]
fn share_files_open_only_with_their_own_secret() {
    let dir = tempfile::tempdir().unwrap();
    rehearse(dir.path());
    let key = load_key(&dir.path().join("threshold-key.json")).unwrap();
    let d1 = dir.path().join("party-1");
    let d2 = dir.path().join("party-2");
    let sealed = std::fs::read(d1.join("share.json")).unwrap();
    let k1 = parse_key_file(&std::fs::read(d1.join("share.key")).unwrap()).unwrap();
    let k2 = parse_key_file(&std::fs::read(d2.join("share.key")).unwrap()).unwrap();
    let share = open(&sealed, &key, &Unlock::Key(&k1)).unwrap();
    assert!(matches!(
        open(&sealed, &key, &Unlock::Key(&k2)),
        Err(Error::Decrypt)
    ));
    // Altered ciphertext, or a file relabelled as another member's: refused.
    let mut v: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    let ct = v["ciphertext"].as_str().unwrap().to_string();
    let mut altered = v.clone();
    altered["ciphertext"] = serde_json::Value::String(format!(
        "{}{}",
        if ct.starts_with('0') { "1" } else { "0" },
        &ct[1..]
    ));
    assert!(open(
        &serde_json::to_vec(&altered).unwrap(),
        &key,
        &Unlock::Key(&k1)
    )
    .is_err());
    v["party"] = serde_json::json!(2);
    assert!(open(&serde_json::to_vec(&v).unwrap(), &key, &Unlock::Key(&k1)).is_err());
    // Passphrase sealing round-trips and refuses another passphrase.
    let pw = b"correct horse battery staple";
    let sealed = seal(&share, &key, &Unlock::Passphrase(pw)).unwrap();
    assert!(!sealed.contains(&hex::encode(&*share.to_secret_bytes())));
    let again = open(sealed.as_bytes(), &key, &Unlock::Passphrase(pw)).unwrap();
    assert_eq!(*again.to_secret_bytes(), *share.to_secret_bytes());
    assert!(matches!(
        open(
            sealed.as_bytes(),
            &key,
            &Unlock::Passphrase(b"wrong horse battery staple")
        ),
        Err(Error::Decrypt)
    ));
    assert!(open(sealed.as_bytes(), &key, &Unlock::Key(&k1)).is_err());
    // Key files must be 32 bytes of hex.
    assert!(parse_key_file(b"00ff").is_err());
    assert!(parse_key_file(b"zz").is_err());
}

#[test]
fn verify_command_exits_non_zero_on_a_tampered_transcript() {
    let dir = tempfile::tempdir().unwrap();
    rehearse(dir.path());
    let bin = env!("CARGO_BIN_EXE_medtech-ceremony");
    let path = dir.path().join("transcript.json");
    let ok = Command::new(bin)
        .arg("verify")
        .arg(&path)
        .arg("--identities")
        .arg(dir.path().join("identities.json"))
        .arg("--key")
        .arg(dir.path().join("threshold-key.json"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("VERIFIED"));
    let (_, mut t) = transcript(dir.path());
    t.signatures.swap(1, 2);
    std::fs::write(&path, serde_json::to_vec(&t).unwrap()).unwrap();
    let bad = Command::new(bin).arg("verify").arg(&path).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("NOT VERIFIED"));
    let missing = Command::new(bin)
        .arg("verify")
        .arg(dir.path().join("nope.json"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
}

#[test]
fn earlier_batches_are_chained_by_hash_and_still_bind_the_signatures() {
    use ed25519_dalek::SigningKey;
    use medtech_threshold::dkg::{sim::run_in_process, Parameters};
    use rand::SeedableRng;
    let params = Parameters::new(512, 3, 2, [9; 32])
        .unwrap()
        .with_batch(300)
        .unwrap();
    let rngs: Vec<_> = (0..3)
        .map(|k| rand_chacha::ChaCha20Rng::seed_from_u64(40 + k))
        .collect();
    let run = run_in_process(&params, rngs, None).unwrap();
    assert!(
        run.outputs[0].stats.batches > 1,
        "the seed gives several batches"
    );
    let signers: Vec<SigningKey> = (0..3).map(|_| SigningKey::generate(&mut OsRng)).collect();
    let key = run.outputs[0].key.clone();
    let t = Transcript::build(&params, &run.broadcasts, &key, &signers);
    assert!(!t.earlier_batches.is_empty());
    assert!(t.broadcasts.len() < run.broadcasts.len());
    let bytes = serde_json::to_vec(&t).unwrap();
    assert!(verify(&bytes, Some(&t.identities), Some(&key)).ok());
    let mut bad = t.clone();
    bad.earlier_batches.remove(0);
    assert!(!verify(&serde_json::to_vec(&bad).unwrap(), None, Some(&key)).ok());
}
