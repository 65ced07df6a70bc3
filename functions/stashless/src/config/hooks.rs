//! Stash's hooks (`spec.hooks` of a BackupConfiguration or RestoreSession) checked into
//! what to call: one action per hook (`httpGet`, `httpPost` or `tcpSocket`, with the
//! Kubernetes Handler fields), when a post-hook runs (`executionPolicy`), and templates
//! limited to the fields of Stash's session summary. `exec` is refused: a function has no
//! pod to run a command in. Pure: no I/O; [`crate::hooks`] runs what this returns.

use serde::Deserialize;
use serde_json::Value;

use crate::api::{
    APPBINDING_API_VERSION, APPBINDING_KIND, Condition, STASH_GROUP, TargetRef, go_duration,
};
use crate::error::{Error, Result};

/// Which hook: Stash's four, each with its condition type and reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    PreBackup,
    PostBackup,
    PreRestore,
    PostRestore,
}

impl Stage {
    /// The field under `spec.hooks`.
    pub fn field(self) -> &'static str {
        match self {
            Stage::PreBackup => "preBackup",
            Stage::PostBackup => "postBackup",
            Stage::PreRestore => "preRestore",
            Stage::PostRestore => "postRestore",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Stage::PreBackup => "PreBackup",
            Stage::PostBackup => "PostBackup",
            Stage::PreRestore => "PreRestore",
            Stage::PostRestore => "PostRestore",
        }
    }

    /// Stash's condition type: `PreBackupHookExecutionSucceeded`, ….
    pub fn condition(self) -> String {
        format!("{}HookExecutionSucceeded", self.title())
    }

    /// Stash's condition reason: `SuccessfullyExecutedPreBackupHook` or
    /// `FailedToExecutePreBackupHook`, ….
    pub fn reason(self, ok: bool) -> String {
        if ok {
            format!("SuccessfullyExecuted{}Hook", self.title())
        } else {
            format!("FailedToExecute{}Hook", self.title())
        }
    }

    pub fn is_post(self) -> bool {
        matches!(self, Stage::PostBackup | Stage::PostRestore)
    }
}

/// When a post-hook runs (`executionPolicy`; Stash's default is `Always`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    Always,
    OnSuccess,
    OnFailure,
    /// After a failed backup that no retry follows (`retryConfig` exhausted or absent).
    OnFinalRetryFailure,
}

impl Policy {
    /// Whether the post-hook runs for a session that `succeeded` (or failed with a retry to
    /// come: `retry_follows`).
    pub fn runs(self, succeeded: bool, retry_follows: bool) -> bool {
        match self {
            Policy::Always => true,
            Policy::OnSuccess => succeeded,
            Policy::OnFailure => !succeeded,
            Policy::OnFinalRetryFailure => !succeeded && !retry_follows,
        }
    }
}

/// What a hook does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Http(HttpCall),
    /// Succeeds when a TCP connection opens.
    Tcp {
        host: Option<String>,
        port: u16,
    },
}

/// An `httpGet` or `httpPost` as Kubernetes defines it; success is a status in 200–399.
/// Strings may hold templates ([`render`]), filled in when the hook runs.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpCall {
    pub post: bool,
    pub https: bool,
    /// Absent: the target's own address (the Vault the AppBinding names).
    pub host: Option<String>,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Body>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Text(String),
    /// `application/x-www-form-urlencoded` pairs.
    Form(Vec<(String, String)>),
}

/// One checked hook.
#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    pub stage: Stage,
    pub policy: Policy,
    pub action: Action,
}

impl Hook {
    /// The host it calls; `None`: the target's own address.
    pub fn host(&self) -> Option<&str> {
        match &self.action {
            Action::Http(c) => c.host.as_deref(),
            Action::Tcp { host, .. } => host.as_deref(),
        }
    }
}

