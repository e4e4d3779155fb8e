//! `medtech node --config node.toml`: one hospital's committee member as a long-running
//! service — its ledger node (openraft over mutual TLS with pinned certificates), its device
//! store, its query loop ([`crate::node::Driver`]) and the HTTP API ([`crate::api`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use medtech_ledger::raft::node::{LedgerNode, NodeConfig, RaftTuning};

use crate::api::accounts::{generate_password, Account, Accounts};
use crate::api::auth::Role;
use crate::api::{ApiConfig, ApiServer, ApiState};
use crate::config::{write_file, LoadedNode};
use crate::data::DeviceStore;
use crate::node::{Driver, QueryIndex};
use crate::protocol::{CommitteeView, NoiseMode, Timeouts};
use crate::query::Platform;

/// A running member.
pub struct RunningNode {
    /// Its ledger node.
    pub ledger: LedgerNode,
    /// Its API server.
    pub api: ApiServer,
    stop: tokio::sync::watch::Sender<bool>,
    driver: tokio::task::JoinHandle<()>,
}

impl RunningNode {
    /// Starts the member described by `n`.
    pub async fn start(mut n: LoadedNode) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&n.data_dir)
            .with_context(|| format!("cannot create {}", n.data_dir.display()))?;
        let genesis = n.committee.genesis()?;
        let committee_addr: std::net::SocketAddr =
            tokio::net::lookup_host(&n.file.listen_committee)
                .await
                .with_context(|| format!("listen_committee {:?}", n.file.listen_committee))?
                .next()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "listen_committee {:?} resolves to nothing",
                        n.file.listen_committee
                    )
                })?;
        let names = n.committee.names();
        let view = CommitteeView {
            members: names.clone(),
            threshold: n.committee.threshold,
            key: Arc::new(n.threshold_key),
            platform: Arc::new(Platform::new(&names)),
            close_tolerance: n.committee.close_tolerance,
        };
        view.key.precompute();
        // The state machine checks every release under the committee's key.
        let rules = crate::rules::ReleaseRules::factory(view.clone());
        let config = NodeConfig {
            id: n.raft_id,
            key: n.key,
            tls: n.tls,
            data_dir: n.data_dir.join("ledger"),
            origin: n.committee.origin.clone(),
            genesis,
            members: n.committee.raft_members(),
            raft: RaftTuning::default(),
            cosign_every: Some(Duration::from_secs(5)),
            backend: medtech_ledger::backend::Backend::default(),
            state_spill: n.file.ledger_state_spill,
            faults: Default::default(),
            rules: Some(rules),
        };
        let mut ledger = LedgerNode::start_on(config, committee_addr).await?;
        if let Some(f) = n.fabric.take() {
            let client = medtech_ledger::fabric::GatewayClient::connect_lazy(
                &f.endpoint,
                f.identity,
                &f.channel,
                &f.chaincode,
            )
            .map_err(|e| anyhow::anyhow!("Fabric gateway {}: {e}", f.endpoint.address))?;
            tracing::info!(
                gateway = %f.endpoint.address,
                channel = %f.channel,
                every_s = f.every.as_secs(),
                "anchoring cosigned checkpoints to Fabric"
            );
            ledger.spawn_anchoring(medtech_ledger::fabric::Anchorer::new(client), f.every);
        }
        let fresh = ledger.head()?.0 == 0;
        if n.file.bootstrap && fresh {
            match ledger.initialize().await {
                Ok(()) => tracing::info!("initialised Raft with the whole committee"),
                // A restarted bootstrap member finds Raft initialised already.
                Err(e) => tracing::info!("Raft already initialised ({e})"),
            }
        }
        let store = Arc::new(RwLock::new(
            DeviceStore::open(&n.data_dir.join("devices"))
                .with_context(|| format!("device store in {}", n.data_dir.display()))?,
        ));
        let accounts = Accounts::open(&n.data_dir.join("accounts.json"))?;
        if accounts.is_empty() {
            bootstrap_admin(&accounts, n.admin_password_file.as_deref())?;
        }
        let timeouts = Timeouts {
            contribution_ms: n
                .file
                .protocol
                .contribution_timeout_ms
                .unwrap_or(Timeouts::default().contribution_ms),
            decryption_ms: n
                .file
                .protocol
                .decryption_timeout_ms
                .unwrap_or(Timeouts::default().decryption_ms),
            partial_fallback_ms: n
                .file
                .protocol
                .partial_fallback_ms
                .unwrap_or(Timeouts::default().partial_fallback_ms),
        };
        let index: QueryIndex = Arc::default();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let driver = Driver {
            name: n.file.name.clone(),
            committee: view.clone(),
            share: Arc::new(n.share),
            data: Arc::clone(&store),
            noise: NoiseMode::Calibrated,
            timeouts,
            index: Arc::clone(&index),
            adversary: None,
        };
        let driver = tokio::spawn(driver.run(ledger.clone_handle(), stop_rx));
        let api_config = ApiConfig {
            token_ttl: Duration::from_secs(
                n.file
                    .api
                    .token_ttl_seconds
                    .unwrap_or(900)
                    .clamp(60, 86_400),
            ),
            max_upload_bytes: n.file.api.max_upload_mb.unwrap_or(512).clamp(1, 4096) << 20,
            metrics_token: n.metrics_token,
            cookie_secure: n.file.api.cookie_secure.unwrap_or(true),
            trusted_proxies: n.file.api.trusted_proxies.clone(),
            max_queries_in_flight: n
                .file
                .api
                .max_queries_in_flight
                .unwrap_or(crate::api::DEFAULT_MAX_QUERIES_IN_FLIGHT)
                .max(1),
            request_timeout: n
                .file
                .api
                .request_timeout_seconds
                .map_or(crate::api::DEFAULT_REQUEST_TIMEOUT, |s| {
                    Duration::from_secs(s.clamp(70, 3600))
                }),
            ..ApiConfig::default()
        };
        let state = ApiState::new(
            ledger.clone_handle(),
            view,
            store,
            index,
            accounts,
            api_config,
        );
        let listener = tokio::net::TcpListener::bind(&n.file.listen_api)
            .await
            .with_context(|| format!("binding listen_api {:?}", n.file.listen_api))?;
        let api = ApiServer::spawn(Arc::new(state), listener)?;
        tracing::info!(member = %n.file.name, committee = %committee_addr, api = %api.addr, "member running");
        Ok(RunningNode {
            ledger,
            api,
            stop,
            driver,
        })
    }

    /// Stops the API, the query loop and the ledger node.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.api.shutdown().await;
        let _ = self.stop.send(true);
        let _ = self.driver.await;
        self.ledger.shutdown().await?;
        Ok(())
    }
}

