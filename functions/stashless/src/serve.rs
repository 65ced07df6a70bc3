//! Which Stash objects are ours. Clusters run Stash beside stashless for their other
//! workloads (KubeDB databases, volumes of Deployments): an object stashless does not serve
//! is never written, never given a session or an Event, never dispatched, and its Secrets
//! are never read. The scheduler, both functions, the sweep and the bridge all ask here.
//!
//! The rule, first match wins:
//! 1. the object's own `stashless.io/serve` annotation (`"true"` or `"false"`);
//! 2. for a BackupSession: its BackupConfiguration's annotation, then whether stashless's
//!    scheduler created it (`app.kubernetes.io/managed-by: stashless`);
//! 3. the target: a reference to another kind than AppBinding (a Deployment, a
//!    StatefulSet) is not ours; an AppBinding is ours when its `spec.type` is a Vault one
//!    ([`VAULT_TYPES`], case-insensitive) and not ours when it is another
//!    (`kubedb.com/postgres`);
//! 4. an AppBinding that is not there or has no type: ours only when the Task is a Vault
//!    task (`vault-backup-*` / `vault-restore-*`), so a Vault configuration whose
//!    AppBinding was renamed fails aloud instead of silently stopping; anything else is
//!    left alone.
//!
//! Reads here are of the Stash objects and AppBindings only (never a Secret).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client, ResourceExt};

use crate::api::{
    APPBINDING_KIND, AppBinding, BackupConfiguration, BackupSession, LABEL_MANAGED_BY, MANAGED_BY,
    RestoreSession, TargetRef, TaskRef,
};
use crate::error::{Error, Result, api_code};

/// `"true"`: serve this object whatever its target; `"false"`: leave it (e.g. a Vault
/// that Stash itself backs up).
pub const SERVE_ANNOTATION: &str = "stashless.io/serve";

/// `AppBinding.spec.type` values that name a Vault or OpenBao server: KubeVault's own, and
/// what a user without KubeVault writes by hand.
pub const VAULT_TYPES: &[&str] = &[
    "kubevault.com/vaultserver",
    "vault",
    "openbao",
    "hashicorp.com/vault",
    "openbao.org/openbao",
];

/// Stash's Task name prefixes of the Vault addon (`vault-backup-1.10.3`).
pub const VAULT_BACKUP_TASK: &str = "vault-backup-";
pub const VAULT_RESTORE_TASK: &str = "vault-restore-";

/// Whether an object is ours, and why (for logs and NotClaimed answers, never written to
/// the object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ours,
    Others(String),
}

impl Verdict {
    pub fn is_ours(&self) -> bool {
        matches!(self, Verdict::Ours)
    }

    /// The reason an object is left alone, for a NotClaimed answer.
    pub fn others_reason(self) -> Option<String> {
        match self {
            Verdict::Ours => None,
            Verdict::Others(why) => Some(why),
        }
    }
}

/// What the target of an object turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No `spec.target.ref` at all.
    NoRef,
    /// A reference to another kind (Deployment, StatefulSet, PVC, …).
    OtherKind(String),
    /// An AppBinding `namespace/name` with this `spec.type`.
    AppBinding { key: String, type_: Option<String> },
    /// An AppBinding reference to `namespace/name` that is not there.
    Missing(String),
}

/// The `stashless.io/serve` annotation: Some(true/false), or None when absent. Anything
/// other than true/false is treated as absent (and logged): the object is judged by its
/// target, as without the annotation.
pub fn annotation(meta: &ObjectMeta) -> Option<bool> {
    let raw = meta.annotations.as_ref()?.get(SERVE_ANNOTATION)?;
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => {
            tracing::warn!(
                object = meta.name.as_deref().unwrap_or_default(),
                value = %raw.chars().take(40).collect::<String>(),
                "{SERVE_ANNOTATION} is neither \"true\" nor \"false\": judged by its target"
            );
            None
        }
    }
}

