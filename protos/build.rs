//! Generates Rust types from `proto/` with tonic-prost-build. Needs `protoc` (Debian's
//! `protobuf-compiler`, installed by scripts/setup.sh) or `PROTOC` pointing at one.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/medtech/ledger/v1/entry.proto",
        "proto/medtech/ledger/v1/raft.proto",
        "proto/fabric/gateway.proto",
        "proto/medtech/data/v1/device.proto",
    ];
    // The chaincode side of the shim: server only (its one RPC, `Connect`, would clash with
    // the generated client's constructor of the same name).
    let shim = ["proto/fabric/chaincode_shim.proto"];
    for p in protos.iter().chain(&shim) {
        println!("cargo:rerun-if-changed={p}");
    }
    // The shim first: its run also writes the imported gateway package (without a client),
    // which the second run then writes again with its client.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .compile_protos(&shim, &["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
