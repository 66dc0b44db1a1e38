//! Leader election on a coordination.k8s.io/v1 Lease, so two controller replicas never
//! reconcile at once. Updates carry the resourceVersion read (optimistic concurrency): of two
//! replicas racing for an expired lease, one gets 409 and keeps waiting.
//!
//! The time comes in from the caller (`now`, or a clock for the loops), as everywhere else in
//! meshca: a test moves it instead of sleeping.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::{Api, Client};
use time::OffsetDateTime;

use crate::Error;

/// Where the loops read the time: the wall clock in the controller, anything in tests.
pub type Clock = fn() -> OffsetDateTime;

/// A lease and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
}

fn micro(now: OffsetDateTime) -> MicroTime {
    let t = k8s_openapi::jiff::Timestamp::new(now.unix_timestamp(), i32::try_from(now.nanosecond()).unwrap_or(0));
    MicroTime(t.unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

fn expired(spec: &LeaseSpec, now: OffsetDateTime) -> bool {
    let (Some(renew), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else { return true };
    let deadline = renew.0.as_second() + i64::from(secs);
    deadline < now.unix_timestamp()
}

/// Tries once, at `now`, to take or renew the lease. `Ok(true)`: we hold it now.
pub async fn try_acquire(client: &Client, cfg: &LeaseConfig, now: OffsetDateTime) -> Result<bool, Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let kube_err = |source| Error::Kube { context: format!("lease {}/{}", cfg.namespace, cfg.name), source };
    let secs = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&cfg.name).await.map_err(kube_err)? {
        None => {
            let mut lease = Lease::default();
            lease.metadata.name = Some(cfg.name.clone());
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(micro(now)),
                renew_time: Some(micro(now)),
                lease_transitions: Some(0),
                ..Default::default()
            });
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
                Err(e) => Err(kube_err(e)),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            if !ours && !expired(spec, now) {
                return Ok(false);
            }
            if !ours {
                spec.holder_identity = Some(cfg.identity.clone());
                spec.acquire_time = Some(micro(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(secs);
            spec.renew_time = Some(micro(now));
            lease.metadata.managed_fields = None;
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
                Err(e) => Err(kube_err(e)),
            }
        }
    }
}

/// Waits until this replica holds the lease.
pub async fn acquire(client: &Client, cfg: &LeaseConfig, clock: Clock) -> Result<(), Error> {
    loop {
        if try_acquire(client, cfg, clock()).await? {
            return Ok(());
        }
        tokio::time::sleep(cfg.duration / 3).await;
    }
}

/// Renews the lease every third of its duration; returns an error once it is lost (the
/// process should then stop, and another replica take over).
pub async fn keep(client: Client, cfg: LeaseConfig, clock: Clock) -> Error {
    loop {
        tokio::time::sleep(cfg.duration / 3).await;
        match try_acquire(&client, &cfg, clock()).await {
            Ok(true) => {}
            Ok(false) => {
                return Error::LostLease(format!("{}/{} (now held by another replica)", cfg.namespace, cfg.name))
            }
            Err(e) => return e,
        }
    }
}