/// Whether an AppBinding type is a Vault one.
pub fn is_vault_type(type_: &str) -> bool {
    VAULT_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(type_.trim()))
}

/// Whether a Task reference names a task with this prefix (`vault-backup-`).
pub fn is_vault_task(task: Option<&TaskRef>, prefix: &str) -> bool {
    task.and_then(|t| t.name.as_deref())
        .is_some_and(|n| n.starts_with(prefix))
}

/// The pure rule: annotations first (the object's own, then inherited from the
/// configuration), then whether stashless created it, then the target.
pub fn decide(
    own: Option<bool>,
    inherited: Option<bool>,
    created_by_stashless: bool,
    target: &Target,
    vault_task: bool,
) -> Verdict {
    match own.or(inherited) {
        Some(true) => return Verdict::Ours,
        Some(false) => {
            return Verdict::Others(format!(
                "annotated {SERVE_ANNOTATION}: \"false\": left to Stash"
            ));
        }
        None => {}
    }
    if created_by_stashless {
        return Verdict::Ours;
    }
    match target {
        Target::NoRef if vault_task => Verdict::Ours,
        Target::NoRef => Verdict::Others("it names no target: not a Vault backup".into()),
        Target::OtherKind(kind) => Verdict::Others(format!(
            "its target is a {kind}, not a Vault AppBinding: left to Stash"
        )),
        Target::AppBinding { type_: Some(t), .. } if is_vault_type(t) => Verdict::Ours,
        // No type at all: nothing says whose it is; a Vault task does.
        Target::AppBinding { type_: None, .. } if vault_task => Verdict::Ours,
        Target::AppBinding { key, type_ } => Verdict::Others(format!(
            "AppBinding {key} is of type {:?}, not a Vault one ({}): left to Stash",
            type_.as_deref().unwrap_or(""),
            VAULT_TYPES.join(", ")
        )),
        Target::Missing(_) if vault_task => Verdict::Ours,
        Target::Missing(key) => Verdict::Others(format!(
            "AppBinding {key} is not there and the task is not a Vault one: left to Stash"
        )),
    }
}

