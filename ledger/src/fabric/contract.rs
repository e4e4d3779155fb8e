//! The anchoring chaincode's interface and reference semantics.
//!
//! The chaincode (name configurable, `medtech-anchor` by default) is a write-once notary of
//! the committee's cosigned checkpoints. It keeps, per ledger origin, one checkpoint per size.
//!
//! | Function | Arguments | Success | Errors |
//! |---|---|---|---|
//! | `AnchorCheckpoint` | `note`: the C2SP signed note (checkpoint body and cosignatures) | 200, payload `{"origin","size","root"}` (JSON, root in base64); anchoring the same root again is a no-op | 400 malformed note; 409 a *different* root is already anchored at that size (equivocation; payload: the anchored note) |
//! | `GetCheckpoint` | `origin`, `size` (decimal) or `latest` | 200, payload: the anchored note, or empty if nothing is anchored there | 400 bad arguments |
//!
//! World state keys: `checkpoint\u{0}<origin>\u{0}<size, 20 digits>` → the note;
//! `latest\u{0}<origin>` → the largest anchored size (decimal). The chaincode does not judge the
//! cosignatures (it does not know the committee's keys); auditors do, with the verifier. What
//! it guarantees is that once a checkpoint is in a Fabric block, no other root of the same size
//! can be anchored, so a committee that forks its log after anchoring is caught.
//!
//! [`invoke`] is that behaviour as a pure function over a key-value view, used by the in-process
//! gateway in tests; a Go or Java chaincode for a real channel implements the same table (see
//! docs/ledger.md).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use medtech_protos::fabric::Response;

use crate::checkpoint::SignedCheckpoint;

/// `AnchorCheckpoint`.
pub const ANCHOR: &str = "AnchorCheckpoint";
/// `GetCheckpoint`.
pub const GET: &str = "GetCheckpoint";
/// Default chaincode name.
pub const DEFAULT_CHAINCODE: &str = "medtech-anchor";

/// World-state key of the checkpoint of `origin` at `size`.
pub fn checkpoint_key(origin: &str, size: u64) -> String {
    format!("checkpoint\u{0}{origin}\u{0}{size:020}")
}

/// World-state key of the largest anchored size of `origin`.
pub fn latest_key(origin: &str) -> String {
    format!("latest\u{0}{origin}")
}

/// The outcome of one invocation: the response and the writes to apply if it commits.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The chaincode response.
    pub response: Response,
    /// Keys written (applied only when the transaction commits).
    pub writes: BTreeMap<String, Vec<u8>>,
}

fn reply(status: i32, message: &str, payload: Vec<u8>) -> Outcome {
    Outcome {
        response: Response {
            status,
            message: message.to_owned(),
            payload,
        },
        writes: BTreeMap::new(),
    }
}

/// Runs `function(args)` against the world state read through `get`.
pub fn invoke(
    get: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
    function: &str,
    args: &[Vec<u8>],
) -> Outcome {
    match function {
        ANCHOR => anchor(get, args),
        GET => get_checkpoint(get, args),
        other => reply(400, &format!("unknown function {other:?}"), Vec::new()),
    }
}

fn anchor(get: &mut dyn FnMut(&str) -> Option<Vec<u8>>, args: &[Vec<u8>]) -> Outcome {
    let [note] = args else {
        return reply(
            400,
            "AnchorCheckpoint takes one argument: the signed note",
            Vec::new(),
        );
    };
    let Ok(text) = std::str::from_utf8(note) else {
        return reply(400, "note is not UTF-8", Vec::new());
    };
    let signed = match SignedCheckpoint::from_note(text) {
        Ok(s) => s,
        Err(e) => return reply(400, &e.to_string(), Vec::new()),
    };
    let cp = &signed.checkpoint;
    let key = checkpoint_key(&cp.origin, cp.size);
    let summary = serde_json::json!({
        "origin": cp.origin,
        "size": cp.size,
        "root": B64.encode(cp.root),
    })
    .to_string()
    .into_bytes();
    if let Some(existing) = get(&key) {
        let same = std::str::from_utf8(&existing)
            .ok()
            .and_then(|t| SignedCheckpoint::from_note(t).ok())
            .is_some_and(|e| e.checkpoint == *cp);
        if same {
            return reply(200, "already anchored", summary);
        }
        return reply(
            409,
            &format!(
                "a different root is already anchored for {} at size {}: equivocation",
                cp.origin, cp.size
            ),
            existing,
        );
    }
    let mut out = reply(200, "anchored", summary);
    out.writes.insert(key, note.clone());
    let latest = latest_key(&cp.origin);
    let previous = get(&latest)
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<u64>().ok());
    if previous.is_none_or(|p| p < cp.size) {
        out.writes.insert(latest, cp.size.to_string().into_bytes());
    }
    out
}

