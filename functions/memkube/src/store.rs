//! The shared in-memory state and every storage operation (create, replace, patch, delete,
//! list, watch subscription). HTTP concerns live in `server.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::patch::{JsonPatchError, json_patch, merge_patch};
use crate::selector::Selectors;
use crate::{Failure, ResourceKind};

/// Default number of write events kept for resuming watches.
pub(crate) const DEFAULT_HISTORY_LIMIT: usize = 10_000;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

/// The `reason` a real API server reports with an HTTP status code.
pub(crate) fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

impl ApiError {
    pub(crate) fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason_for(code),
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    pub(crate) fn about(mut self, kind: &ResourceKind, name: &str) -> Self {
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), json!(name));
        }
        if !kind.group.is_empty() {
            d.insert("group".into(), json!(kind.group));
        }
        d.insert("kind".into(), json!(kind.plural));
        self.details = Some(Value::Object(d));
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub(crate) fn not_found(kind: &ResourceKind, name: &str) -> Self {
        Self::new(404, format!("{} \"{name}\" not found", kind.resource_ref())).about(kind, name)
    }

    pub(crate) fn conflict(kind: &ResourceKind, name: &str) -> Self {
        Self::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                kind.resource_ref()
            ),
        )
        .about(kind, name)
    }

    /// 422 with one cause per `(field, detail)`, as a real server reports schema errors.
    pub(crate) fn invalid_fields(
        kind: &ResourceKind,
        name: &str,
        errors: &[(String, String)],
    ) -> Self {
        let text: Vec<String> = errors.iter().map(|(f, d)| format!("{f}: {d}")).collect();
        let message = if text.len() == 1 {
            text[0].clone()
        } else {
            format!("[{}]", text.join(", "))
        };
        let mut e = Self::new(
            422,
            format!("{} \"{name}\" is invalid: {message}", kind.kind_ref()),
        )
        .about(kind, name);
        if let Some(Value::Object(d)) = &mut e.details {
            let causes: Vec<Value> = errors
                .iter()
                .map(|(f, d)| json!({"reason": "FieldValueInvalid", "message": d, "field": f}))
                .collect();
            d.insert("causes".into(), Value::Array(causes));
        }
        e
    }

    pub(crate) fn invalid(kind: &ResourceKind, name: &str, field: &str, detail: &str) -> Self {
        let mut e = Self::new(
            422,
            format!(
                "{} \"{name}\" is invalid: {field}: {detail}",
                kind.kind_ref()
            ),
        )
        .about(kind, name);
        if let Some(Value::Object(d)) = &mut e.details {
            d.insert(
                "causes".into(),
                json!([{"reason": "FieldValueInvalid", "message": detail, "field": field}]),
            );
        }
        e
    }

    /// The `Status` object a real API server answers with.
    pub(crate) fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed write, kept in the history ring and pushed to live watchers.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) group: String,
    pub(crate) plural: String,
    pub(crate) namespace: String,
    pub(crate) etype: EventType,
    /// The object after the write (for deletes: the last state, with the delete's RV).
    pub(crate) object: Value,
    /// The object before a modification (lets selector-filtered watches turn a modification
    /// into ADDED/DELETED when the object starts/stops matching).
    pub(crate) old: Option<Value>,
}

impl Change {
    /// How a watcher with `sel` sees this change, if at all.
    pub(crate) fn view(&self, sel: &Selectors) -> Option<(EventType, &Value)> {
        let now = sel.matches(&self.object);
        match self.etype {
            EventType::Added | EventType::Deleted => now.then_some((self.etype, &self.object)),
            EventType::Modified => {
                let before = self.old.as_ref().is_none_or(|o| sel.matches(o));
                match (before, now) {
                    (true, true) => Some((EventType::Modified, &self.object)),
                    (false, true) => Some((EventType::Added, &self.object)),
                    (true, false) => Some((EventType::Deleted, &self.object)),
                    (false, false) => None,
                }
            }
        }
    }
}

struct WatchReg {
    group: String,
    plural: String,
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Arc<Change>>,
}

/// Where a new watch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchStart {
    /// Synthetic ADDED events for the current state (resourceVersion unset or "0", or
    /// sendInitialEvents=true), then live events.
    Current { initial_events_end: bool },
    /// Replay history newer than this resourceVersion, then live events.
    From(u64),
}