/// The pre- and post-hook of one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hooks {
    pub pre: Option<Hook>,
    pub post: Option<Hook>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.pre.is_none() && self.post.is_none()
    }

    /// The post-hook to run after a session that `succeeded` (or failed with a retry to
    /// come: `retry_follows`), given the session's `conditions`: by its executionPolicy,
    /// and never after a failed pre-hook, as Stash runs them.
    pub fn post_for(
        &self,
        conditions: &[Condition],
        succeeded: bool,
        retry_follows: bool,
    ) -> Option<&Hook> {
        let pre_failed = self.pre.as_ref().is_some_and(|pre| {
            let type_ = pre.stage.condition();
            conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "False")
        });
        self.post
            .as_ref()
            .filter(|post| !pre_failed && post.policy.runs(succeeded, retry_follows))
    }

    /// The hosts the hooks name (not the target's own address).
    pub fn hosts(&self) -> Vec<&str> {
        [self.pre.as_ref(), self.post.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(Hook::host)
            .collect()
    }
}

/// `spec.hooks` of a BackupConfiguration: `preBackup` and `postBackup`.
pub fn backup_hooks(spec: Option<&Value>) -> Result<Hooks> {
    hooks(spec, Stage::PreBackup, Stage::PostBackup)
}

/// `spec.hooks` of a RestoreSession: `preRestore` and `postRestore`.
pub fn restore_hooks(spec: Option<&Value>) -> Result<Hooks> {
    hooks(spec, Stage::PreRestore, Stage::PostRestore)
}

fn hooks(spec: Option<&Value>, pre: Stage, post: Stage) -> Result<Hooks> {
    let Some(map) = spec.filter(|v| !v.is_null()) else {
        return Ok(Hooks::default());
    };
    let Some(map) = map.as_object() else {
        return invalid("spec.hooks is not an object".into());
    };
    let mut out = Hooks::default();
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        let stage = if key == pre.field() {
            pre
        } else if key == post.field() {
            post
        } else {
            return invalid(format!(
                "spec.hooks.{key} is not a hook here: this object takes spec.hooks.{} and spec.hooks.{}",
                pre.field(),
                post.field()
            ));
        };
        let hook = handler(stage, value)?;
        if stage == pre {
            out.pre = Some(hook);
        } else {
            out.post = Some(hook);
        }
    }
    Ok(out)
}

