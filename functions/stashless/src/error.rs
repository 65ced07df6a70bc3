//! One error type for the library. Each variant says whether retrying can help, so the
//! Lambda handlers can tell the runtime (and async retries never re-run a permanent failure).

use crate::archive::ArchiveError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    #[error("{0}")]
    Invalid(String),
    /// Vault/OpenBao refused or failed.
    #[error("Vault at {addr}: {message}")]
    Vault {
        addr: String,
        message: String,
        retryable: bool,
    },
    /// The object store refused or failed.
    #[error("S3 bucket {bucket:?}: {message}")]
    Storage {
        bucket: String,
        message: String,
        retryable: bool,
    },
    /// The snapshot stream failed verification.
    #[error("snapshot verification failed: {0}")]
    Archive(#[from] ArchiveError),
    /// The function's deadline (Lambda's or the session's `timeOut`) came first.
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    /// Handing work to the functions (EventBridge) failed.
    #[error("dispatch: {0}")]
    Dispatch(String),
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

    /// Whether running the same invocation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
                _ => true,
            },
            Error::Vault { retryable, .. } | Error::Storage { retryable, .. } => *retryable,
            Error::Dispatch(_) => true,
            Error::NotFound { .. }
            | Error::Invalid(_)
            | Error::Archive(_)
            | Error::Deadline(_)
            | Error::BadEvent(_) => false,
        }
    }

    /// True for the Kubernetes API's 404.
    pub fn is_kube_not_found(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 404)
    }
}

/// Kubernetes API error code, if this is one.
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
