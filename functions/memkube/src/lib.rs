//! # memkube — an in-memory Kubernetes API server
//!
//! `memkube` serves the Kubernetes HTTP/JSON REST protocol from process memory, so the real
//! `kube` client (`kube::Client`, `kube::Api`, `kube::runtime::watcher`) can run against it in
//! tests and in the local demo. It aims to behave like a kube-apiserver 1.2x/1.30 serving
//! CustomResourceDefinitions, for the subset of the protocol that controllers use.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use memkube::{MemKube, ResourceKind};
//! let kube = MemKube::new(); // core v1 Secret, Event, Namespace, ConfigMap and EndpointSlice pre-registered
//! kube.register(ResourceKind::new("stash.appscode.com", "v1beta1", "BackupSession", "backupsessions").with_status());
//! let server = kube.serve().await?; // http://127.0.0.1:<random port>
//! println!("{}", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## What is modelled
//!
//! * **Paths**: `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/status]]` and
//!   `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/status]]`; listing/watching a
//!   namespaced kind across all namespaces through the un-namespaced path. Discovery:
//!   `GET /version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`.
//!   Anything unknown (kind, version, scope, subresource) answers a 404 `Status`.
//! * **get / list / create / replace (PUT) / patch / delete / deletecollection / watch**.
//! * **Metadata**: `uid` (UUID v4), `creationTimestamp` (RFC 3339, second precision),
//!   `generateName`, `namespace` from the path (400 if the body disagrees), DNS-1123 name
//!   validation (422), `generation` (1 on create, +1 when anything outside `metadata` — and
//!   outside `status` for kinds with a status subresource — changes, as for CRDs),
//!   `resourceVersion`: one global `u64` counter over all kinds, bumped on every effective
//!   write. A write that changes nothing (same object after the server-side rules) is a
//!   no-op, as on a real server: no new resourceVersion, no watch event.
//! * **Optimistic concurrency**: PUT needs `metadata.resourceVersion` (422 `Invalid` if
//!   missing) and answers 409 `Conflict` if it is stale. A patch whose result carries a
//!   `metadata.resourceVersion` different from the stored one (i.e. the patch set it) answers
//!   409 `Conflict`. `DeleteOptions.preconditions` (`uid`, `resourceVersion`) answer 409.
//!   PUT or (non-apply) PATCH of a missing object is a 404 (no create-on-update).
//! * **Patch types**: `application/merge-patch+json` (RFC 7386), `application/json-patch+json`
//!   (RFC 6902, all six ops; a failed `test` or a bad path answers 422),
//!   `application/strategic-merge-patch+json` (**treated as a merge patch**: no list merge
//!   keys, no `$patch` directives) and `application/apply-patch+yaml` (server-side apply,
//!   **simplified**: the body must be JSON and is applied as a merge patch, creating the object
//!   if it does not exist; `fieldManager`/`force` are accepted but ignored; no
//!   `managedFields`, no apply conflicts, fields omitted from the applied configuration are
//!   never removed).
//! * **Status subresource** (for kinds registered [`ResourceKind::with_status`]): `status` in
//!   a create body is dropped; PUT/PATCH on the object keep the stored `status`; PUT/PATCH on
//!   `/status` change only `status` (the resourceVersion precondition still applies). `/status`
//!   on other kinds is a 404.
//! * **Schemas** (kinds registered [`ResourceKind::with_schema`] with a CRD's
//!   `openAPIV3Schema`): every write is pruned of unknown fields, loses nulls the schema does
//!   not allow, gets `default`s, and is validated (`type`, `enum`, `required`, embedded
//!   resources, int-or-string) with a 422 `Invalid` listing each field; the pruned paths are
//!   recorded ([`MemKube::pruned`]) because a real server drops them silently.
//! * **Namespaces**: `default`, `kube-system` and `kube-public` exist from the start; creating
//!   an object in a namespace that does not exist is a 404 (create it first, e.g.
//!   [`MemKube::namespace`]). Empty `labels`/`annotations`/`finalizers`/`ownerReferences`
//!   vanish on write, as with the real server's typed ObjectMeta.
//!
//! These answers are held to a real kube-apiserver 1.20 by the differential conformance
//! suite in `tests/tests/kube_conformance.rs` (same requests, same observable answers).
//!
//! * **Selectors**: `labelSelector` with `=`, `==`, `!=`, `in`, `notin`, exists, `!exists`,
//!   `>`/`<`; `fieldSelector` with `=`, `==`, `!=` on any dotted path (`metadata.name`,
//!   `metadata.namespace`, `type`, ... — a real server only allows a per-kind list).
//! * **Watch** (`?watch=true|1`): newline-delimited JSON events over a chunked 200 response;
//!   `resourceVersion` unset/`"0"` starts with synthetic ADDED events for the current state,
//!   `resourceVersion=N` replays the retained history after N (410 `Expired` ERROR event if N
//!   is older than the retained history, see [`MemKube::set_history_limit`] and
//!   [`MemKube::compact`]); `allowWatchBookmarks` (a BOOKMARK every
//!   [`MemKube::set_bookmark_interval`]); `sendInitialEvents=true` (ADDED events then a
//!   BOOKMARK annotated `k8s.io/initial-events-end: "true"`); `timeoutSeconds`; label/field
//!   selectors, including the real server's translation of a modification into ADDED/DELETED
//!   when an object starts/stops matching. Watches end on client disconnect (their
//!   registration is released) and on server shutdown.
//! * **Secrets**: `stringData` is merged into `data` (base64) on every write; `type` defaults
//!   to `Opaque`. **Namespaces** get `status.phase: Active`.
//! * **Delete** answers 200 with a `Status` of `status: Success` (like the real server for
//!   custom resources and Secrets); deletecollection answers the list of deleted objects.
//! * `dryRun=All` on writes: the answer is computed, nothing is stored.
//! * **Errors** are always `Status` objects with the real `reason` (`NotFound`,
//!   `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, `MethodNotAllowed`, `Expired`,
//!   `Unauthorized`, ...), `details` `{name, group, kind: <plural>}` and `code`.
//! * **Auth**: any or no `Authorization` header is accepted, unless
//!   [`MemKube::require_token`] was called (then 401 without `Bearer <token>`).
//! * **Fault injection**: [`MemKube::inject_failure`].
//!
//! ## What is NOT modelled
//!
//! * Schemas ([`ResourceKind::with_schema`]) are applied in part: pruning, nulls,
//!   defaulting, `type`, `enum`, `required`, embedded resources and int-or-string; not
//!   `format`, `pattern`, limits, `anyOf`/`oneOf`/`allOf`/`not`, list types or CEL rules.
//! * No admission (webhooks or built-in), no RBAC/authorization, no real authentication.
//! * No finalizers (`metadata.finalizers` is stored but deletion is immediate, no
//!   `deletionTimestamp`), no garbage collection of `ownerReferences`; namespace lifecycle
//!   only in part (a create in a namespace that does not exist is a 404, as on a real server,
//!   but deleting a Namespace leaves its objects and there is no `Terminating` phase);
//!   `propagationPolicy`/`gracePeriodSeconds` are ignored.
//! * No pagination: `limit`/`continue` are ignored, a list always returns everything and never
//!   a `continue` token. `resourceVersion`/`resourceVersionMatch` on GET/LIST are ignored (the
//!   current state is always served).
//! * Watch history is bounded ([`MemKube::set_history_limit`], default 10 000 writes over
//!   all kinds) and global; a watch from a resourceVersion newer than the current one does not
//!   wait, it just starts live.
//! * No protobuf, no YAML request bodies, no CBOR, no `Table` output, no gzip.
//! * No `/scale` or other subresources, no `/log`, `/exec`, `/proxy`, no aggregated discovery
//!   (only the legacy discovery documents), no version conversion (one version per kind).
//! * No `managedFields`, no field managers, no server-side apply conflicts.
//! * No built-in behaviour of core kinds beyond the Secret/Namespace bits above (Events are
//!   a plain kind; no Pod/Service/... semantics).