/// A registered watch: initial events to send first, then `rx` for live changes.
pub(crate) struct Subscription {
    pub(crate) id: u64,
    pub(crate) initial: Vec<(EventType, Value)>,
    /// `Some(rv)`: send a BOOKMARK with `k8s.io/initial-events-end` after the initial events.
    pub(crate) initial_end_bookmark: Option<u64>,
    /// Live changes with an RV at or below this were already covered by `initial`.
    pub(crate) start_rv: u64,
    pub(crate) rx: mpsc::UnboundedReceiver<Arc<Change>>,
}

type KindKey = (String, String);
type ObjKey = (String, String);

/// All mutable state of a [`crate::MemKube`].
pub(crate) struct Inner {
    kinds: BTreeMap<KindKey, ResourceKind>,
    objects: HashMap<KindKey, BTreeMap<ObjKey, Value>>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    /// Every change with an RV above this is still in `history`.
    history_floor: u64,
    history_limit: usize,
    watchers: HashMap<u64, WatchReg>,
    next_watch_id: u64,
    pub(crate) failures: Vec<Failure>,
    pub(crate) token: Option<String>,
    pub(crate) bookmark_interval: Duration,
    /// `<plural>/<namespace>/<name>: <path>` of every unknown field pruned from a write.
    pruned: Vec<String>,
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let map = obj.as_object_mut().expect("objects are JSON objects");
    let m = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("just ensured")
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// DNS-1123 subdomain, as required for the names of most kinds.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Everything except metadata (and status, when it is a subresource): what `generation`
/// tracks.
fn spec_part(kind: &ResourceKind, obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        if kind.status_subresource {
            m.remove("status");
        }
    }
    v
}

/// What a real server does to every write of a custom resource before storing it: empty
/// `omitempty` metadata fields vanish (typed ObjectMeta), and the body is pruned, defaulted
/// and validated against the CRD's schema.
fn admit(kind: &ResourceKind, name: &str, obj: &mut Value) -> ApiResult<Vec<String>> {
    let m = meta_mut(obj);
    for f in [
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "generateName",
    ] {
        let empty = match m.get(f) {
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty {
            m.remove(f);
        }
    }
    if let Some(schema) = &kind.schema {
        let (errors, pruned) = crate::schema::admit(schema, obj);
        if !errors.is_empty() {
            return Err(ApiError::invalid_fields(kind, name, &errors));
        }
        return Ok(pruned);
    }
    Ok(Vec::new())
}

fn is_secret(kind: &ResourceKind) -> bool {
    kind.group.is_empty() && kind.plural == "secrets"
}

/// What the real server does to Secrets on every write: `stringData` is merged into `data`
/// (base64) and dropped; `type` defaults to `Opaque`.
fn normalize_secret(obj: &mut Value) -> ApiResult<()> {
    let map = obj.as_object_mut().expect("objects are JSON objects");
    if let Some(sd) = map.remove("stringData") {
        let Value::Object(sd) = sd else {
            return Err(ApiError::bad_request("stringData must be an object"));
        };
        let data = map
            .entry("data")
            .or_insert_with(|| Value::Object(Map::new()));
        if !data.is_object() {
            *data = Value::Object(Map::new());
        }
        let data = data.as_object_mut().expect("just ensured");
        for (k, v) in sd {
            let Value::String(s) = v else {
                return Err(ApiError::bad_request(format!(
                    "stringData[{k:?}] must be a string"
                )));
            };
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(s)),
            );
        }
    }
    map.entry("type").or_insert_with(|| json!("Opaque"));
    Ok(())
}

/// The body of a PATCH request, by content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    StrategicMerge,
    Json,
    Apply,
}

impl PatchKind {
    pub(crate) fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

impl Inner {
    pub(crate) fn new() -> Self {
        Self {
            kinds: BTreeMap::new(),
            objects: HashMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_floor: 0,
            history_limit: DEFAULT_HISTORY_LIMIT,
            watchers: HashMap::new(),
            next_watch_id: 0,
            failures: Vec::new(),
            token: None,
            bookmark_interval: Duration::from_secs(1),
            pruned: Vec::new(),
        }
    }

    fn note_pruned(
        &mut self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        paths: Vec<String>,
    ) {
        for p in paths {
            self.pruned.push(format!(
                "{}/{}/{name}: {p}",
                kind.plural,
                ns.unwrap_or_default()
            ));
        }
    }

