//! Generates Rust types from `proto/` with tonic-prost-build. Needs `protoc` (Debian's
//! `protobuf-compiler`, installed by scripts/setup.sh) or `PROTOC` pointing at one.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/medtech/ledger/v1/entry.proto",
        "proto/medtech/ledger/v1/raft.proto",
        "proto/fabric/gateway.proto",
        "proto/medtech/data/v1/device.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
