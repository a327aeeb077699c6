//! Refusals as an Ack carries them: an HTTP status and a `BITS-Error-Code`.

use bits_core::Hresult;

/// `BG_E_SESSION_NOT_FOUND`: the session is unknown to the server.
pub const BG_E_SESSION_NOT_FOUND: Hresult = Hresult(0x8020_001F);
/// `BG_E_TOO_LARGE`: the upload exceeds the server's limit.
pub const BG_E_TOO_LARGE: Hresult = Hresult(0x8020_0020);
/// `HRESULT_FROM_WIN32(ERROR_DISK_FULL)`.
pub const DISK_FULL: Hresult = Hresult(0x8007_0070);

/// A packet refused: the status and code of its Ack, and why (for the log
/// and the Ack's body; never a secret).
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {what}")]
pub struct ServeError {
    /// The HTTP status of the Ack.
    pub status: u16,
    /// Its `BITS-Error-Code`.
    pub code: Hresult,
    /// Why.
    pub what: String,
    /// For a gap (`416`): the offset the server expects, sent as
    /// `BITS-Received-Content-Range`.
    pub received: Option<u64>,
    /// `BITS-Error-Context`: 0x5 (the server), 0x7 (the server's
    /// application: the reply command).
    pub context: u32,
}

impl ServeError {
    fn new(status: u16, code: Hresult, what: impl Into<String>) -> ServeError {
        ServeError {
            status,
            code,
            what: what.into(),
            received: None,
            context: 0x5,
        }
    }

    /// 500 with context 0x7: the reply command failed.
    pub fn application(what: impl Into<String>) -> ServeError {
        ServeError {
            context: 0x7,
            ..ServeError::new(500, Hresult::E_FAIL, what)
        }
    }

    /// 400 `E_INVALIDARG`: a malformed or inconsistent packet.
    pub fn invalid(what: impl Into<String>) -> ServeError {
        ServeError::new(400, Hresult::E_INVALIDARG, what)
    }

    /// 403 `E_ACCESSDENIED`: a path outside the root, through a symlink, or
    /// reserved.
    pub fn denied(what: impl Into<String>) -> ServeError {
        ServeError::new(403, Hresult::E_ACCESSDENIED, what)
    }

    /// 409 `E_ACCESSDENIED`: the destination exists and may not be
    /// overwritten.
    pub fn exists(what: impl Into<String>) -> ServeError {
        ServeError::new(409, Hresult::E_ACCESSDENIED, what)
    }

    /// 500 `BG_E_SESSION_NOT_FOUND`.
    pub fn no_session(what: impl Into<String>) -> ServeError {
        ServeError::new(500, BG_E_SESSION_NOT_FOUND, what)
    }

    /// 500 `BG_E_TOO_LARGE`.
    pub fn too_large(what: impl Into<String>) -> ServeError {
        ServeError::new(500, BG_E_TOO_LARGE, what)
    }

    /// 416 with the offset the server expects next.
    pub fn gap(received: u64, what: impl Into<String>) -> ServeError {
        ServeError {
            received: Some(received),
            ..ServeError::new(416, Hresult::E_INVALIDARG, what)
        }
    }

    /// A local file error: disk full is 500 `0x80070070`, anything else 500
    /// with the error's HRESULT (`E_FAIL` without an OS code).
    pub fn io(doing: &str, e: &std::io::Error) -> ServeError {
        let code = match e.raw_os_error() {
            Some(28) => DISK_FULL,
            Some(code) => {
                bits_core::BitsError::local("serve", "", std::io::Error::from_raw_os_error(code)).hresult()
            }
            None => Hresult::E_FAIL,
        };
        ServeError::new(500, code, format!("{doing}: {e}"))
    }
}