    pub(crate) fn pruned(&self) -> Vec<String> {
        self.pruned.clone()
    }

    pub(crate) fn register(&mut self, kind: ResourceKind) {
        self.kinds
            .insert((kind.group.clone(), kind.plural.clone()), kind);
    }

    pub(crate) fn kinds(&self) -> impl Iterator<Item = &ResourceKind> {
        self.kinds.values()
    }

    /// The registered kind served at `group`/`version`/`plural`.
    pub(crate) fn kind(&self, group: &str, version: &str, plural: &str) -> Option<ResourceKind> {
        self.kinds
            .get(&(group.to_string(), plural.to_string()))
            .filter(|k| k.version == version)
            .cloned()
    }

    pub(crate) fn kind_by_plural(&self, group: &str, plural: &str) -> Option<ResourceKind> {
        self.kinds
            .get(&(group.to_string(), plural.to_string()))
            .cloned()
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    pub(crate) fn set_history_limit(&mut self, n: usize) {
        self.history_limit = n;
        self.trim_history();
    }

    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.history_floor = self.rv;
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(c) = self.history.pop_front() {
                self.history_floor = c.rv;
            }
        }
    }

    pub(crate) fn active_watches(&self) -> usize {
        self.watchers.len()
    }

    pub(crate) fn unsubscribe(&mut self, id: u64) {
        self.watchers.remove(&id);
    }

    fn store(&self, kind: &ResourceKind) -> Option<&BTreeMap<ObjKey, Value>> {
        self.objects.get(&(kind.group.clone(), kind.plural.clone()))
    }

    fn store_mut(&mut self, kind: &ResourceKind) -> &mut BTreeMap<ObjKey, Value> {
        self.objects
            .entry((kind.group.clone(), kind.plural.clone()))
            .or_default()
    }

