//! Runs a checked Stash hook ([`crate::config::hooks`]) from the function: an HTTP GET or
//! POST that must answer 200–399, or a TCP connection that must open, as Kubernetes
//! probes and Stash define them. A hook without `host` calls the target's own address.
//! Cluster names (`svc.ns.svc`) are pinned to the addresses their EndpointSlices list,
//! as the Vault client does, since a Lambda outside the cluster cannot resolve them.
//! Each call is bounded by the deadline it is given. The URL path, headers and body may
//! carry secrets (a webhook's path is its key): they never reach a log line or a reason;
//! reasons name the method, host and port and quote the start of the answer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use crate::api::Condition;
use crate::config::hooks::{Action, Body, Hook, HttpCall, Stage, Summary, render};
use crate::vault::VaultTarget;

/// Where hooks are called from: the target's address for hooks without `host`, and the
/// cluster names pinned to endpoint addresses.
#[derive(Clone, Debug, Default)]
pub struct Site {
    /// `(host, port)` of the target's address (the Vault the AppBinding names), when known.
    pub target: Option<(String, u16)>,
    /// Why the target's address is unknown, for the reason of a hook that needs it.
    pub target_unknown: Option<String>,
    pub pins: Vec<(String, Vec<IpAddr>)>,
    /// The AppBinding's CA, trusted for HTTPS calls to the target's own host.
    pub target_ca_pem: Option<Vec<u8>>,
    /// Refuse loopback and link-local destinations: set inside Lambda, where the Runtime
    /// API (and extensions) listen on loopback and metadata services on link-local, none
    /// of which a hook written into a BackupConfiguration may reach.
    pub refuse_local: bool,
}

impl Site {
    /// A site knowing the pinned names `pins`; loopback and link-local destinations are
    /// refused inside Lambda (where the Runtime API is set). The target is unknown until
    /// [`Site::set_target`].
    pub fn new(pins: Vec<(String, Vec<IpAddr>)>) -> Site {
        Site {
            target_unknown: Some("the session failed before its AppBinding was resolved".into()),
            pins,
            refuse_local: std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some(),
            ..Default::default()
        }
    }

    /// The resolved target (the Vault the AppBinding names): its address for hooks without
    /// `host`, its pinned names, and its CA for HTTPS calls to its own host.
    pub fn set_target(&mut self, target: &VaultTarget) {
        match reqwest::Url::parse(&target.addr) {
            Ok(url) => {
                self.target = url
                    .host_str()
                    .map(|h| h.trim_matches(['[', ']']).to_string())
                    .zip(url.port_or_known_default());
                self.target_unknown = None;
            }
            Err(e) => self.target_unknown = Some(format!("{}: {e}", target.addr)),
        }
        self.pins.extend(target.pins.iter().cloned());
        self.target_ca_pem = target.ca_pem.clone();
    }
}

/// Whether `ip` is a destination [`Site::refuse_local`] refuses.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_local(IpAddr::V4(v4)))
        }
    }
}

/// How a hook went: the condition's message, and whether it succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct Ran {
    pub ok: bool,
    pub message: String,
}

/// Stash's condition for a hook's outcome (`PreBackupHookExecutionSucceeded`, …).
pub fn condition(stage: Stage, ran: &Ran) -> Condition {
    Condition::new(
        &stage.condition(),
        ran.ok,
        &stage.reason(ran.ok),
        &ran.message,
    )
}

/// A post-hook's deadline: the session's, but with a few seconds even when the session ran
/// out of time (a failure notice is most wanted then), never past the Lambda's.
pub fn post_deadline(
    deadline: std::time::Instant,
    lambda_deadline: Option<std::time::Instant>,
) -> std::time::Instant {
    let at = deadline.max(std::time::Instant::now() + POST_HOOK_GRACE);
    match lambda_deadline {
        Some(ld) => at.min(ld.checked_sub(Duration::from_secs(5)).unwrap_or(ld)),
        None => at,
    }
}

/// The least time a post-hook gets after a session that used all of its own.
const POST_HOOK_GRACE: Duration = Duration::from_secs(10);

