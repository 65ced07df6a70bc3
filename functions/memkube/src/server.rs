//! HTTP layer: routing, query parsing, auth, fault injection, discovery.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch as signal;

use crate::MemKube;
use crate::selector::{FieldSelector, LabelSelector, Selectors};
use crate::store::{ApiError, ApiResult, PatchKind, reason_for};

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) kube: MemKube,
    pub(crate) shutdown: signal::Receiver<bool>,
    pub(crate) addr: SocketAddr,
}

pub(crate) fn router(kube: MemKube, shutdown: signal::Receiver<bool>, addr: SocketAddr) -> Router {
    Router::new().fallback(handle).with_state(Ctx {
        kube,
        shutdown,
        addr,
    })
}

pub(crate) fn json_response(code: u16, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        bytes,
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

/// Decoded query parameters (the `kube` client sends `?&a=b&...`).
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Self {
        let pairs = q
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Self(pairs)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True" | "TRUE"))
    }

    fn selectors(&self) -> ApiResult<Selectors> {
        Ok(Selectors {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or_default())
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            fields: FieldSelector::parse(self.get("fieldSelector").unwrap_or_default())
                .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?,
        })
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| v == "All")
    }
}

async fn handle(State(ctx): State<Ctx>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    ctx.kube
        .count_request(parts.method.as_str(), &path_and_query);
    tracing::debug!(method = %parts.method, uri = %path_and_query, "memkube request");

    let token = ctx.kube.shared().lock().token.clone();
    if let Some(token) = token {
        let ok = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.strip_prefix("Bearer ").is_some_and(|t| t.trim() == token));
        if !ok {
            return error_response(&ApiError::new(401, "Unauthorized"));
        }
    }
    if let Some(code) = ctx
        .kube
        .take_failure(parts.method.as_str(), &path_and_query)
    {
        let e = ApiError::new(
            code,
            format!("memkube injected failure ({code} {})", reason_for(code)),
        );
        return error_response(&e);
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "unable to read the request body: {e}"
            )));
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let query = Query::parse(parts.uri.query());
    let segs: Vec<&str> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match route(&ctx, &parts.method, &segs, &query, &content_type, body) {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

fn not_found_path() -> ApiError {
    ApiError::new(404, "the server could not find the requested resource").with_details(json!({}))
}

impl ApiError {
    fn with_details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }
}

fn route(
    ctx: &Ctx,
    method: &Method,
    segs: &[&str],
    q: &Query,
    ct: &str,
    body: Bytes,
) -> ApiResult<Response> {
    let discovery = |v: Value| {
        if method == Method::GET {
            Ok(json_response(200, &v))
        } else {
            Err(ApiError::new(
                405,
                "the server does not allow this method on the requested resource",
            ))
        }
    };
    match segs {
        ["version"] => discovery(json!({
            "major": "1",
            "minor": "30",
            "gitVersion": "v1.30.0-memkube",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2024-04-17T00:00:00Z",
            "goVersion": "go1.22.2",
            "compiler": "gc",
            "platform": "linux/amd64",
        })),
        ["api"] => discovery(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ctx.addr.to_string()}],
        })),
        ["apis"] => discovery(api_group_list(ctx)),
        ["api", "v1"] => discovery(resource_list(ctx, "", "v1")),
        ["apis", group] => match api_group_list(ctx)["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["name"] == *group))
        {
            Some(g) => {
                let mut g = g.clone();
                g["kind"] = json!("APIGroup");
                g["apiVersion"] = json!("v1");
                discovery(g)
            }
            None => Err(not_found_path()),
        },
        ["apis", group, version] => {
            let list = resource_list(ctx, group, version);
            if list["resources"].as_array().is_none_or(Vec::is_empty) {
                Err(not_found_path())
            } else {
                discovery(list)
            }
        }
        ["api", "v1", rest @ ..] => resource(ctx, method, "", "v1", rest, q, ct, body),
        ["apis", group, version, rest @ ..] => {
            resource(ctx, method, group, version, rest, q, ct, body)
        }
        _ => Err(not_found_path()),
    }
}

