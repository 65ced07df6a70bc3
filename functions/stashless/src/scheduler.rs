//! The scheduler function's logic: one tick → one BackupSession per BackupConfiguration
//! whose cron slot is due. Idempotent: session names come from the slot, so a duplicate
//! or retried tick gets AlreadyExists and creates nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;

use crate::api::{
    BackupConfiguration, BackupInvokerRef, BackupSession, BackupSessionSpec, LABEL_INVOKER_NAME,
    LABEL_INVOKER_TYPE, LABEL_MANAGED_BY, MANAGED_BY, STASH_GROUP,
};
use crate::cluster::{EventType, record_event};
use crate::context::NamespaceScope;
use crate::error::{Error, Result, api_code};
use crate::events::Tick;
use crate::schedule::session_name;
use crate::serve::{Owners, Verdict};
use crate::{config, session, status};

pub mod blueprints;

#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// A slot older than this at tick time is missed, not run (CronJob's startingDeadlineSeconds).
    pub starting_deadline: chrono::Duration,
    /// Namespaces to look in.
    pub namespaces: NamespaceScope,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            starting_deadline: chrono::Duration::minutes(5),
            namespaces: NamespaceScope::all(),
        }
    }
}

impl SchedulerSettings {
    /// `STASHLESS_STARTING_DEADLINE_SECONDS`, `STASHLESS_NAMESPACES` (comma separated).
    pub fn from_env() -> Self {
        let mut s = SchedulerSettings::default();
        if let Some(secs) = std::env::var("STASHLESS_STARTING_DEADLINE_SECONDS")
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            s.starting_deadline = chrono::Duration::seconds(secs.clamp(60, 7 * 24 * 3600));
        }
        s.namespaces = NamespaceScope::from_env();
        s
    }
}

/// What a tick did, per configuration (`namespace/name`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TickReport {
    pub time: String,
    /// Sessions created by this tick (`namespace/name`), retries included.
    pub created: Vec<String>,
    /// Of those, the retries of failed sessions (`spec.retryConfig`).
    pub retried: Vec<String>,
    /// Due sessions that already existed (a duplicate or retried tick).
    pub existing: Vec<String>,
    pub paused: Vec<String>,
    /// Configurations that are not stashless's (another product's target, or annotated
    /// `stashless.io/serve: "false"`): left untouched, no status and no session.
    pub left_alone: Vec<String>,
    /// Configurations that are Invalid (schedule, driver, retentionPolicy, timeOut), and why.
    pub invalid: BTreeMap<String, String>,
    /// Configurations whose session could not be created, and why.
    pub errors: BTreeMap<String, String>,
    /// What the BackupBlueprints made, changed or removed (auto-backup).
    #[serde(skip_serializing_if = "blueprints::BlueprintReport::is_empty")]
    pub blueprints: blueprints::BlueprintReport,
}

/// Run one tick at `tick.time` (or now).
pub async fn tick(
    client: &Client,
    tick: &Tick,
    settings: &SchedulerSettings,
) -> Result<TickReport> {
    let now = tick.time.unwrap_or_else(Utc::now);
    let mut report = TickReport {
        time: crate::api::timestamp(now),
        ..Default::default()
    };
    // Blueprints first: a configuration they make is ticked in this same tick.
    let (made, appbindings) = blueprints::apply(client, &settings.namespaces).await;
    report.blueprints = made;
    let mut configs = Vec::new();
    for api in settings.namespaces.apis::<BackupConfiguration>(client) {
        configs.extend(list(&api).await?);
    }
    // Configurations are independent: a bounded number at a time, so a tick over a
    // thousand of them is one round trip deep per CONCURRENT_CONFIGS, not a thousand.
    let owners = &Owners::new(client).knowing_appbindings(&appbindings);
    let mut outcomes: Vec<(String, ConfigOutcome)> =
        futures::stream::iter(configs.into_iter().map(|config| async move {
            let key = format!(
                "{}/{}",
                config.namespace().unwrap_or_default(),
                config.name_any()
            );
            let outcome = match owners.config(&config).await {
                Ok(Verdict::Ours) => tick_one(client, config, &key, now, settings).await,
                Ok(Verdict::Others(why)) => {
                    tracing::debug!(config = %key, %why, "not a stashless BackupConfiguration");
                    ConfigOutcome::LeftAlone
                }
                Err(e) => ConfigOutcome::Error(e.reason()),
            };
            (key, outcome)
        }))
        .buffer_unordered(CONCURRENT_CONFIGS)
        .collect()
        .await;
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, outcome) in outcomes {
        record(&mut report, key, outcome);
    }
    Ok(report)
}

