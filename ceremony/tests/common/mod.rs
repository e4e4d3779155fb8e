//! Helpers shared by the tests that run the `medtech-ceremony` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_medtech-ceremony");

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the binary with `args`, which must succeed.
pub fn cli(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `keygen` for member `i` as `hospital-<i>` on a free loopback port, into `dir/keys-<i>`;
/// returns the path of its `member.json`.
pub fn keygen(dir: &std::path::Path, i: u16) -> String {
    let keys = dir.join(format!("keys-{i}"));
    cli(&[
        "keygen",
        "--index",
        &i.to_string(),
        "--name",
        &format!("hospital-{i}"),
        "--address",
        &format!("127.0.0.1:{}", free_port()),
        "--out",
        keys.to_str().unwrap(),
    ]);
    keys.join("member.json").to_str().unwrap().to_string()
}
