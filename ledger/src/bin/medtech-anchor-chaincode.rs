//! The anchoring chaincode as a service, for a Fabric peer's `ccaas` external builder: the peer
//! dials this process at the address in the chaincode package's `connection.json`.
//!
//! Environment (as Fabric's chaincode-as-a-service convention has it):
//! - `CHAINCODE_SERVER_ADDRESS` — where to listen (`host:port`);
//! - `CHAINCODE_ID` — the installed package's ID (`peer lifecycle chaincode install` prints it);
//! - `MEDTECH_ANCHOR_ADMIN_MSPS` — comma-separated MSP IDs whose admins may register a
//!   committee's keys (required: without it nobody could, and the chaincode would be useless);
//! - `MEDTECH_ANCHOR_WRITER_MSPS` — optional comma-separated MSP IDs allowed to anchor.
//!
//! The listener is plaintext: run it on the peer's host or a private network (Fabric's ccaas
//! `connection.json` can require TLS; terminating it here is not built yet).
#![forbid(unsafe_code)]

use medtech_ledger::fabric::chaincode::AnchorChaincode;
use medtech_ledger::fabric::contract::ContractConfig;

fn list(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn main() -> std::process::ExitCode {
    tracing_subscriber_init();
    let fail = |m: String| {
        eprintln!("medtech-anchor-chaincode: {m}");
        std::process::ExitCode::from(2)
    };
    let Ok(address) = std::env::var("CHAINCODE_SERVER_ADDRESS") else {
        return fail("set CHAINCODE_SERVER_ADDRESS (host:port to listen on)".into());
    };
    let Ok(addr) = address.parse::<std::net::SocketAddr>() else {
        return fail(format!(
            "CHAINCODE_SERVER_ADDRESS {address:?} is not host:port"
        ));
    };
    let Ok(id) = std::env::var("CHAINCODE_ID") else {
        return fail("set CHAINCODE_ID (the installed package's ID)".into());
    };
    let admin_msps = list("MEDTECH_ANCHOR_ADMIN_MSPS");
    if admin_msps.is_empty() {
        return fail(
            "set MEDTECH_ANCHOR_ADMIN_MSPS (MSP IDs whose admins register committees)".into(),
        );
    }
    let config = ContractConfig {
        admin_msps,
        writer_msps: list("MEDTECH_ANCHOR_WRITER_MSPS"),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("runtime: {e}")),
    };
    let served = rt.block_on(async move {
        tonic::transport::Server::builder()
            .add_service(AnchorChaincode::new(&id, config).into_service())
            .serve_with_shutdown(addr, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(format!("serving on {addr}: {e}")),
    }
}

/// Logs to stderr at `RUST_LOG` (default `info`).
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
