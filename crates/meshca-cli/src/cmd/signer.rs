//! `meshca signer`: meshca as the Kubernetes signer for istiod's RA mode, for the clusters a
//! policy's `workloadSigning` covers (their intermediates kept on the management side).

use std::process::ExitCode;

use clap::Args;

use crate::args::{ClusterSpec, StoreArgs};
use crate::failure::{usage, CmdResult, Failure};
use crate::io::{check_workload_clusters, cluster_context, load_policy};

#[derive(Args, Debug)]
pub(crate) struct SignerArgs {
    #[command(flatten)]
    pub(crate) target: StoreArgs,
    /// A workload cluster to sign for: NAME=CONTEXT (CONTEXT defaults to NAME); repeat for each.
    /// Only the clusters the policy's workloadSigning covers are signed for.
    #[arg(long = "cluster", value_name = "NAME", required = true)]
    pub(crate) clusters: Vec<ClusterSpec>,
    /// Requests answered at once per cluster (1 to 1024).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) concurrency: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = crate::cmd::controller::LogFormat::Human)]
    pub(crate) log_format: crate::cmd::controller::LogFormat,
    /// Which log lines to write (default: $RUST_LOG, else info).
    #[arg(long, value_name = "FILTER")]
    pub(crate) log_level: Option<String>,
}

pub(crate) fn run(a: SignerArgs) -> CmdResult {
    if !a.target.kube.kube {
        return Err(usage("meshca signer answers Kubernetes CertificateSigningRequests: give --kube"));
    }
    crate::cmd::controller::init_logging(a.log_format, a.log_level.as_deref())?;
    let pol = load_policy(&a.target.policy)?;
    let Some(ws) = pol.workload_signing.clone() else {
        return Err(crate::failure::refused(format!(
            "{}: spec.config.workloadSigning is not set; name the signer (signerName: meshca.dev/istio) to sign \
             workload certificates",
            a.target.policy.display()
        )));
    };
    let names = ClusterSpec::names(&a.clusters);
    check_workload_clusters(&names, &a.target.mgmt_cluster.name)?;
    if let Some(c) = names.iter().find(|c| !ws.covers(c)) {
        return Err(crate::failure::refused(format!(
            "--cluster {c}: spec.config.workloadSigning.clusters does not list it; meshca signs only for the clusters \
             whose CA key it keeps"
        )));
    }
    let specs = a.clusters.iter().map(cluster_context).collect::<Result<Vec<_>, _>>()?;
    let k = &a.target.kube;
    let timeout = std::time::Duration::from_secs(k.timeout);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure { code: 1, message: format!("cannot start the async runtime: {e}") })?;
    let mgmt = a.target.mgmt_cluster.clone();
    rt.block_on(async move {
        let connect = |ctx: Option<String>| async move {
            meshca_kube::clusters::client_for_context(k.kubeconfig.as_deref(), ctx.as_deref(), timeout)
                .await
                .map_err(|e| Failure { code: 1, message: e.to_string() })
        };
        let mgmt_client = connect(mgmt.context.clone()).await?;
        let mut clusters = std::collections::BTreeMap::new();
        for (name, ctx) in specs {
            clusters.insert(name, connect(Some(ctx)).await?);
        }
        let metrics = std::sync::Arc::new(meshca_kube::metrics::Metrics::new());
        let mut cfg = meshca_kube::signer::SignerConfig::new(pol, &mgmt.name, metrics);
        cfg.concurrency = usize::try_from(a.concurrency).unwrap_or(16);
        cfg.watch_secs = meshca_kube::controller::watch_timeout(timeout);
        tracing::info!(signer = %ws.signer_name, clusters = names.len(), "answering CertificateSigningRequests");
        tokio::select! {
            r = meshca_kube::signer::run(cfg, mgmt_client, clusters) => r.map_err(|e| Failure { code: 1, message: e.to_string() }),
            () = crate::cmd::controller::shutdown_signal() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