/// Creates the first `admin` account with the password in `file` (generating one into it,
/// mode 0600, if absent). The password is never logged.
fn bootstrap_admin(accounts: &Accounts, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let Some(file) = file else {
        tracing::warn!("no accounts and no api.admin_password_file: nobody can sign in");
        return Ok(());
    };
    let password = match std::fs::read_to_string(file) {
        Ok(p) => zeroize::Zeroizing::new(p.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let p = generate_password();
            write_file(file, p.as_bytes(), true)?;
            p
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", file.display())),
    };
    accounts.create(
        Account {
            display_name: "Administrator".into(),
            ..Account::new("admin", Role::Admin)
        },
        &password,
        true,
    )?;
    tracing::info!(
        "created account admin; its password is in {}",
        file.display()
    );
    Ok(())
}

/// Runs the member in `config` until SIGINT or SIGTERM.
pub fn run(config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = LoadedNode::load(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let node = RunningNode::start(loaded).await?;
        shutdown_signal().await;
        tracing::info!("stopping");
        node.shutdown().await
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs to stderr: `RUST_LOG` (default `info`), JSON lines when `MEDTECH_LOG_JSON=1`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,openraft=warn,sled=warn,h2=warn,tower=warn,hyper=warn",
        )
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("MEDTECH_LOG_JSON").is_ok_and(|v| v == "1") {
        let _ = b.json().try_init();
    } else {
        let _ = b.try_init();
    }
}