/// The most of an answer quoted in a reason.
const ANSWER_QUOTE: usize = 200;

/// Call the hook once, bounded by `deadline`.
pub async fn run(hook: &Hook, summary: &Summary, site: &Site, deadline: Instant) -> Ran {
    let field = hook.stage.field();
    let result = match &hook.action {
        Action::Http(call) => http(call, summary, site, deadline).await,
        Action::Tcp { host, port } => tcp(host.as_deref(), *port, summary, site, deadline).await,
    };
    match result {
        Ok(what) => Ran {
            ok: true,
            message: format!("{field} hook succeeded: {what}"),
        },
        Err(why) => Ran {
            ok: false,
            message: format!("{field} hook failed: {why}"),
        },
    }
}

/// The host a hook calls: its own (templated) `host`, or the target's.
fn host_of(host: Option<&str>, summary: &Summary, site: &Site) -> Result<String, String> {
    match host {
        Some(h) => Ok(render(h, summary)),
        None => site.target.as_ref().map(|(h, _)| h.clone()).ok_or_else(|| {
            format!(
                "it sets no host, and the target's address is unknown ({}); set the hook's host",
                site.target_unknown.as_deref().unwrap_or("no AppBinding")
            )
        }),
    }
}

fn pinned<'a>(site: &'a Site, host: &str) -> Option<&'a [IpAddr]> {
    site.pins
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(host))
        .map(|(_, ips)| ips.as_slice())
}

/// The addresses a hook connects to: an address as written, a pinned cluster name's
/// endpoints, or what DNS answers (looked up here, so what is checked is what is used).
async fn addresses(
    host: &str,
    port: u16,
    site: &Site,
    deadline: Instant,
    shown: &str,
) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else if let Some(ips) = pinned(site, host) {
        ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
    } else {
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return Err(format!("{shown}: the host does not resolve ({e})")),
            Err(_) => {
                return Err(format!(
                    "{shown}: no answer within the session's time limit"
                ));
            }
        }
    };
    if addrs.is_empty() {
        return Err(format!("{shown}: the host has no address"));
    }
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| !(site.refuse_local && is_local(a.ip())))
        .collect();
    if allowed.is_empty() {
        return Err(format!(
            "{shown}: the host is a loopback or link-local address, which a hook may not call from the function (the Lambda Runtime API and metadata services live there)"
        ));
    }
    Ok(allowed)
}

fn left(deadline: Instant) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err("not run: the session's time limit was reached first".into())
    } else {
        Ok(d)
    }
}

