//! One error type for the library. Every error has a [`ErrorKind`] saying what a caller can
//! do about it (edit the objects, wait for the other session, distrust the stored bytes, or
//! retry), and keeps the error it came from as its `source`. The Lambda handlers derive
//! retryability from the kind, so async retries never re-run a permanent failure.

use crate::archive::ArchiveError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An underlying error kept as a `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ErrorKind {
    /// The user's objects or the event are wrong: only an edit fixes it.
    Invalid,
    /// Another session or writer holds what this one needs (a lost claim, an overlapping
    /// restore or backup): it may work once the other one is done.
    Conflict,
    /// Stored bytes differ from what was recorded (size, ETag, sha256, the archive itself):
    /// never restored, never retried as if it were transient.
    Integrity,
    /// A system was unreachable, slow or failing: a retry may help.
    Unavailable,
    /// The time limit (the session's `timeOut` or Lambda's) came first.
    Deadline,
}

impl ErrorKind {
    /// `Unavailable` when a retry may help, else `Invalid`: how an answer's status code
    /// (5xx and 429 against the rest) is classified.
    pub fn retry_helps(retryable: bool) -> Self {
        if retryable {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Invalid
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// An object the session needs does not exist.
    #[error("{kind} {namespace}/{name} not found{hint}")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
        hint: String,
    },
    /// The user's objects are wrong in a way only an edit can fix.
    #[error("{message}{}", cause_unless_said(.message, .source))]
    Invalid {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Another session stands in the way (overlapping restore or backup).
    #[error("{0}")]
    Conflict(String),
    /// Stored bytes differ from their manifest.
    #[error("{0}")]
    Integrity(String),
    /// Something outside (Pushgateway, a watch, AWS) failed in a way a retry may fix.
    #[error("{message}{}", cause_unless_said(.message, .source))]
    Unavailable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Vault/OpenBao refused or failed.
    #[error("Vault at {addr}: {message}")]
    Vault {
        addr: String,
        message: String,
        kind: ErrorKind,
        #[source]
        source: Option<BoxError>,
    },
    /// The object store refused or failed.
    #[error("S3 bucket {bucket:?}: {message}")]
    Storage {
        bucket: String,
        message: String,
        kind: ErrorKind,
        #[source]
        source: Option<BoxError>,
    },
    /// Unseal-key escrow: the unsealer store, KMS or SSM refused or failed, or an escrow
    /// does not belong to its snapshot.
    #[error("unseal keys: {message}")]
    Keys {
        message: String,
        kind: ErrorKind,
        #[source]
        source: Option<BoxError>,
    },
    /// The snapshot stream failed verification.
    #[error("snapshot verification failed: {0}")]
    Archive(#[from] ArchiveError),
    /// The function's deadline (Lambda's or the session's `timeOut`) came first.
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    /// A step failed; `message` says which and what it means (e.g. what was already done).
    #[error("{message}")]
    Step {
        message: String,
        kind: ErrorKind,
        #[source]
        source: Box<Error>,
    },
    /// The invocation payload is not one we accept.
    #[error("malformed event: {0}")]
    BadEvent(String),
}

impl Error {
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source,
        }
    }

    /// Invalid input with nothing underneath.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            message: message.into(),
            source: None,
        }
    }

    /// Invalid input found by another parser or library, kept as the source.
    pub fn invalid_because(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Invalid {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Invalid input exactly as another parser's error says it (the pure policy modules'
    /// errors read as complete reasons), kept as the source.
    pub fn invalid_from(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Error::Invalid {
            message: source.to_string(),
            source: Some(source),
        }
    }

    /// A failure a retry may fix, with what failed underneath.
    pub fn unavailable(message: impl Into<String>, source: Option<BoxError>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source,
        }
    }

    /// This error as the failure of a step: `what` (what failed, what it means) and then
    /// this error's reason; the kind stays this error's.
    pub fn within(self, what: impl std::fmt::Display) -> Self {
        Error::Step {
            message: format!("{what}: {}", self.reason()),
            kind: self.kind(),
            source: Box::new(self),
        }
    }

    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(s) if s.code == 409 => ErrorKind::Conflict,
                kube::Error::Api(s) if s.code == 429 || s.code >= 500 => ErrorKind::Unavailable,
                kube::Error::Api(_) => ErrorKind::Invalid,
                _ => ErrorKind::Unavailable,
            },
            Error::NotFound { .. } | Error::Invalid { .. } | Error::BadEvent(_) => {
                ErrorKind::Invalid
            }
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Integrity(_) | Error::Archive(_) => ErrorKind::Integrity,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Vault { kind, .. } | Error::Storage { kind, .. } | Error::Keys { kind, .. } => {
                *kind
            }
            Error::Deadline(_) => ErrorKind::Deadline,
            Error::Step { kind, .. } => *kind,
        }
    }

    /// Whether running the same invocation again may succeed: the other session may be
    /// done, the system back. Invalid input, integrity and deadline failures are final.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::Conflict)
    }

    /// True for the Kubernetes API's 404.
    pub fn is_kube_not_found(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 404)
    }

    /// The text for a session's status: this error (with its direct cause) and the causes
    /// under that, innermost last, so a person sees what to act on. Only causes whose text
    /// is not already there are added.
    pub fn reason(&self) -> String {
        let mut out = self.to_string();
        if matches!(self, Error::Invalid { .. } | Error::Unavailable { .. }) {
            let mut next = std::error::Error::source(self);
            while let Some(cause) = next {
                let text = cause.to_string();
                if !text.is_empty() && !out.contains(&text) {
                    out.push_str(": ");
                    out.push_str(&text);
                }
                next = cause.source();
            }
        }
        out
    }
}

/// ": <cause>" after a message with a direct cause (the cause is what a person acts on),
/// unless the message already says it (`invalid_from`, or a message quoting the cause).
fn cause_unless_said(message: &str, source: &Option<BoxError>) -> String {
    match source {
        Some(s) => {
            let text = s.to_string();
            if text.is_empty() || message.contains(&text) {
                String::new()
            } else {
                format!(": {text}")
            }
        }
        None => String::new(),
    }
}

/// Kubernetes API error code, if this is one.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        let status = kube::core::Status::failure("x", "y").with_code(code);
        Error::kube("doing", kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn retryability_follows_the_kind() {
        assert_eq!(api(409).kind(), ErrorKind::Conflict);
        assert!(api(409).is_retryable());
        assert!(api(503).is_retryable());
        assert!(api(429).is_retryable());
        assert!(!api(403).is_retryable());
        assert!(!Error::invalid("bad").is_retryable());
        assert!(!Error::Integrity("sha256 differs".into()).is_retryable());
        assert!(!Error::Deadline("late".into()).is_retryable());
        assert!(Error::Conflict("other restore".into()).is_retryable());
        assert!(Error::unavailable("pushgateway down", None).is_retryable());
        let storage = |kind| Error::Storage {
            bucket: "b".into(),
            message: "m".into(),
            kind,
            source: None,
        };
        assert!(storage(ErrorKind::Unavailable).is_retryable());
        assert!(!storage(ErrorKind::Integrity).is_retryable());
    }

    #[test]
    fn reason_names_the_innermost_cause_and_keeps_the_source() {
        let inner = std::io::Error::other("connection refused");
        let e = Error::unavailable("pushing metrics to http://gw", Some(Box::new(inner)));
        assert_eq!(
            e.reason(),
            "pushing metrics to http://gw: connection refused"
        );
        assert!(std::error::Error::source(&e).is_some());
        // A cause already in the message is not repeated.
        let e = Error::invalid_because(
            "bad schedule: expected 5 fields",
            std::io::Error::other("expected 5 fields"),
        );
        assert_eq!(e.reason(), "bad schedule: expected 5 fields");
        assert_eq!(Error::invalid("plain").reason(), "plain");
    }
}