    /// Snapshot of every stored object of a kind, ordered by namespace then name.
    pub(crate) fn objects(&self, group: &str, plural: &str) -> Vec<Value> {
        self.objects
            .get(&(group.to_string(), plural.to_string()))
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    fn key(kind: &ResourceKind, ns: Option<&str>, name: &str) -> ObjKey {
        let ns = if kind.namespaced {
            ns.unwrap_or_default()
        } else {
            ""
        };
        (ns.to_string(), name.to_string())
    }

    pub(crate) fn get(
        &self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Value> {
        self.store(kind)
            .and_then(|s| s.get(&Self::key(kind, ns, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    fn matching(&self, kind: &ResourceKind, ns: Option<&str>, sel: &Selectors) -> Vec<Value> {
        self.store(kind)
            .map(|s| {
                s.iter()
                    .filter(|((ons, _), _)| ns.is_none_or(|n| !kind.namespaced || n == ons))
                    .filter(|(_, o)| sel.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn list_value(&self, kind: &ResourceKind, items: Vec<Value>) -> Value {
        json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.kind),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        })
    }

    /// A `<Kind>List` of the matching objects (`ns` = None: across all namespaces).
    pub(crate) fn list(&self, kind: &ResourceKind, ns: Option<&str>, sel: &Selectors) -> Value {
        self.list_value(kind, self.matching(kind, ns, sel))
    }

    /// Bumps the global resourceVersion, stores the change in history and pushes it to live
    /// watchers.
    fn record(
        &mut self,
        kind: &ResourceKind,
        namespace: &str,
        etype: EventType,
        object: Value,
        old: Option<Value>,
    ) {
        let change = Arc::new(Change {
            rv: self.rv,
            group: kind.group.clone(),
            plural: kind.plural.clone(),
            namespace: namespace.to_string(),
            etype,
            object,
            old,
        });
        self.watchers.retain(|_, w| {
            if w.group != change.group || w.plural != change.plural {
                return true;
            }
            if w.namespace.as_ref().is_some_and(|n| *n != change.namespace) {
                return true;
            }
            w.tx.send(change.clone()).is_ok()
        });
        if self.history_limit == 0 {
            self.history_floor = self.rv;
        } else {
            self.history.push_back(change);
            self.trim_history();
        }
    }

    fn check_type_meta(kind: &ResourceKind, obj: &mut Value) -> ApiResult<()> {
        let map = obj.as_object_mut().expect("objects are JSON objects");
        let av = kind.api_version();
        if let Some(v) = map.get("apiVersion").filter(|v| !v.is_null())
            && v.as_str() != Some(av.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({av})",
                v.as_str().unwrap_or("?")
            )));
        }
        if let Some(v) = map.get("kind").filter(|v| !v.is_null())
            && v.as_str() != Some(kind.kind.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind ({})",
                v.as_str().unwrap_or("?"),
                kind.kind
            )));
        }
        map.insert("apiVersion".into(), json!(av));
        map.insert("kind".into(), json!(kind.kind));
        if let Some(m) = map.get("metadata")
            && !m.is_object()
            && !m.is_null()
        {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        Ok(())
    }

    fn check_namespace(kind: &ResourceKind, ns: Option<&str>, obj: &mut Value) -> ApiResult<()> {
        let m = meta_mut(obj);
        if kind.namespaced {
            let ns = ns.unwrap_or_default();
            match m.get("namespace") {
                Some(Value::String(b)) if !b.is_empty() && b != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    /// POST: creates an object. `ns` is the namespace from the path.
    pub(crate) fn create(
        &mut self,
        kind: &ResourceKind,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        Self::check_type_meta(kind, &mut obj)?;
        Self::check_namespace(kind, ns, &mut obj)?;
        let m = meta_mut(&mut obj);
        let name = match m.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => match m.get("generateName") {
                Some(Value::String(prefix)) if !prefix.is_empty() => {
                    let prefix = prefix.clone();
                    let mut name = format!("{prefix}{}", random_suffix());
                    while self.get(kind, ns, &name).is_ok() {
                        name = format!("{prefix}{}", random_suffix());
                    }
                    name
                }
                _ => {
                    return Err(ApiError::invalid(
                        kind,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            },
        };
        if !valid_name(&name) {
            return Err(ApiError::invalid(
                kind,
                &name,
                "metadata.name",
                &format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case \
                     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                ),
            ));
        }
        if kind.namespaced && !dry_run {
            let ns_name = ns.unwrap_or_default();
            let namespaces = self.kind_by_plural("", "namespaces");
            if let Some(nk) = namespaces
                && self.get(&nk, None, ns_name).is_err()
            {
                return Err(
                    ApiError::new(404, format!("namespaces \"{ns_name}\" not found"))
                        .with_reason("NotFound")
                        .about(&nk, ns_name),
                );
            }
        }
        if self.get(kind, ns, &name).is_ok() {
            return Err(ApiError::new(
                409,
                format!("{} \"{name}\" already exists", kind.resource_ref()),
            )
            .with_reason("AlreadyExists")
            .about(kind, &name));
        }
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.insert("generation".into(), json!(1));
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(f);
        }
        let map = obj.as_object_mut().expect("objects are JSON objects");
        if kind.status_subresource {
            map.remove("status");
        }
        if kind.group.is_empty() && kind.plural == "namespaces" {
            let status = map.entry("status").or_insert_with(|| json!({}));
            if let Some(s) = status.as_object_mut() {
                s.entry("phase").or_insert_with(|| json!("Active"));
            }
        }
        if is_secret(kind) {
            normalize_secret(&mut obj)?;
        }
        let pruned = admit(kind, &name, &mut obj)?;
        if dry_run {
            return Ok(obj);
        }
        self.note_pruned(kind, ns, &name, pruned);
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = Self::key(kind, ns, &name);
        self.store_mut(kind).insert(key.clone(), obj.clone());
        self.record(kind, &key.0, EventType::Added, obj.clone(), None);
        Ok(obj)
    }

    /// Turns a candidate object into the new stored state of `stored`: server-managed metadata
    /// is kept, `generation` bumped on spec changes. Commits unless it is a no-op (then the
    /// stored object is returned unchanged, without a new resourceVersion or watch event).
    fn commit_update(
        &mut self,
        kind: &ResourceKind,
        stored: Value,
        mut cand: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        if !cand.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        Self::check_type_meta(kind, &mut cand)?;
        let name = meta_str(&stored, "name").unwrap_or_default().to_string();
        let ns = meta_str(&stored, "namespace")
            .unwrap_or_default()
            .to_string();
        if let Some(n) = meta_str(&cand, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if kind.namespaced
            && let Some(n) = meta_str(&cand, "namespace")
            && !n.is_empty()
            && n != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if is_secret(kind) {
            normalize_secret(&mut cand)?;
        }
        let stored_meta = meta(&stored).cloned().unwrap_or_default();
        let m = meta_mut(&mut cand);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "resourceVersion",
        ] {
            match stored_meta.get(f) {
                Some(v) => {
                    m.insert(f.into(), v.clone());
                }
                None => {
                    m.remove(f);
                }
            }
        }
        let old_gen = stored_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let pruned = admit(kind, &name, &mut cand)?;
        if !dry_run {
            let ns = (!ns.is_empty()).then_some(ns.as_str());
            self.note_pruned(kind, ns, &name, pruned);
        }
        // Generation follows the admitted object: a change pruned away is no change.
        let gen_now = if spec_part(kind, &cand) != spec_part(kind, &stored) {
            old_gen + 1
        } else {
            old_gen
        };
        meta_mut(&mut cand).insert("generation".into(), json!(gen_now));
        if cand == stored || dry_run {
            return Ok(cand);
        }
        self.rv += 1;
        meta_mut(&mut cand).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let kind_ns = if kind.namespaced { ns.as_str() } else { "" };
        self.store_mut(kind)
            .insert((kind_ns.to_string(), name), cand.clone());
        self.record(
            kind,
            kind_ns,
            EventType::Modified,
            cand.clone(),
            Some(stored),
        );
        Ok(cand)
    }

    /// Keeps `.status` from `stored` (main resource of a kind with a status subresource), or
    /// only takes `.status` from `cand` (the `/status` subresource).
    fn apply_status_rules(
        kind: &ResourceKind,
        stored: &Value,
        cand: Value,
        status_sub: bool,
    ) -> Value {
        if status_sub {
            let mut out = stored.clone();
            let map = out.as_object_mut().expect("objects are JSON objects");
            match cand.get("status") {
                Some(s) if !s.is_null() => {
                    map.insert("status".into(), s.clone());
                }
                _ => {
                    map.remove("status");
                }
            }
            out
        } else if kind.status_subresource {
            let mut out = cand;
            if let Some(map) = out.as_object_mut() {
                match stored.get("status") {
                    Some(s) => {
                        map.insert("status".into(), s.clone());
                    }
                    None => {
                        map.remove("status");
                    }
                }
            }
            out
        } else {
            cand
        }
    }

    /// PUT (on the object or its `/status`).
    pub(crate) fn replace(
        &mut self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status_sub: bool,
        dry_run: bool,
    ) -> ApiResult<Value> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(n) = meta_str(&body, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let stored = self.get(kind, ns, name)?;
        match meta(&body).and_then(|m| m.get("resourceVersion")) {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    kind,
                    name,
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                ));
            }
            Some(Value::String(rv)) if rv.is_empty() => {
                return Err(ApiError::invalid(
                    kind,
                    name,
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                ));
            }
            Some(Value::String(rv)) => {
                if Some(rv.as_str()) != meta_str(&stored, "resourceVersion") {
                    return Err(ApiError::conflict(kind, name));
                }
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "metadata.resourceVersion must be a string",
                ));
            }
        }
        let cand = Self::apply_status_rules(kind, &stored, body, status_sub);
        self.commit_update(kind, stored, cand, dry_run)
    }