/// The Handler shape of the CRDs (Stash's `prober.Handler`), unknown fields refused so a
/// typo is not silently a hook that does nothing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawHandler {
    exec: Option<Value>,
    http_get: Option<RawHttp>,
    http_post: Option<RawHttp>,
    tcp_socket: Option<RawTcp>,
    container_name: Option<String>,
    execution_policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawHttp {
    host: Option<String>,
    port: Option<Value>,
    path: Option<String>,
    scheme: Option<String>,
    #[serde(default)]
    http_headers: Vec<RawHeader>,
    body: Option<String>,
    #[serde(default)]
    form: Vec<RawForm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForm {
    key: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    host: Option<String>,
    port: Option<Value>,
}

fn handler(stage: Stage, value: &Value) -> Result<Hook> {
    let at = format!("spec.hooks.{}", stage.field());
    let raw: RawHandler = serde_json::from_value(value.clone())
        .map_err(|e| Error::invalid(format!("{at} is not a hook handler: {e}")))?;
    if raw.exec.is_some() {
        return invalid(format!(
            "{at}.exec cannot run: stashless runs as a function outside the cluster, with no pod to exec a command in; call an endpoint instead ({at}.httpPost to a service that does the work), or leave this target to Stash (stashless.io/serve: \"false\")"
        ));
    }
    if raw.container_name.as_deref().is_some_and(|c| !c.is_empty()) {
        return invalid(format!(
            "{at}.containerName is set: it names the container of an exec hook, which stashless cannot run; remove containerName"
        ));
    }
    let policy = match (raw.execution_policy.as_deref(), stage.is_post()) {
        (None | Some(""), _) => Policy::Always,
        (Some(p), false) => {
            return invalid(format!(
                "{at}.executionPolicy is {p:?}: a pre-hook always runs first; executionPolicy applies to post-hooks only"
            ));
        }
        (Some("Always"), true) => Policy::Always,
        (Some("OnSuccess"), true) => Policy::OnSuccess,
        (Some("OnFailure"), true) => Policy::OnFailure,
        (Some("OnFinalRetryFailure"), true) if stage == Stage::PostBackup => {
            Policy::OnFinalRetryFailure
        }
        (Some(p), true) => {
            let allowed = if stage == Stage::PostBackup {
                "Always, OnSuccess, OnFailure or OnFinalRetryFailure"
            } else {
                "Always, OnSuccess or OnFailure (a restore is not retried)"
            };
            return invalid(format!(
                "{at}.executionPolicy is {p:?}: it must be {allowed}"
            ));
        }
    };
    let mut actions = Vec::new();
    if let Some(h) = raw.http_get {
        actions.push(http(&format!("{at}.httpGet"), h, false)?);
    }
    if let Some(h) = raw.http_post {
        actions.push(http(&format!("{at}.httpPost"), h, true)?);
    }
    if let Some(t) = raw.tcp_socket {
        let where_ = format!("{at}.tcpSocket");
        actions.push(Action::Tcp {
            host: host(&where_, t.host)?,
            port: port(&where_, t.port.as_ref())?,
        });
    }
    let action = match actions.len() {
        1 => actions.remove(0),
        0 => {
            return invalid(format!(
                "{at} has no action: set one of httpGet, httpPost or tcpSocket"
            ));
        }
        _ => {
            return invalid(format!(
                "{at} sets more than one of httpGet, httpPost and tcpSocket: a hook does one thing"
            ));
        }
    };
    Ok(Hook {
        stage,
        policy,
        action,
    })
}

fn http(at: &str, h: RawHttp, post: bool) -> Result<Action> {
    let https = match h.scheme.as_deref() {
        None | Some("") => false,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) => return invalid(format!("{at}.scheme is {s:?}: it must be HTTP or HTTPS")),
    };
    let mut path = h.path.unwrap_or_default();
    check_template(&format!("{at}.path"), &path)?;
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let mut headers = Vec::new();
    for (i, hd) in h.http_headers.into_iter().enumerate() {
        let name_ok = http::HeaderName::from_bytes(hd.name.as_bytes()).is_ok();
        if !name_ok {
            return invalid(format!(
                "{at}.httpHeaders[{i}].name {:?} is not an HTTP header name",
                hd.name
            ));
        }
        check_template(&format!("{at}.httpHeaders[{i}].value"), &hd.value)?;
        headers.push((hd.name, hd.value));
    }
    let body = match (h.body.filter(|b| !b.is_empty()), h.form.is_empty(), post) {
        (None, true, _) => None,
        (_, _, false) => {
            return invalid(format!(
                "{at} sets a body or form: an httpGet sends none; use httpPost"
            ));
        }
        (Some(_), false, true) => {
            return invalid(format!(
                "{at} sets both body and form: send one (form is sent as application/x-www-form-urlencoded)"
            ));
        }
        (Some(b), true, true) => {
            check_template(&format!("{at}.body"), &b)?;
            Some(Body::Text(b))
        }
        (None, false, true) => {
            let mut pairs = Vec::new();
            for (i, f) in h.form.into_iter().enumerate() {
                for v in f.values {
                    check_template(&format!("{at}.form[{i}].values"), &v)?;
                    pairs.push((f.key.clone(), v));
                }
            }
            Some(Body::Form(pairs))
        }
    };
    Ok(Action::Http(HttpCall {
        post,
        https,
        host: host(at, h.host)?,
        port: port(at, h.port.as_ref())?,
        path,
        headers,
        body,
    }))
}

fn host(at: &str, host: Option<String>) -> Result<Option<String>> {
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    check_template(&format!("{at}.host"), &host)?;
    if host.contains("://") || host.contains('/') || host.chars().any(char::is_whitespace) {
        return invalid(format!(
            "{at}.host {host:?} is not a host name or address: give the host alone (scheme, port and path have their own fields)"
        ));
    }
    Ok(Some(host))
}

fn port(at: &str, port: Option<&Value>) -> Result<u16> {
    let n = match port {
        None | Some(Value::Null) => {
            return invalid(format!("{at}.port is required"));
        }
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => {
            s.parse::<i64>().ok()
        }
        Some(Value::String(s)) => {
            return invalid(format!(
                "{at}.port {s:?} is a named port: stashless calls from outside the pod and cannot look up container port names; give the port number"
            ));
        }
        Some(other) => {
            return invalid(format!("{at}.port {other} is not a port number"));
        }
    };
    match n {
        Some(n @ 1..=65535) => Ok(n as u16),
        _ => invalid(format!(
            "{at}.port {} is out of range: a port is 1–65535",
            port.map(Value::to_string).unwrap_or_default()
        )),
    }
}

