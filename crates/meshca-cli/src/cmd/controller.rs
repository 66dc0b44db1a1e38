//! `meshca controller`: the Kubernetes controller.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::failure::{CmdResult, Failure};

/// How the controller writes its log lines (to stderr).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    /// One line per event, for a terminal or `kubectl logs`.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Args, Debug)]
pub(crate) struct ControllerArgs {
    /// The PKCS#11 module for policies whose signing key is in a token (mgmtServerCa.pkcs11);
    /// the PIN is read from the policy's pinSecretRef.
    #[arg(long, value_name = "PATH", env = meshca_ops::pkcs11::MODULE_ENV)]
    pub(crate) pkcs11_module: Option<PathBuf>,
    /// The kubeconfig of the management cluster (default: in-cluster config, else $KUBECONFIG).
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// kubeconfig context of the management cluster.
    #[arg(long)]
    pub(crate) context: Option<String>,
    /// Watch policies in this namespace only (default: all).
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// Where Istio's remote secrets (istio/multiCluster=true) are.
    #[arg(long, default_value = "istio-system")]
    pub(crate) remote_secret_namespace: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, default_value = "meshca-system")]
    pub(crate) lease_namespace: String,
    /// This replica's identity (default: $POD_NAME, else the host name).
    #[arg(long)]
    pub(crate) identity: Option<String>,
    /// Name of the management cluster in reports.
    #[arg(long, default_value = "mgmt")]
    pub(crate) mgmt_cluster: String,
    /// Let meshca replace `cacerts` Secrets it did not create.
    #[arg(long)]
    pub(crate) adopt: bool,
    /// Bound on each Kubernetes API call, in seconds (1 to 3600).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) timeout: u64,
    /// Where to serve /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9464")]
    pub(crate) metrics_addr: std::net::SocketAddr,
    /// Serve each policy's SPIFFE bundle (spec.config.trustDistribution.spiffeBundle) over
    /// HTTPS here: at /<namespace>/<name>, and at / when one policy has one.
    #[arg(long, value_name = "ADDR")]
    pub(crate) bundle_endpoint_addr: Option<std::net::SocketAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub(crate) log_format: LogFormat,
    /// Which log lines to write: error, warn, info, debug, trace, or a filter like
    /// `info,meshca_ops=debug` (default: $RUST_LOG, else info).
    #[arg(long, value_name = "FILTER")]
    pub(crate) log_level: Option<String>,
}

/// Installs the log subscriber: spans per policy and cluster, levels, human or JSON lines.
pub(crate) fn init_logging(format: LogFormat, level: Option<&str>) -> Result<(), Failure> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| crate::failure::usage(format!("--log-level {l}: {e}")))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
    installed.map_err(|e| Failure { code: 1, message: format!("cannot install the logger: {e}") })
}

pub(crate) fn run(a: ControllerArgs) -> CmdResult {
    init_logging(a.log_format, a.log_level.as_deref())?;
    let identity = a
        .identity
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("meshca-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure { code: 1, message: format!("cannot start the async runtime: {e}") })?;
    let timeout = std::time::Duration::from_secs(a.timeout);
    rt.block_on(async move {
        let client = if a.kubeconfig.is_none() && a.context.is_none() {
            let config =
                kube::Config::infer().await.map_err(|e| Failure { code: 1, message: format!("kubeconfig: {e}") })?;
            kube::Client::try_from(config).map_err(|e| Failure { code: 1, message: e.to_string() })?
        } else {
            meshca_kube::clusters::client_for_context(a.kubeconfig.as_deref(), a.context.as_deref(), timeout)
                .await
                .map_err(|e| Failure { code: 1, message: e.to_string() })?
        };
        let listener = tokio::net::TcpListener::bind(a.metrics_addr)
            .await
            .map_err(|e| Failure { code: 1, message: format!("--metrics-addr {}: {e}", a.metrics_addr) })?;
        let mut cfg = meshca_kube::controller::ControllerConfig::new(&identity);
        let metrics = cfg.metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = meshca_kube::metrics::serve(listener, metrics).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
        tracing::info!(addr = %a.metrics_addr, "serving /metrics, /healthz and /readyz");
        if let Some(addr) = a.bundle_endpoint_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Failure { code: 1, message: format!("--bundle-endpoint-addr {addr}: {e}") })?;
            let endpoint = meshca_kube::bundle_endpoint::BundleEndpoint::new();
            cfg.bundle_endpoint = Some(endpoint.clone());
            tokio::spawn(async move {
                if let Err(e) = endpoint.serve(listener).await {
                    tracing::error!(error = %e, "the SPIFFE bundle endpoint stopped");
                }
            });
            tracing::info!(addr = %addr, "serving the SPIFFE bundles (spec.config.trustDistribution.spiffeBundle)");
        }
        cfg.namespace = a.namespace;
        cfg.mgmt_cluster = a.mgmt_cluster;
        cfg.remote_secret_namespace = a.remote_secret_namespace;
        cfg.adopt = a.adopt;
        cfg.timeout = timeout;
        cfg.token = meshca_ops::reconcile::TokenAccess::new(a.pkcs11_module, None);
        // A policy whose PKI names no `auth` uses $VAULT_TOKEN (or $BAO_TOKEN); `auth.kubernetes`
        // reads the pod's service account token.
        cfg.provider = meshca_ops::context::ProviderAccess::with_token(crate::args::vault_token(None)?);
        cfg.lease = Some(meshca_kube::leader::LeaseConfig {
            namespace: a.lease_namespace,
            name: "meshca-controller".into(),
            identity: identity.clone(),
            duration: std::time::Duration::from_secs(15),
        });
        tracing::info!(identity = %identity, "waiting for the leader lease, then watching RootTrustPolicy objects");
        meshca_kube::controller::run(client, cfg, shutdown_signal())
            .await
            .map_err(|e| Failure { code: 1, message: e.to_string() })
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM (Kubernetes stops pods with SIGTERM).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