fn get_checkpoint(get: &mut dyn FnMut(&str) -> Option<Vec<u8>>, args: &[Vec<u8>]) -> Outcome {
    let [origin, size] = args else {
        return reply(
            400,
            "GetCheckpoint takes two arguments: origin and size",
            Vec::new(),
        );
    };
    let (Ok(origin), Ok(size)) = (std::str::from_utf8(origin), std::str::from_utf8(size)) else {
        return reply(400, "arguments must be UTF-8", Vec::new());
    };
    let size = if size == "latest" {
        match get(&latest_key(origin))
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(s) => s,
            None => return reply(200, &format!("nothing anchored for {origin}"), Vec::new()),
        }
    } else {
        match size.parse::<u64>() {
            Ok(s) => s,
            Err(_) => {
                return reply(
                    400,
                    "size must be a decimal number or \"latest\"",
                    Vec::new(),
                )
            }
        }
    };
    match get(&checkpoint_key(origin, size)) {
        Some(note) => reply(200, "", note),
        // Found nothing is an answer, not an error: gateways turn chaincode errors into gRPC
        // failures whose wording differs between Fabric versions.
        None => reply(
            200,
            &format!("no checkpoint anchored for {origin} at size {size}"),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, NodeKey};

    fn note(size: u64, root: u8) -> Vec<u8> {
        let mut s = SignedCheckpoint::new(Checkpoint {
            origin: "o".into(),
            size,
            root: [root; 32],
        });
        s.sign(&NodeKey::from_secret_bytes("m1", &[1; 32]));
        s.to_note().into_bytes()
    }

    fn run(state: &mut BTreeMap<String, Vec<u8>>, f: &str, args: &[Vec<u8>]) -> Response {
        let snapshot = state.clone();
        let out = invoke(&mut |k| snapshot.get(k).cloned(), f, args);
        state.extend(out.writes);
        out.response
    }

    #[test]
    fn anchor_then_get_and_latest() {
        let mut st = BTreeMap::new();
        assert_eq!(run(&mut st, ANCHOR, &[note(5, 1)]).status, 200);
        assert_eq!(run(&mut st, ANCHOR, &[note(9, 2)]).status, 200);
        assert_eq!(run(&mut st, ANCHOR, &[note(7, 3)]).status, 200);
        let got = run(&mut st, GET, &[b"o".to_vec(), b"7".to_vec()]);
        assert_eq!((got.status, got.payload), (200, note(7, 3)));
        let latest = run(&mut st, GET, &[b"o".to_vec(), b"latest".to_vec()]);
        assert_eq!((latest.status, latest.payload), (200, note(9, 2)));
        let none = run(&mut st, GET, &[b"o".to_vec(), b"6".to_vec()]);
        assert_eq!((none.status, none.payload.len()), (200, 0));
        let none = run(&mut st, GET, &[b"x".to_vec(), b"latest".to_vec()]);
        assert_eq!((none.status, none.payload.len()), (200, 0));
    }

    #[test]
    fn equivocating_root_at_an_anchored_size_is_refused() {
        let mut st = BTreeMap::new();
        run(&mut st, ANCHOR, &[note(5, 1)]);
        assert_eq!(
            run(&mut st, ANCHOR, &[note(5, 1)]).status,
            200,
            "idempotent"
        );
        let r = run(&mut st, ANCHOR, &[note(5, 2)]);
        assert_eq!(r.status, 409);
        assert!(r.message.contains("equivocation"));
        assert_eq!(
            r.payload,
            note(5, 1),
            "the anchored note is returned as evidence"
        );
    }

    #[test]
    fn bad_arguments_get_400() {
        let mut st = BTreeMap::new();
        assert_eq!(run(&mut st, ANCHOR, &[]).status, 400);
        assert_eq!(run(&mut st, ANCHOR, &[b"garbage".to_vec()]).status, 400);
        assert_eq!(run(&mut st, ANCHOR, &[vec![0xff, 0xfe]]).status, 400);
        assert_eq!(
            run(&mut st, GET, &[b"o".to_vec(), b"-1".to_vec()]).status,
            400
        );
        assert_eq!(run(&mut st, "Drop", &[]).status, 400);
        assert!(st.is_empty());
    }
}