fn record(report: &mut TickReport, key: String, outcome: ConfigOutcome) {
    match outcome {
        ConfigOutcome::NotDue => {}
        ConfigOutcome::Invalid(e) => {
            report.invalid.insert(key, e);
        }
        ConfigOutcome::Paused => report.paused.push(key),
        ConfigOutcome::LeftAlone => report.left_alone.push(key),
        ConfigOutcome::Created(name) => report.created.push(name),
        ConfigOutcome::Retried(names, slot) => {
            report.retried.extend(names.iter().cloned());
            report.created.extend(names);
            record(report, key, *slot);
        }
        ConfigOutcome::Existing(name) => report.existing.push(name),
        ConfigOutcome::Error(e) => {
            report.errors.insert(key, e);
        }
    }
}

/// Configurations a tick works on at once (validity writes and session creates).
const CONCURRENT_CONFIGS: usize = 16;

/// What a tick did with one configuration.
enum ConfigOutcome {
    NotDue,
    /// Retry sessions created (`namespace/name`), and what the cron slot did.
    Retried(Vec<String>, Box<ConfigOutcome>),
    Invalid(String),
    Paused,
    LeftAlone,
    Created(String),
    Existing(String),
    Error(String),
}

async fn tick_one(
    client: &Client,
    config: BackupConfiguration,
    key: &str,
    now: DateTime<Utc>,
    settings: &SchedulerSettings,
) -> ConfigOutcome {
    let schedule = match config::validate(&config) {
        Ok(s) => s,
        Err(e) => {
            let reason = e.reason();
            mark_validity(client, &config, Err(&reason)).await;
            return ConfigOutcome::Invalid(reason);
        }
    };
    mark_validity(client, &config, Ok(())).await;
    if config.spec.paused == Some(true) {
        return ConfigOutcome::Paused;
    }
    let retried = match config::retry_policy(&config).ok().flatten() {
        Some(policy) if policy.max_retry > 0 => retry_due(client, &config, policy, now).await,
        _ => Vec::new(),
    };
    let slot = slot_session(client, &config, key, now, settings, schedule).await;
    if retried.is_empty() {
        slot
    } else {
        ConfigOutcome::Retried(retried, Box::new(slot))
    }
}

/// Create the session of the due cron slot, if one is due.
async fn slot_session(
    client: &Client,
    config: &BackupConfiguration,
    key: &str,
    now: DateTime<Utc>,
    settings: &SchedulerSettings,
    schedule: crate::schedule::Schedule,
) -> ConfigOutcome {
    let ns = config.namespace().unwrap_or_default();
    let created_at = config
        .metadata
        .creation_timestamp
        .as_ref()
        .map(crate::k8s_time);
    let Some(slot) = schedule.due_slot(now, settings.starting_deadline, created_at) else {
        return ConfigOutcome::NotDue;
    };
    let session = new_session(config, slot);
    let name = format!("{ns}/{}", session.name_any());
    let api: Api<BackupSession> = Api::namespaced(client.clone(), &ns);
    match api.create(&PostParams::default(), &session).await {
        Ok(_) => {
            tracing::info!(session = %name, slot = %slot, "created BackupSession");
            ConfigOutcome::Created(name)
        }
        Err(e) if api_code(&e) == Some(409) => ConfigOutcome::Existing(name),
        Err(e) => {
            tracing::warn!(config = %key, error = %e, "could not create BackupSession");
            ConfigOutcome::Error(e.to_string())
        }
    }
}