async fn http(
    call: &HttpCall,
    summary: &Summary,
    site: &Site,
    deadline: Instant,
) -> Result<String, String> {
    let budget = left(deadline)?;
    let host = host_of(call.host.as_deref(), summary, site)?;
    let method = if call.post { "POST" } else { "GET" };
    let scheme = if call.https { "https" } else { "http" };
    let shown = format!("{method} {scheme}://{}:{}", bracket(&host), call.port);
    let url = format!(
        "{scheme}://{}:{}{}",
        bracket(&host),
        call.port,
        render(&call.path, summary)
    );
    let url = reqwest::Url::parse(&url).map_err(|e| format!("{shown}: not a URL ({e})"))?;
    crate::install_crypto_provider();
    // The deadline bounds the request and the answer (timeout_at below); the connect
    // timeout only gives up sooner on an address that does not answer.
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10).min(budget))
        // Kubernetes probes do not follow a redirect off the host; a 3xx counts as success.
        .redirect(reqwest::redirect::Policy::none());
    let addrs = addresses(&host, call.port, site, deadline, &shown).await?;
    if host.parse::<IpAddr>().is_err() {
        // Connect to the addresses checked above, not to a second DNS answer.
        builder = builder.resolve_to_addrs(&host, &addrs);
    }
    let is_target = site.target.as_ref().is_some_and(|(h, _)| *h == host);
    if call.https
        && is_target
        && let Some(pem) = &site.target_ca_pem
    {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("{shown}: the AppBinding's caBundle is not PEM ({e})"))?;
        builder = builder.tls_certs_merge(certs);
    }
    let client = builder
        .build()
        .map_err(|e| format!("{shown}: building the client: {e}"))?;
    let mut req = if call.post {
        client.post(url)
    } else {
        client.get(url)
    };
    for (name, value) in &call.headers {
        let mut v =
            reqwest::header::HeaderValue::from_str(&render(value, summary)).map_err(|_| {
                format!("{shown}: the value of header {name} is not a valid header value")
            })?;
        // Hook headers often carry credentials.
        v.set_sensitive(true);
        req = req.header(name.as_str(), v);
    }
    match &call.body {
        None => {}
        Some(Body::Text(t)) => req = req.body(render(t, summary)),
        Some(Body::Form(pairs)) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                form.append_pair(k, &render(v, summary));
            }
            req = req
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form.finish());
        }
    }
    let resp = match tokio::time::timeout_at(deadline, req.send()).await {
        Err(_) => {
            return Err(format!(
                "{shown}: no answer within the session's time limit"
            ));
        }
        Ok(Err(e)) => return Err(format!("{shown}: {}", request_error(&e))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    // Read a little of the answer for the reason; the rest is not needed.
    let answer: String = tokio::time::timeout_at(deadline, head_of(resp))
        .await
        .unwrap_or_default();
    let quoted = if answer.is_empty() {
        String::new()
    } else {
        format!(": {answer}")
    };
    if (200..400).contains(&status.as_u16()) {
        Ok(format!("{shown} answered {status}"))
    } else {
        Err(format!("{shown} answered {status}{quoted}"))
    }
}

/// The start of a response body, on one line, for a reason.
async fn head_of(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < ANSWER_QUOTE {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf[..buf.len().min(ANSWER_QUOTE)]);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.trim().to_string()
}

/// A request error without the URL (its path may be a secret).
fn request_error(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "could not connect"
    } else if e.is_timeout() {
        "no answer within the session's time limit"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what} ({detail})")
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

async fn tcp(
    host: Option<&str>,
    port: u16,
    summary: &Summary,
    site: &Site,
    deadline: Instant,
) -> Result<String, String> {
    left(deadline)?;
    let host = host_of(host, summary, site)?;
    let shown = format!("TCP {}:{port}", bracket(&host));
    let addrs = addresses(&host, port, site, deadline, &shown).await?;
    match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(&addrs[..])).await {
        Ok(Ok(_)) => Ok(format!("{shown} is open")),
        Ok(Err(e)) => Err(format!("{shown}: could not connect ({e})")),
        Err(_) => Err(format!(
            "{shown}: no answer within the session's time limit"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hooks::{Policy, Stage};

    #[test]
    fn loopback_link_local_and_unspecified_are_local() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(is_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "fd00::1",
            "2001:db8::1",
        ] {
            assert!(!is_local(ip.parse().unwrap()), "{ip}");
        }
    }

    /// Inside Lambda a hook cannot reach the Runtime API on loopback, by address or name.
    #[tokio::test]
    async fn inside_lambda_loopback_hooks_are_refused_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let site = Site {
            refuse_local: true,
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        for host in ["127.0.0.1", "localhost"] {
            let hook = Hook {
                stage: Stage::PreBackup,
                policy: Policy::Always,
                action: Action::Tcp {
                    host: Some(host.into()),
                    port,
                },
            };
            let ran = run(&hook, &Summary::default(), &site, deadline).await;
            assert!(!ran.ok);
            assert!(
                ran.message.contains("loopback or link-local"),
                "{}",
                ran.message
            );
        }
        // Outside Lambda (tests, the CLI) the same hook connects.
        let hook = Hook {
            stage: Stage::PreBackup,
            policy: Policy::Always,
            action: Action::Tcp {
                host: Some("127.0.0.1".into()),
                port,
            },
        };
        let ran = run(&hook, &Summary::default(), &Site::default(), deadline).await;
        assert!(ran.ok, "{}", ran.message);
    }
}