    /// PATCH (on the object or its `/status`). Returns the HTTP code (201 when a server-side
    /// apply created the object) and the object.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        pk: PatchKind,
        patch: Value,
        status_sub: bool,
        dry_run: bool,
    ) -> ApiResult<(u16, Value)> {
        let stored = match self.get(kind, ns, name) {
            Ok(s) => s,
            Err(_) if pk == PatchKind::Apply && !status_sub => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request(
                        "an apply patch must be a JSON object",
                    ));
                }
                let mut obj = Value::Object(Map::new());
                merge_patch(&mut obj, &patch);
                if let Some(n) = meta_str(&obj, "name")
                    && n != name
                {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                meta_mut(&mut obj).insert("name".into(), json!(name));
                return self.create(kind, ns, obj, dry_run).map(|o| (201, o));
            }
            Err(e) => return Err(e),
        };
        let mut patched = stored.clone();
        match pk {
            PatchKind::Merge | PatchKind::StrategicMerge | PatchKind::Apply => {
                if !patch.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                merge_patch(&mut patched, &patch);
            }
            PatchKind::Json => json_patch(&mut patched, patch).map_err(|e| match e {
                JsonPatchError::Malformed(m) => ApiError::bad_request(m),
                JsonPatchError::Unprocessable(m) => ApiError::new(422, m).about(kind, name),
            })?,
        }
        if !patched.is_object() {
            return Err(ApiError::bad_request(
                "the patched object is not a JSON object",
            ));
        }
        match meta(&patched).and_then(|m| m.get("resourceVersion")) {
            None | Some(Value::Null) => {}
            Some(v) => {
                if v.as_str() != meta_str(&stored, "resourceVersion") {
                    return Err(ApiError::conflict(kind, name));
                }
            }
        }
        let cand = Self::apply_status_rules(kind, &stored, patched, status_sub);
        self.commit_update(kind, stored, cand, dry_run)
            .map(|o| (200, o))
    }

    fn remove_object(&mut self, kind: &ResourceKind, key: &ObjKey) -> Option<Value> {
        let mut obj = self.store_mut(kind).remove(key)?;
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.record(kind, &key.0, EventType::Deleted, obj.clone(), None);
        Some(obj)
    }

    /// DELETE of one object; honours `preconditions.uid` / `preconditions.resourceVersion`.
    pub(crate) fn delete(
        &mut self,
        kind: &ResourceKind,
        ns: Option<&str>,
        name: &str,
        opts: Option<Value>,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let stored = self.get(kind, ns, name)?;
        if let Some(pre) = opts.as_ref().and_then(|o| o.get("preconditions")) {
            for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(want) = pre.get(field).and_then(Value::as_str) {
                    let have = meta_str(&stored, field).unwrap_or_default();
                    if want != have {
                        return Err(ApiError::new(
                            409,
                            format!(
                                "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                            ),
                        )
                        .about(kind, name));
                    }
                }
            }
        }
        let uid = meta_str(&stored, "uid").unwrap_or_default().to_string();
        if !dry_run {
            self.remove_object(kind, &Self::key(kind, ns, name));
        }
        let mut details = json!({"name": name, "kind": kind.plural, "uid": uid});
        if !kind.group.is_empty() {
            details["group"] = json!(kind.group);
        }
        Ok(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }))
    }

    /// DELETE on a collection: deletes every matching object, answers with their list.
    pub(crate) fn delete_collection(
        &mut self,
        kind: &ResourceKind,
        ns: Option<&str>,
        sel: &Selectors,
        dry_run: bool,
    ) -> Value {
        let victims = self.matching(kind, ns, sel);
        let mut deleted = Vec::new();
        for v in victims {
            let key = Self::key(
                kind,
                meta_str(&v, "namespace"),
                meta_str(&v, "name").unwrap_or_default(),
            );
            if dry_run {
                deleted.push(v);
            } else if let Some(o) = self.remove_object(kind, &key) {
                deleted.push(o);
            }
        }
        self.list_value(kind, deleted)
    }

    /// Registers a watcher atomically with computing what it must be sent first, so no write
    /// falls between the initial events and the live stream.
    pub(crate) fn subscribe(
        &mut self,
        kind: &ResourceKind,
        ns: Option<&str>,
        sel: &Selectors,
        start: WatchStart,
    ) -> ApiResult<Subscription> {
        let mut initial = Vec::new();
        let mut initial_end_bookmark = None;
        let start_rv = match start {
            WatchStart::Current { initial_events_end } => {
                initial = self
                    .matching(kind, ns, sel)
                    .into_iter()
                    .map(|o| (EventType::Added, o))
                    .collect();
                if initial_events_end {
                    initial_end_bookmark = Some(self.rv);
                }
                self.rv
            }
            WatchStart::From(n) => {
                if n < self.history_floor {
                    return Err(ApiError::new(
                        410,
                        format!("too old resource version: {n} ({})", self.history_floor),
                    ));
                }
                let ns_key = ns.filter(|_| kind.namespaced);
                for c in &self.history {
                    if c.rv > n
                        && c.group == kind.group
                        && c.plural == kind.plural
                        && ns_key.is_none_or(|x| x == c.namespace)
                        && let Some((t, o)) = c.view(sel)
                    {
                        initial.push((t, o.clone()));
                    }
                }
                n.max(self.rv)
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_watch_id;
        self.next_watch_id += 1;
        self.watchers.insert(
            id,
            WatchReg {
                group: kind.group.clone(),
                plural: kind.plural.clone(),
                namespace: ns.filter(|_| kind.namespaced).map(str::to_string),
                tx,
            },
        );
        Ok(Subscription {
            id,
            initial,
            initial_end_bookmark,
            start_rv,
            rx,
        })
    }
}