/// An AppBinding's `spec.type`, read untyped: another product's AppBinding need not fit
/// stashless's model of one. Blank counts as none.
pub fn appbinding_type_of(ab: &DynamicObject) -> Option<String> {
    ab.data
        .get("spec")
        .and_then(|s| s.get("type"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string)
}

/// `(namespace, name)` of an object.
type Key = (String, String);

/// An AppBinding as far as the rule cares: None when it is not there, else its `spec.type`.
type AppBindingType = Option<Option<String>>;

/// Looks objects up to apply the rule, remembering what it read: one per tick or sweep
/// (many objects share an AppBinding), one per event in the functions and the bridge.
pub struct Owners {
    client: Client,
    appbinding_types: Mutex<HashMap<Key, AppBindingType>>,
    configs: Mutex<HashMap<Key, Option<BackupConfiguration>>>,
}

impl Owners {
    pub fn new(client: &Client) -> Owners {
        Owners {
            client: client.clone(),
            appbinding_types: Mutex::default(),
            configs: Mutex::default(),
        }
    }

    /// Remember AppBindings already listed (untyped), so configurations targeting them
    /// need no read.
    pub fn knowing_appbindings<'a>(
        self,
        appbindings: impl IntoIterator<Item = &'a DynamicObject>,
    ) -> Owners {
        {
            let mut known = self.appbinding_types.lock().expect("not poisoned");
            for ab in appbindings {
                known.insert(
                    (ab.namespace().unwrap_or_default(), ab.name_any()),
                    Some(appbinding_type_of(ab)),
                );
            }
        }
        self
    }

    /// Remember configurations already listed, so sessions of them need no read.
    pub fn knowing_configs<'a>(
        self,
        configs: impl IntoIterator<Item = &'a BackupConfiguration>,
    ) -> Owners {
        {
            let mut known = self.configs.lock().expect("not poisoned");
            for c in configs {
                known.insert(
                    (c.namespace().unwrap_or_default(), c.name_any()),
                    Some(c.clone()),
                );
            }
        }
        self
    }

    /// Whether a BackupConfiguration is ours.
    pub async fn config(&self, config: &BackupConfiguration) -> Result<Verdict> {
        self.judge(
            &config.metadata,
            config.target_ref(),
            config.spec.task.as_ref(),
            VAULT_BACKUP_TASK,
        )
        .await
    }

    /// Whether a BackupSession is ours, with its BackupConfiguration when it has one.
    pub async fn backup_session(
        &self,
        session: &BackupSession,
    ) -> Result<(Verdict, Option<BackupConfiguration>)> {
        let ns = session.namespace().unwrap_or_default();
        let invoker = &session.spec.invoker;
        let config = if invoker.kind == "BackupConfiguration" {
            self.config_named(&ns, &invoker.name).await?
        } else {
            None
        };
        let own = annotation(&session.metadata);
        let created = session
            .labels()
            .get(LABEL_MANAGED_BY)
            .is_some_and(|v| v == MANAGED_BY);
        let verdict = match (&config, own) {
            (_, Some(_)) => decide(own, None, false, &Target::NoRef, false),
            (Some(c), None) => match annotation(&c.metadata) {
                Some(inherited) => decide(None, Some(inherited), created, &Target::NoRef, false),
                None if created => Verdict::Ours,
                None => self.config(c).await?,
            },
            (None, None) if created => Verdict::Ours,
            (None, None) => Verdict::Others(format!(
                "its invoker {} {ns}/{} is not there: not one stashless created",
                invoker.kind, invoker.name
            )),
        };
        Ok((verdict, config))
    }

    /// Whether a RestoreSession is ours.
    pub async fn restore_session(&self, rs: &RestoreSession) -> Result<Verdict> {
        self.judge(
            &rs.metadata,
            rs.target_ref(),
            rs.spec.task.as_ref(),
            VAULT_RESTORE_TASK,
        )
        .await
    }

    /// A configuration or RestoreSession: its own annotation, else its target and task.
    async fn judge(
        &self,
        meta: &ObjectMeta,
        target: Option<&TargetRef>,
        task: Option<&TaskRef>,
        task_prefix: &str,
    ) -> Result<Verdict> {
        let own = annotation(meta);
        if own.is_some() {
            return Ok(decide(own, None, false, &Target::NoRef, false));
        }
        let ns = meta.namespace.clone().unwrap_or_default();
        let target = self.target(target, &ns).await?;
        Ok(decide(
            None,
            None,
            false,
            &target,
            is_vault_task(task, task_prefix),
        ))
    }

    async fn target(&self, target: Option<&TargetRef>, ns: &str) -> Result<Target> {
        let Some(t) = target else {
            return Ok(Target::NoRef);
        };
        let kind = t.kind.as_deref().unwrap_or(APPBINDING_KIND);
        if kind != APPBINDING_KIND {
            return Ok(Target::OtherKind(kind.to_string()));
        }
        let ab_ns = t
            .namespace
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(ns)
            .to_string();
        let key = format!("{ab_ns}/{}", t.name);
        Ok(match self.appbinding_type(&ab_ns, &t.name).await? {
            Some(type_) => Target::AppBinding { key, type_ },
            None => Target::Missing(key),
        })
    }

    /// The AppBinding's `spec.type`: Some(type) when it exists, None when it does not. Read
    /// untyped: another product's AppBinding need not fit stashless's model of one.
    async fn appbinding_type(&self, ns: &str, name: &str) -> Result<AppBindingType> {
        let key = (ns.to_string(), name.to_string());
        if let Some(known) = self
            .appbinding_types
            .lock()
            .expect("not poisoned")
            .get(&key)
        {
            return Ok(known.clone());
        }
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            ns,
            &ApiResource::erase::<AppBinding>(&()),
        );
        let found = match api.get(name).await {
            Ok(o) => Some(appbinding_type_of(&o)),
            Err(e) if api_code(&e) == Some(404) => None,
            Err(e) => return Err(Error::kube(format!("reading AppBinding {ns}/{name}"), e)),
        };
        self.appbinding_types
            .lock()
            .expect("not poisoned")
            .insert(key, found.clone());
        Ok(found)
    }

    /// A BackupConfiguration by name, None when it is not there.
    pub async fn config_named(&self, ns: &str, name: &str) -> Result<Option<BackupConfiguration>> {
        let key = (ns.to_string(), name.to_string());
        if let Some(known) = self.configs.lock().expect("not poisoned").get(&key) {
            return Ok(known.clone());
        }
        let api: Api<BackupConfiguration> = Api::namespaced(self.client.clone(), ns);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("reading BackupConfiguration {ns}/{name}"), e))?;
        self.configs
            .lock()
            .expect("not poisoned")
            .insert(key, found.clone());
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ab(t: &str) -> Target {
        Target::AppBinding {
            key: "ns/x".into(),
            type_: Some(t.into()),
        }
    }

    #[test]
    fn vault_appbindings_are_ours_and_others_are_left_alone() {
        for t in VAULT_TYPES
            .iter()
            .chain(&["Vault", " KubeVault.com/VaultServer "])
        {
            assert_eq!(
                decide(None, None, false, &ab(t), false),
                Verdict::Ours,
                "{t}"
            );
        }
        for t in ["kubedb.com/postgres", "kubedb.com/mongodb", "", "vaultish"] {
            let v = decide(None, None, false, &ab(t), true);
            assert!(
                matches!(&v, Verdict::Others(why) if why.contains("not a Vault one")),
                "{t}: {v:?}"
            );
        }
        let no_type = Target::AppBinding {
            key: "ns/x".into(),
            type_: None,
        };
        assert!(decide(None, None, false, &no_type, true).is_ours());
        assert!(!decide(None, None, false, &no_type, false).is_ours());
        let deployment = Target::OtherKind("Deployment".into());
        assert!(
            matches!(decide(None, None, false, &deployment, true), Verdict::Others(why) if why.contains("Deployment"))
        );
    }

    #[test]
    fn annotations_win_then_our_label_then_the_task_for_a_missing_appbinding() {
        let pg = ab("kubedb.com/postgres");
        assert!(decide(Some(true), None, false, &pg, false).is_ours());
        assert!(!decide(Some(false), None, true, &ab("vault"), true).is_ours());
        // The session's own annotation beats its configuration's.
        assert!(decide(Some(true), Some(false), false, &pg, false).is_ours());
        assert!(!decide(None, Some(false), true, &ab("vault"), true).is_ours());
        assert!(decide(None, None, true, &pg, false).is_ours());
        let missing = Target::Missing("ns/gone".into());
        assert!(decide(None, None, false, &missing, true).is_ours());
        assert!(!decide(None, None, false, &missing, false).is_ours());
        assert!(decide(None, None, false, &Target::NoRef, true).is_ours());
        assert!(!decide(None, None, false, &Target::NoRef, false).is_ours());
    }

    #[test]
    fn the_annotation_reads_true_or_false_only() {
        let meta = |v: &str| ObjectMeta {
            annotations: Some([(SERVE_ANNOTATION.to_string(), v.to_string())].into()),
            ..Default::default()
        };
        assert_eq!(annotation(&meta("true")), Some(true));
        assert_eq!(annotation(&meta(" False ")), Some(false));
        assert_eq!(annotation(&meta("yes")), None);
        assert_eq!(annotation(&ObjectMeta::default()), None);
        let task = |n: &str| TaskRef {
            name: Some(n.into()),
            params: vec![],
        };
        assert!(is_vault_task(
            Some(&task("vault-backup-1.10.3")),
            VAULT_BACKUP_TASK
        ));
        assert!(!is_vault_task(
            Some(&task("postgres-backup-14")),
            VAULT_BACKUP_TASK
        ));
        assert!(!is_vault_task(None, VAULT_BACKUP_TASK));
    }
}