mod patch;
mod schema;
mod selector;
mod server;
mod store;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::store::Inner;

/// A kind served by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group, `""` for the core group.
    pub group: String,
    /// The (single) served version, e.g. `v1beta1`.
    pub version: String,
    /// The kind, e.g. `BackupSession`.
    pub kind: String,
    /// The plural resource name used in paths, e.g. `backupsessions`.
    pub plural: String,
    /// Namespaced (default) or cluster-scoped.
    pub namespaced: bool,
    /// Whether `status` is a subresource (as CRDs with `subresources.status`).
    pub status_subresource: bool,
    /// The CRD's `openAPIV3Schema`: writes are pruned, defaulted and validated against it.
    pub schema: Option<Arc<Value>>,
}

impl ResourceKind {
    /// A namespaced kind without status subresource.
    pub fn new(
        group: impl Into<String>,
        version: impl Into<String>,
        kind: impl Into<String>,
        plural: impl Into<String>,
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: true,
            status_subresource: false,
            schema: None,
        }
    }

    /// Prune, default and validate writes against a CRD's `openAPIV3Schema`, as a real
    /// server does for custom resources (see `schema.rs` for what is modelled).
    pub fn with_schema(mut self, open_api_v3_schema: Value) -> Self {
        self.schema = Some(Arc::new(open_api_v3_schema));
        self
    }

    /// Enables the `/status` subresource.
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// Makes the kind cluster-scoped.
    pub fn cluster_scoped(mut self) -> Self {
        self.namespaced = false;
        self
    }

    /// `v1` for the core group, else `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or `plural`), as in error messages.
    pub(crate) fn resource_ref(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` (or `Kind`), as in validation messages.
    pub(crate) fn kind_ref(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// A scripted failure: the next `times` requests matching `method` (any if `None`,
/// case-insensitive) whose path-and-query contains `path_contains` are answered with a
/// failure `Status` carrying `status` as HTTP code (and the matching `reason`), without
/// touching the state.
///
/// Note that the `kube` client retries 429, 503 and 504 on its own (up to 15 times with a
/// short backoff), so a single injected 503 is usually invisible to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub method: Option<String>,
    pub path_contains: String,
    pub status: u16,
    pub times: u32,
}

impl Failure {
    /// Fails the next request (any method) whose path-and-query contains `path_contains`.
    pub fn new(path_contains: impl Into<String>, status: u16) -> Self {
        Self {
            method: None,
            path_contains: path_contains.into(),
            status,
            times: 1,
        }
    }

    /// Only requests with this HTTP method (`"PATCH"`, `"get"`, ...).
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Fail this many matching requests instead of one.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    fn matches(&self, method: &str, path_and_query: &str) -> bool {
        self.times > 0
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path_and_query.contains(&self.path_contains)
    }
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    requests: AtomicU64,
    /// `(method, path?query)` of every request, in arrival order.
    log: Mutex<Vec<(String, String)>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the in-memory cluster state. Cheap to clone; every clone (and every server
/// started from it) shares the same state.
#[derive(Clone)]
pub struct MemKube {
    shared: Arc<Shared>,
}

impl Default for MemKube {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemKube")
            .field("resource_version", &self.resource_version())
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl MemKube {
    /// An empty cluster with core v1 `secrets`, `events`, `configmaps` (namespaced) and
    /// `namespaces` (cluster-scoped) registered.
    pub fn new() -> Self {
        let mut inner = Inner::new();
        inner.register(ResourceKind::new("", "v1", "Secret", "secrets"));
        inner.register(ResourceKind::new("", "v1", "Event", "events"));
        inner.register(ResourceKind::new("", "v1", "ConfigMap", "configmaps"));
        inner.register(ResourceKind::new("", "v1", "Namespace", "namespaces").cluster_scoped());
        inner.register(ResourceKind::new(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
        ));
        // As in a new cluster; objects can only be created in namespaces that exist.
        for ns in ["default", "kube-system", "kube-public"] {
            let ns_kind = inner
                .kind_by_plural("", "namespaces")
                .expect("registered above");
            inner
                .create(
                    &ns_kind,
                    None,
                    serde_json::json!({"metadata": {"name": ns}}),
                    false,
                )
                .expect("a new store accepts the initial namespaces");
        }
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                requests: AtomicU64::new(0),
                log: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves a kind (replacing any kind registered with the same group and plural).
    pub fn register(&self, kind: ResourceKind) {
        self.shared.lock().register(kind);
    }

    /// Starts serving on `127.0.0.1` with a random free port.
    pub async fn serve(&self) -> std::io::Result<RunningServer> {
        self.serve_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts serving on the given address (e.g. a fixed port for the local demo).
    pub async fn serve_on(&self, addr: SocketAddr) -> std::io::Result<RunningServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = signal::channel(false);
        let app = server::router(self.clone(), rx.clone(), addr);
        let mut stop = rx;
        let task = tokio::spawn(async move {
            let graceful = async move {
                let _ = stop.wait_for(|v| *v).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .await
            {
                tracing::warn!(error = %e, "memkube server stopped with an error");
            }
        });
        tracing::debug!(%addr, "memkube listening");
        Ok(RunningServer {
            addr,
            shutdown: tx,
            task: Some(task),
        })
    }

    /// How many write events are kept for resuming watches (default 10 000, over all kinds).
    /// A watch resuming from a resourceVersion older than the retained history gets a 410.
    pub fn set_history_limit(&self, n: usize) {
        self.shared.lock().set_history_limit(n);
    }

    /// Drops all watch history now: any watch resuming from a resourceVersion older than the
    /// current one gets a 410 `Expired` ERROR event.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// Period of BOOKMARK events on watches that asked for them (default 1 s). Applies to
    /// watches started afterwards.
    pub fn set_bookmark_interval(&self, d: Duration) {
        self.shared.lock().bookmark_interval = d.max(Duration::from_millis(1));
    }

    /// Schedules a failure; see [`Failure`]. Failures are consumed in the order injected.
    pub fn inject_failure(&self, f: Failure) {
        self.shared.lock().failures.push(f);
    }

    /// Cancels all scheduled failures.
    pub fn clear_failures(&self) {
        self.shared.lock().failures.clear();
    }

    /// Requires `Authorization: Bearer <token>` on every request (401 otherwise).
    pub fn require_token(&self, token: impl Into<String>) {
        self.shared.lock().token = Some(token.into());
    }

    /// Snapshot of all stored objects of a kind (`group` `""` for core), ordered by namespace
    /// then name.
    pub fn objects(&self, group: &str, plural: &str) -> Vec<Value> {
        self.shared.lock().objects(group, plural)
    }

    /// One stored object (`namespace` is ignored for cluster-scoped kinds).
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.shared.lock();
        let kind = inner.kind_by_plural(group, plural)?;
        inner.get(&kind, Some(namespace), name).ok()
    }

    /// Creates an object directly, without HTTP (same rules as a POST; the namespace is taken
    /// from the object's `metadata.namespace`, `default` if unset). Returns the stored object,
    /// or the failure `Status`. Handy for seeding the local demo.
    /// Every unknown field pruned from a write so far, as `<plural>/<namespace>/<name>:
    /// <path>`. A real server drops them silently; a test can assert that nothing it wrote
    /// was lost.
    pub fn pruned(&self) -> Vec<String> {
        self.shared.lock().pruned()
    }

    /// Creates the Namespace `name` unless it exists (objects can only be created in a
    /// namespace that exists, as on a real server).
    pub fn namespace(&self, name: &str) {
        let mut inner = self.shared.lock();
        let kind = inner
            .kind_by_plural("", "namespaces")
            .expect("registered in new()");
        if inner.get(&kind, None, name).is_err() {
            inner
                .create(
                    &kind,
                    None,
                    serde_json::json!({"metadata": {"name": name}}),
                    false,
                )
                .expect("a valid namespace name");
        }
    }

    pub fn insert(&self, group: &str, plural: &str, obj: Value) -> Result<Value, Value> {
        let mut inner = self.shared.lock();
        let Some(kind) = inner.kind_by_plural(group, plural) else {
            return Err(
                store::ApiError::new(404, format!("unknown kind {plural}.{group}")).to_status(),
            );
        };
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        inner
            .create(&kind, Some(&ns), obj, false)
            .map_err(|e| e.to_status())
    }

    /// Number of HTTP requests received so far (all servers of this state together).
    pub fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The current (latest) global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().resource_version()
    }

    /// Number of open watch streams.
    pub fn active_watches(&self) -> usize {
        self.shared.lock().active_watches()
    }

    pub(crate) fn count_request(&self, method: &str, path_and_query: &str) {
        self.shared.requests.fetch_add(1, Ordering::SeqCst);
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((method.to_string(), path_and_query.to_string()));
    }

    /// Every request received so far as `(method, path?query)`: what a client really did,
    /// e.g. to derive the RBAC rules it needs.
    pub fn request_log(&self) -> Vec<(String, String)> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Consumes a scheduled failure matching this request, if any.
    pub(crate) fn take_failure(&self, method: &str, path_and_query: &str) -> Option<u16> {
        let mut inner = self.shared.lock();
        let idx = inner
            .failures
            .iter()
            .position(|f| f.matches(method, path_and_query))?;
        let f = &mut inner.failures[idx];
        f.times -= 1;
        let status = f.status;
        if f.times == 0 {
            inner.failures.remove(idx);
        }
        Some(status)
    }
}

/// A running server. Stops (gracefully: open watches end, idle connections close) on
/// [`RunningServer::shutdown`] or when dropped.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: signal::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits (at most 5 s) for it to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