fn api_group_list(ctx: &Ctx) -> Value {
    let inner = ctx.kube.shared().lock();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for k in inner.kinds().filter(|k| !k.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == k.group) {
            Some((_, vs)) if !vs.contains(&k.version) => vs.push(k.version.clone()),
            Some(_) => {}
            None => groups.push((k.group.clone(), vec![k.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                .collect();
            json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(ctx: &Ctx, group: &str, version: &str) -> Value {
    let inner = ctx.kube.shared().lock();
    let mut resources = Vec::new();
    for k in inner
        .kinds()
        .filter(|k| k.group == group && k.version == version)
    {
        resources.push(json!({
            "name": k.plural,
            "singularName": k.kind.to_lowercase(),
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }));
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn parse_body(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json (memkube: {e})"
        ))
    })
}

#[allow(clippy::too_many_arguments)]
fn resource(
    ctx: &Ctx,
    method: &Method,
    group: &str,
    version: &str,
    rest: &[&str],
    q: &Query,
    ct: &str,
    body: Bytes,
) -> ApiResult<Response> {
    // Decide between `namespaces/{ns}/{plural}/...` and `{plural}/...` (the latter also covers
    // the Namespace objects themselves, e.g. `namespaces/{name}/status`).
    let lookup = |plural: &str| ctx.kube.shared().lock().kind(group, version, plural);
    let (kind, ns, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 && lookup(plural).is_some() => {
            let kind = lookup(plural).expect("checked");
            if !kind.namespaced {
                return Err(not_found_path());
            }
            (kind, Some(*ns), tail.first().copied(), tail.get(1).copied())
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let kind = lookup(plural).ok_or_else(not_found_path)?;
            if kind.namespaced && !tail.is_empty() {
                return Err(not_found_path());
            }
            (kind, None, tail.first().copied(), tail.get(1).copied())
        }
        _ => return Err(not_found_path()),
    };
    if let Some(sub) = sub
        && !(sub == "status" && kind.status_subresource)
    {
        return Err(not_found_path());
    }
    let status_sub = sub.is_some();
    let dry_run = q.dry_run();
    let shared = ctx.kube.shared();
    let method_not_allowed = || {
        Err(ApiError::new(
            405,
            "the server does not allow this method on the requested resource",
        )
        .about(&kind, name.unwrap_or_default()))
    };
    match name {
        Some(name) => match *method {
            Method::GET => shared
                .lock()
                .get(&kind, ns, name)
                .map(|o| json_response(200, &o)),
            Method::PUT => {
                let body = parse_body(&body)?;
                shared
                    .lock()
                    .replace(&kind, ns, name, body, status_sub, dry_run)
                    .map(|o| json_response(200, &o))
            }
            Method::PATCH => {
                let pk = PatchKind::from_content_type(ct).ok_or_else(|| {
                    ApiError::new(
                        415,
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: \
                             application/json-patch+json, application/merge-patch+json, \
                             application/apply-patch+yaml (got {ct:?})"
                        ),
                    )
                })?;
                let patch = parse_body(&body).map_err(|e| {
                    if pk == PatchKind::Apply {
                        ApiError::bad_request(format!(
                            "memkube only accepts JSON apply configurations: {}",
                            e.message
                        ))
                    } else {
                        e
                    }
                })?;
                shared
                    .lock()
                    .patch(&kind, ns, name, pk, patch, status_sub, dry_run)
                    .map(|(code, o)| json_response(code, &o))
            }
            Method::DELETE if !status_sub => {
                let opts = if body.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    Some(parse_body(&body)?)
                };
                shared
                    .lock()
                    .delete(&kind, ns, name, opts, dry_run)
                    .map(|s| json_response(200, &s))
            }
            _ => method_not_allowed(),
        },
        None => {
            // A namespaced kind without namespace in the path: only list/watch across namespaces.
            let all_namespaces = kind.namespaced && ns.is_none();
            match *method {
                Method::GET => {
                    let sel = q.selectors()?;
                    if q.flag("watch") {
                        Ok(crate::watch::watch_response(
                            ctx,
                            kind,
                            ns.map(str::to_string),
                            sel,
                            q,
                        ))
                    } else {
                        Ok(json_response(200, &shared.lock().list(&kind, ns, &sel)))
                    }
                }
                Method::POST if !all_namespaces => {
                    let body = parse_body(&body)?;
                    shared
                        .lock()
                        .create(&kind, ns, body, dry_run)
                        .map(|o| json_response(201, &o))
                }
                Method::DELETE if !all_namespaces => {
                    let sel = q.selectors()?;
                    Ok(json_response(
                        200,
                        &shared.lock().delete_collection(&kind, ns, &sel, dry_run),
                    ))
                }
                _ => method_not_allowed(),
            }
        }
    }
}

/// Builds a streaming 200 `application/json` response.
pub(crate) fn stream_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = Query::parse(Some(
            "&watch=true&labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&x",
        ));
        assert!(q.flag("watch"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a,b)"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(q.get("missing"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