/// Create the retries of this configuration's failed sessions whose delay has passed
/// (`BackupRetryScheduled`); returns those created (`namespace/name`).
async fn retry_due(
    client: &Client,
    config: &BackupConfiguration,
    policy: config::RetryPolicy,
    now: DateTime<Utc>,
) -> Vec<String> {
    let ns = config.namespace().unwrap_or_default();
    let api: Api<BackupSession> = Api::namespaced(client.clone(), &ns);
    let sessions = match session::sessions_of(&api, "BackupConfiguration", &config.name_any()).await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(config = %config.name_any(), error = %e.reason(), "could not list sessions for retries");
            return Vec::new();
        }
    };
    let names: std::collections::HashSet<String> = sessions.iter().map(|s| s.name_any()).collect();
    let mut created = Vec::new();
    for failed in &sessions {
        let Some((name, at)) = session::retry_due(failed, policy) else {
            continue;
        };
        if at > now || names.contains(&name) {
            continue;
        }
        match session::create_retry(&api, failed).await {
            Ok(true) => created.push(format!("{ns}/{name}")),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(session = %name, error = %e.reason(), "could not create a retry")
            }
        }
    }
    created
}

async fn list(api: &Api<BackupConfiguration>) -> Result<Vec<BackupConfiguration>> {
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| Error::kube("listing BackupConfigurations", e))
}

/// The BackupSession Stash's CronJob would create for `slot`: invoker labels, `spec.invoker`,
/// and an ownerReference to the configuration.
pub fn new_session(config: &BackupConfiguration, slot: DateTime<Utc>) -> BackupSession {
    let name = session_name(&config.name_any(), slot);
    let labels = BTreeMap::from([
        (
            LABEL_INVOKER_TYPE.to_string(),
            "BackupConfiguration".to_string(),
        ),
        (LABEL_INVOKER_NAME.to_string(), config.name_any()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ]);
    let owner = OwnerReference {
        api_version: BackupConfiguration::api_version(&()).into_owned(),
        kind: BackupConfiguration::kind(&()).into_owned(),
        name: config.name_any(),
        uid: config.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut session = BackupSession::new(
        &name,
        BackupSessionSpec {
            invoker: BackupInvokerRef {
                api_group: Some(STASH_GROUP.into()),
                kind: "BackupConfiguration".into(),
                name: config.name_any(),
            },
            // As Stash's CronJob does: the retries this session may have (spec.retryConfig).
            retry_left: config::retry_policy(config)
                .ok()
                .flatten()
                .map(|p| p.max_retry as i32),
        },
    );
    session.metadata = ObjectMeta {
        name: Some(name),
        namespace: config.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    session
}

/// Set the configuration's phase (Ready / Invalid) and ValidationPassed condition, writing
/// only when something changes so ticks do not churn resourceVersions.
async fn mark_validity(
    client: &Client,
    config: &BackupConfiguration,
    validity: std::result::Result<(), &str>,
) {
    let Some(status) = status::config_validity(config, validity) else {
        return;
    };
    let api: Api<BackupConfiguration> =
        Api::namespaced(client.clone(), &config.namespace().unwrap_or_default());
    if let Err(e) = session::patch_status(&api, &config.name_any(), &status).await {
        tracing::warn!(config = %config.name_any(), error = %e, "could not write BackupConfiguration status");
        return;
    }
    // Stash records an Event when a configuration turns Invalid; once per change of reason,
    // as the status write above happens only then.
    if let Err(reason) = validity {
        record_event(
            client,
            config,
            EventType::Warning,
            "ResourceValidationFailed",
            reason,
        )
        .await;
    }
}