fn invalid<T>(reason: String) -> Result<T> {
    Err(Error::invalid(reason))
}

// ------------------------------------------------------------------ templates

/// What a hook's templates can read: Stash's session summary (`.Name`, `.Namespace`,
/// `.Invoker.Kind`, `.Target.Name`, `.Status.Phase`, `.Status.Error`, …). A pre-hook sees
/// an empty status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub name: String,
    pub namespace: String,
    pub invoker_api_group: String,
    pub invoker_kind: String,
    pub invoker_name: String,
    pub target_api_version: String,
    pub target_kind: String,
    pub target_name: String,
    pub target_namespace: String,
    pub phase: String,
    pub duration: String,
    pub error: String,
}

/// The template fields stashless fills. Stash renders hooks with Go's text/template; only
/// field references are supported here, and anything else is refused when checked.
const FIELDS: &[&str] = &[
    ".Name",
    ".Namespace",
    ".Invoker.ApiGroup",
    ".Invoker.Kind",
    ".Invoker.Name",
    ".Target.ApiVersion",
    ".Target.Kind",
    ".Target.Name",
    ".Target.Namespace",
    ".Status.Phase",
    ".Status.Duration",
    ".Status.Error",
];

/// How a session ended, for a post-hook's summary: phase, error (empty on success), and
/// how long it took.
pub type Ended<'a> = (&'a str, String, std::time::Duration);

/// [`Ended`] from a session's error (`None`: it succeeded) and duration.
pub fn ended(error: Option<String>, took: std::time::Duration) -> Ended<'static> {
    match error {
        None => ("Succeeded", String::new(), took),
        Some(e) => ("Failed", e, took),
    }
}

impl Summary {
    /// Stash's summary of session `name` in `namespace`, invoked by `invoker` (kind, name),
    /// backing up or restoring `target`; `ended` for a post-hook, `None` for a pre-hook.
    pub fn of(
        name: &str,
        namespace: &str,
        invoker: (&str, &str),
        target: Option<&TargetRef>,
        ended: Option<Ended<'_>>,
    ) -> Summary {
        let target = target.cloned().unwrap_or_default();
        let (phase, error, duration) = match ended {
            Some((phase, error, d)) => (phase.to_string(), error, go_duration(d)),
            None => Default::default(),
        };
        Summary {
            name: name.into(),
            namespace: namespace.into(),
            invoker_api_group: STASH_GROUP.into(),
            invoker_kind: invoker.0.into(),
            invoker_name: invoker.1.into(),
            target_api_version: target
                .api_version
                .unwrap_or_else(|| APPBINDING_API_VERSION.into()),
            target_kind: target.kind.unwrap_or_else(|| APPBINDING_KIND.into()),
            target_name: target.name,
            target_namespace: target.namespace.unwrap_or_else(|| namespace.into()),
            phase,
            duration,
            error,
        }
    }

    fn field(&self, name: &str) -> &str {
        match name {
            ".Name" => &self.name,
            ".Namespace" => &self.namespace,
            ".Invoker.ApiGroup" => &self.invoker_api_group,
            ".Invoker.Kind" => &self.invoker_kind,
            ".Invoker.Name" => &self.invoker_name,
            ".Target.ApiVersion" => &self.target_api_version,
            ".Target.Kind" => &self.target_kind,
            ".Target.Name" => &self.target_name,
            ".Target.Namespace" => &self.target_namespace,
            ".Status.Phase" => &self.phase,
            ".Status.Duration" => &self.duration,
            ".Status.Error" => &self.error,
            _ => "",
        }
    }
}

/// One `{{ … }}` action: its span in the text, the trims it asks for, and the field.
struct Directive {
    start: usize,
    end: usize,
    trim_left: bool,
    trim_right: bool,
    field: String,
}

fn actions(text: &str) -> std::result::Result<Vec<Directive>, String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("{{") {
        let start = from + i;
        let Some(j) = text[start + 2..].find("}}") else {
            return Err("a \"{{\" is never closed by \"}}\"".into());
        };
        let end = start + 2 + j + 2;
        let mut inner = &text[start + 2..end - 2];
        let trim_left = inner.starts_with("- ");
        if trim_left {
            inner = &inner[2..];
        }
        let trim_right = inner.ends_with(" -");
        if trim_right {
            inner = &inner[..inner.len() - 2];
        }
        let field = inner.trim().to_string();
        if !FIELDS.contains(&field.as_str()) {
            return Err(format!(
                "the template action {{{{{}}}}} is not supported: stashless fills the summary's fields only ({})",
                &text[start + 2..end - 2],
                FIELDS.join(", ")
            ));
        }
        out.push(Directive {
            start,
            end,
            trim_left,
            trim_right,
            field,
        });
        from = end;
    }
    Ok(out)
}

fn check_template(at: &str, text: &str) -> Result<()> {
    actions(text)
        .map(|_| ())
        .map_err(|why| Error::invalid(format!("{at}: {why}")))
}

/// Fill a checked template with the summary's fields (`{{- … -}}` trims white space on
/// that side, as in Go).
pub fn render(text: &str, summary: &Summary) -> String {
    let Ok(actions) = actions(text) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    let mut trim_next = false;
    for a in actions {
        let mut lit = &text[from..a.start];
        if trim_next {
            lit = lit.trim_start();
        }
        if a.trim_left {
            lit = lit.trim_end();
        }
        out.push_str(lit);
        out.push_str(summary.field(&a.field));
        trim_next = a.trim_right;
        from = a.end;
    }
    let rest = &text[from..];
    out.push_str(if trim_next { rest.trim_start() } else { rest });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(r: Result<Hooks>) -> String {
        r.expect_err("should be refused").reason()
    }

    #[test]
    fn absent_or_empty_hooks_are_none() {
        assert!(backup_hooks(None).unwrap().is_empty());
        assert!(backup_hooks(Some(&Value::Null)).unwrap().is_empty());
        assert!(backup_hooks(Some(&json!({}))).unwrap().is_empty());
    }

    #[test]
    fn http_post_with_defaults() {
        let h = backup_hooks(Some(&json!({
            "preBackup": {"httpPost": {"port": 8080, "path": "quiesce", "body": "{}",
                "httpHeaders": [{"name": "Content-Type", "value": "application/json"}]}},
            "postBackup": {"executionPolicy": "OnFailure", "httpGet": {"host": "notify.ops.svc", "port": "443", "scheme": "https"}}
        })))
        .unwrap();
        let pre = h.pre.unwrap();
        assert_eq!(pre.stage, Stage::PreBackup);
        assert_eq!(pre.policy, Policy::Always);
        let Action::Http(call) = &pre.action else {
            panic!("http")
        };
        assert!(call.post && !call.https);
        assert_eq!((call.host.as_deref(), call.port), (None, 8080));
        assert_eq!(call.path, "/quiesce");
        assert_eq!(call.body, Some(Body::Text("{}".into())));
        let post = h.post.unwrap();
        assert_eq!(post.policy, Policy::OnFailure);
        let Action::Http(call) = &post.action else {
            panic!("http")
        };
        assert!(!call.post && call.https);
        assert_eq!(
            (call.host.as_deref(), call.port),
            (Some("notify.ops.svc"), 443)
        );
    }

    #[test]
    fn tcp_and_form() {
        let h = restore_hooks(Some(&json!({
            "preRestore": {"tcpSocket": {"port": 5432, "host": "10.0.0.1"}},
            "postRestore": {"httpPost": {"port": 80, "form": [{"key": "a", "values": ["1", "2"]}]}}
        })))
        .unwrap();
        assert_eq!(
            h.pre.unwrap().action,
            Action::Tcp {
                host: Some("10.0.0.1".into()),
                port: 5432
            }
        );
        let Action::Http(call) = h.post.unwrap().action else {
            panic!("http")
        };
        assert_eq!(
            call.body,
            Some(Body::Form(vec![
                ("a".into(), "1".into()),
                ("a".into(), "2".into())
            ]))
        );
    }

    #[test]
    fn bad_hooks_are_refused_with_the_field() {
        let cases = [
            (
                json!({"preBackup": {"exec": {"command": ["sh", "-c", "true"]}}}),
                "spec.hooks.preBackup.exec cannot run",
            ),
            (
                json!({"preBackup": {}}),
                "spec.hooks.preBackup has no action",
            ),
            (
                json!({"preBackup": {"httpGet": {"port": 1}, "tcpSocket": {"port": 1}}}),
                "more than one",
            ),
            (
                json!({"preBackup": {"httpGet": {"port": "http"}}}),
                "is a named port",
            ),
            (
                json!({"preBackup": {"httpGet": {"port": 70000}}}),
                "out of range",
            ),
            (json!({"preBackup": {"httpGet": {}}}), "port is required"),
            (
                json!({"preBackup": {"httpGet": {"port": 80, "scheme": "ftp"}}}),
                "HTTP or HTTPS",
            ),
            (
                json!({"preBackup": {"httpGet": {"port": 80, "host": "http://x"}}}),
                "not a host name",
            ),
            (
                json!({"preBackup": {"httpGet": {"port": 80, "body": "x"}}}),
                "an httpGet sends none",
            ),
            (
                json!({"preBackup": {"executionPolicy": "OnSuccess", "httpGet": {"port": 80}}}),
                "post-hooks only",
            ),
            (
                json!({"postBackup": {"executionPolicy": "Sometimes", "httpGet": {"port": 80}}}),
                "it must be Always",
            ),
            (
                json!({"preRestore": {"httpGet": {"port": 80}}}),
                "spec.hooks.preRestore is not a hook here",
            ),
            (
                json!({"preBackup": {"httpGet": {"port": 80, "pth": "/"}}}),
                "unknown field `pth`",
            ),
            (
                json!({"postBackup": {"httpPost": {"port": 80, "body": "{{ .Status.Eror }}"}}}),
                "{{ .Status.Eror }} is not supported",
            ),
            (
                json!({"postBackup": {"httpPost": {"port": 80, "body": "{{ printf \"%s\" .Name }}"}}}),
                "is not supported",
            ),
            (
                json!({"postBackup": {"httpPost": {"port": 80, "body": "{{ .Name "}}}),
                "never closed",
            ),
            (
                json!({"preBackup": {"containerName": "vault", "httpGet": {"port": 80}}}),
                "containerName",
            ),
        ];
        for (spec, want) in cases {
            let got = reason(backup_hooks(Some(&spec)));
            assert!(got.contains(want), "{spec}: {got}");
        }
        let got = reason(restore_hooks(Some(&json!({
            "postRestore": {"executionPolicy": "OnFinalRetryFailure", "httpGet": {"port": 80}}
        }))));
        assert!(got.contains("a restore is not retried"), "{got}");
    }

    #[test]
    fn policies() {
        use Policy::*;
        // (policy, succeeded, retry follows) → runs
        let table = [
            (Always, true, false, true),
            (Always, false, true, true),
            (OnSuccess, true, false, true),
            (OnSuccess, false, false, false),
            (OnFailure, false, true, true),
            (OnFailure, true, false, false),
            (OnFinalRetryFailure, false, false, true),
            (OnFinalRetryFailure, false, true, false),
            (OnFinalRetryFailure, true, false, false),
        ];
        for (p, ok, retry, runs) in table {
            assert_eq!(p.runs(ok, retry), runs, "{p:?} {ok} {retry}");
        }
    }

    #[test]
    fn templates_fill_fields_and_trim() {
        let s = Summary {
            name: "vault-backup-1".into(),
            namespace: "demo".into(),
            phase: "Failed".into(),
            error: "boom".into(),
            ..Default::default()
        };
        assert_eq!(
            render(
                "{{ .Namespace }}/{{.Name}} {{- \n  .Status.Phase -}}  : {{ .Status.Error }}",
                &s
            ),
            "demo/vault-backup-1Failed: boom"
        );
        assert_eq!(render("no templates", &s), "no templates");
        assert_eq!(render("{{ .Status.Duration }}", &s), "");
    }

    #[test]
    fn stage_names_are_stashs() {
        assert_eq!(
            Stage::PreBackup.condition(),
            "PreBackupHookExecutionSucceeded"
        );
        assert_eq!(
            Stage::PostRestore.reason(false),
            "FailedToExecutePostRestoreHook"
        );
        assert_eq!(
            Stage::PostBackup.reason(true),
            "SuccessfullyExecutedPostBackupHook"
        );
    }
}
