//! Errors as BITS reports them: an HRESULT, a `BG_ERROR_CONTEXT`, and whether
//! the job retries (transient) or stops (fatal). The tables are those of
//! `docs/spec/policy.md` (the codes' values: `docs/spec/bits.md`).

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use crate::flags::SecurityFlags;

/// A Windows `HRESULT`, displayed as `0x` and eight upper-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hresult(pub u32);

impl Hresult {
    /// `S_OK`.
    pub const S_OK: Hresult = Hresult(0);
    /// `S_FALSE`: success, nothing was done.
    pub const S_FALSE: Hresult = Hresult(1);
    /// `BG_S_PARTIAL_COMPLETE`: complete kept only the finished files.
    pub const BG_S_PARTIAL_COMPLETE: Hresult = Hresult(0x0020_0017);
    /// `BG_S_UNABLE_TO_DELETE_FILES`: succeeded, but temporary files remain.
    pub const BG_S_UNABLE_TO_DELETE_FILES: Hresult = Hresult(0x0020_001A);
    /// `E_NOTIMPL`.
    pub const E_NOTIMPL: Hresult = Hresult(0x8000_4001);
    /// `E_FAIL`.
    pub const E_FAIL: Hresult = Hresult(0x8000_4005);
    /// `E_INVALIDARG`.
    pub const E_INVALIDARG: Hresult = Hresult(0x8007_0057);
    /// `BG_E_NOT_FOUND`.
    pub const BG_E_NOT_FOUND: Hresult = Hresult(0x8020_0001);
    /// `BG_E_INVALID_STATE`.
    pub const BG_E_INVALID_STATE: Hresult = Hresult(0x8020_0002);
    /// `BG_E_EMPTY`.
    pub const BG_E_EMPTY: Hresult = Hresult(0x8020_0003);
    /// `BG_E_ERROR_INFORMATION_UNAVAILABLE`.
    pub const BG_E_ERROR_INFORMATION_UNAVAILABLE: Hresult = Hresult(0x8020_000F);
    /// `BG_E_INVALID_SERVER_RESPONSE`.
    pub const BG_E_INVALID_SERVER_RESPONSE: Hresult = Hresult(0x8020_001B);
    /// `BG_E_TOO_MANY_FILES`.
    pub const BG_E_TOO_MANY_FILES: Hresult = Hresult(0x8020_001C);
    /// `BG_E_LOCAL_FILE_CHANGED`: an upload's source changed mid-transfer.
    pub const BG_E_LOCAL_FILE_CHANGED: Hresult = Hresult(0x8020_001D);
    /// `BG_E_SESSION_NOT_FOUND`: the upload server does not know the session.
    pub const BG_E_SESSION_NOT_FOUND: Hresult = Hresult(0x8020_001F);
    /// `BG_E_STRING_TOO_LONG`: custom headers longer than 16,384 characters.
    pub const BG_E_STRING_TOO_LONG: Hresult = Hresult(0x8020_0021);
    /// `BG_E_USERNAME_TOO_LARGE`: a user name over 300 characters.
    pub const BG_E_USERNAME_TOO_LARGE: Hresult = Hresult(0x8020_0025);
    /// `BG_E_PASSWORD_TOO_LARGE`: a password over 65,535 characters.
    pub const BG_E_PASSWORD_TOO_LARGE: Hresult = Hresult(0x8020_0026);
    /// `BG_E_BLOCKED_BY_POLICY`: the bandwidth schedule allows no background
    /// transfer now (a rate of 0).
    pub const BG_E_BLOCKED_BY_POLICY: Hresult = Hresult(0x8020_003E);
    /// `BG_E_NOT_SUPPORTED_WITH_CUSTOM_HTTP_METHOD`: a job with a non-GET
    /// method keeps its FOREGROUND priority.
    pub const BG_E_NOT_SUPPORTED_WITH_CUSTOM_HTTP_METHOD: Hresult = Hresult(0x8020_0071);
    /// `BG_E_READ_ONLY_WHEN_JOB_ACTIVE`: a property set only while SUSPENDED.
    pub const BG_E_READ_ONLY_WHEN_JOB_ACTIVE: Hresult = Hresult(0x8020_0075);
    /// `HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)`.
    pub const FILE_NOT_FOUND: Hresult = Hresult(0x8007_0002);
    /// `E_ACCESSDENIED`.
    pub const E_ACCESSDENIED: Hresult = Hresult(0x8007_0005);
    /// `HRESULT_FROM_WIN32(ERROR_INVALID_PASSWORD)`.
    pub const INVALID_PASSWORD: Hresult = Hresult(0x8007_0056);
    /// `CRYPT_E_NOT_FOUND`: no certificate or key, or not the one expected.
    pub const CRYPT_E_NOT_FOUND: Hresult = Hresult(0x8009_2004);
    /// `TRUST_E_FAIL`: the server's certificate matches none of the job's pins.
    pub const TRUST_E_FAIL: Hresult = Hresult(0x800B_010B);
    /// `ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED`: the server demands a client
    /// certificate and the job has none.
    pub const WINHTTP_CLIENT_AUTH_CERT_NEEDED: Hresult = Hresult(0x8007_2F0C);
    /// `ERROR_WINHTTP_TIMEOUT` as an HRESULT.
    pub const WINHTTP_TIMEOUT: Hresult = Hresult(0x8007_2EE2);
    /// `ERROR_WINHTTP_UNRECOGNIZED_SCHEME` as an HRESULT.
    pub const WINHTTP_UNRECOGNIZED_SCHEME: Hresult = Hresult(0x8007_2EE6);
    /// `ERROR_WINHTTP_NAME_NOT_RESOLVED` as an HRESULT.
    pub const WINHTTP_NAME_NOT_RESOLVED: Hresult = Hresult(0x8007_2EE7);
    /// `ERROR_WINHTTP_CANNOT_CONNECT` as an HRESULT.
    pub const WINHTTP_CANNOT_CONNECT: Hresult = Hresult(0x8007_2EFD);
    /// `ERROR_WINHTTP_CONNECTION_ERROR` as an HRESULT.
    pub const WINHTTP_CONNECTION_ERROR: Hresult = Hresult(0x8007_2EFE);
    /// `ERROR_WINHTTP_SECURE_CERT_DATE_INVALID` as an HRESULT.
    pub const WINHTTP_SECURE_CERT_DATE_INVALID: Hresult = Hresult(0x8007_2F05);
    /// `ERROR_WINHTTP_SECURE_CERT_CN_INVALID` as an HRESULT.
    pub const WINHTTP_SECURE_CERT_CN_INVALID: Hresult = Hresult(0x8007_2F06);
    /// `ERROR_WINHTTP_SECURE_INVALID_CA` as an HRESULT.
    pub const WINHTTP_SECURE_INVALID_CA: Hresult = Hresult(0x8007_2F0D);
    /// `ERROR_WINHTTP_SECURE_CERT_REV_FAILED` as an HRESULT.
    pub const WINHTTP_SECURE_CERT_REV_FAILED: Hresult = Hresult(0x8007_2F19);
    /// `ERROR_WINHTTP_INVALID_SERVER_RESPONSE` as an HRESULT.
    pub const WINHTTP_INVALID_SERVER_RESPONSE: Hresult = Hresult(0x8007_2F78);
    /// `ERROR_WINHTTP_REDIRECT_FAILED` as an HRESULT.
    pub const WINHTTP_REDIRECT_FAILED: Hresult = Hresult(0x8007_2F7C);
    /// `ERROR_WINHTTP_SECURE_CERT_REVOKED` as an HRESULT.
    pub const WINHTTP_SECURE_CERT_REVOKED: Hresult = Hresult(0x8007_2F8A);
    /// `ERROR_WINHTTP_SECURE_FAILURE` as an HRESULT.
    pub const WINHTTP_SECURE_FAILURE: Hresult = Hresult(0x8007_2F8F);
    /// `ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE` as an HRESULT.
    pub const WINHTTP_SECURE_CERT_WRONG_USAGE: Hresult = Hresult(0x8007_2F93);

    /// `HRESULT_FROM_WIN32(code)`: `0x8007xxxx` for codes 1..=0xFFFF (the low
    /// 16 bits are kept), the code itself when it is 0 or negative.
    pub const fn from_win32(code: u32) -> Hresult {
        if code as i32 <= 0 {
            Hresult(code)
        } else {
            Hresult((code & 0xFFFF) | 0x8007_0000)
        }
    }

    /// `BG_E_HTTP_ERROR_<status>` = `0x80190000 + status`.
    pub const fn http_status(status: u16) -> Hresult {
        Hresult(0x8019_0000 | status as u32)
    }

    /// True for success codes (`S_OK`, `S_FALSE`, `BG_S_*`).
    pub const fn is_success(self) -> bool {
        self.0 & 0x8000_0000 == 0
    }
}

impl fmt::Display for Hresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08X}", self.0)
    }
}

impl fmt::Debug for Hresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hresult(0x{:08X})", self.0)
    }
}

/// `BG_ERROR_CONTEXT`: where an error came from. Serialized as the name
/// without its prefix (`REMOTE_FILE`), as `bits --json` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorContext {
    /// No error.
    None,
    /// Origin unknown.
    Unknown,
    /// Raised by the queue manager.
    GeneralQueueManager,
    /// Raised while notifying the client.
    QueueManagerNotification,
    /// A local file problem (permission, disk full).
    LocalFile,
    /// A remote file problem (HTTP status, certificate, redirect).
    RemoteFile,
    /// A transport failure not tied to the file (connect, reset, timeout).
    GeneralTransport,
    /// The upload server application failed.
    RemoteApplication,
    /// The job's server-certificate validation (its pins or the
    /// embedder's validator) rejected the server (`BG_ERROR_CONTEXT`
    /// value 8).
    ServerCertificateCallback,
}

impl ErrorContext {
    /// The name as `bits --json` prints it (`REMOTE_FILE`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorContext::None => "NONE",
            ErrorContext::Unknown => "UNKNOWN",
            ErrorContext::GeneralQueueManager => "GENERAL_QUEUE_MANAGER",
            ErrorContext::QueueManagerNotification => "QUEUE_MANAGER_NOTIFICATION",
            ErrorContext::LocalFile => "LOCAL_FILE",
            ErrorContext::RemoteFile => "REMOTE_FILE",
            ErrorContext::GeneralTransport => "GENERAL_TRANSPORT",
            ErrorContext::RemoteApplication => "REMOTE_APPLICATION",
            ErrorContext::ServerCertificateCallback => "SERVER_CERTIFICATE_CALLBACK",
        }
    }
}

impl fmt::Display for ErrorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HTTP statuses that are retried (TRANSIENT_ERROR) rather than fatal.
pub const TRANSIENT_HTTP_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// Everything that can go wrong in bits-core, a transport, or a job
/// operation. Each variant knows its HRESULT ([`BitsError::hresult`]), its
/// context ([`BitsError::context`]) and whether the job retries
/// ([`BitsError::is_transient`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BitsError {
    /// `E_NOTIMPL` 0x80004001, fatal: a flag value that is undefined, or
    /// that this transport cannot honour exactly.
    #[error("not supported: {what}")]
    NotImplemented {
        /// What was refused.
        what: String,
    },
    /// `E_INVALIDARG` 0x80070057, fatal: a malformed URL, a relative LOCAL,
    /// an empty prefix, a number out of range.
    #[error("invalid argument: {what}")]
    InvalidArg {
        /// What was wrong.
        what: String,
    },
    /// `BG_E_NOT_FOUND` 0x80200001: no such job.
    #[error("no job {job}")]
    NotFound {
        /// The id or name asked for.
        job: String,
    },
    /// `BG_E_INVALID_STATE` 0x80200002: the job's state forbids the operation.
    #[error("{operation} is not allowed while the job is {state}")]
    InvalidState {
        /// The operation refused.
        operation: &'static str,
        /// The job's state, by name.
        state: &'static str,
    },
    /// `BG_E_EMPTY` 0x80200003: resume of a job with no files.
    #[error("the job has no files")]
    Empty,
    /// `BG_E_TOO_MANY_FILES` 0x8020001C: a second file on an upload job.
    #[error("an upload job takes exactly one file")]
    TooManyFiles,
    /// `BG_E_USERNAME_TOO_LARGE` 0x80200025 or `BG_E_PASSWORD_TOO_LARGE`
    /// 0x80200026: credentials over BITS's limits (never naming the
    /// password).
    #[error("{what}")]
    CredentialsTooLarge {
        /// Which of the two codes.
        code: Hresult,
        /// Which part, and its limit.
        what: String,
    },
    /// `BG_E_STRING_TOO_LONG` 0x80200021: custom headers over 16,384
    /// characters.
    #[error("{what}")]
    StringTooLong {
        /// What was too long, and by how much.
        what: String,
    },
    /// `BG_E_NOT_SUPPORTED_WITH_CUSTOM_HTTP_METHOD` 0x80200071: the
    /// priority of a job with a non-GET method stays FOREGROUND.
    #[error("the job has HTTP method {method}: its priority stays FOREGROUND")]
    NotSupportedWithCustomHttpMethod {
        /// The job's method.
        method: String,
    },
    /// `BG_E_READ_ONLY_WHEN_JOB_ACTIVE` 0x80200075: set only while the job
    /// is SUSPENDED.
    #[error("{what} can be changed only while the job is SUSPENDED (it is {state})")]
    ReadOnlyWhenJobActive {
        /// What was to be changed.
        what: &'static str,
        /// The job's state, by name.
        state: &'static str,
    },
    /// `E_ACCESSDENIED` 0x80070005, fatal: a write-only property read, or
    /// a private key that others may read.
    #[error("access denied: {what}")]
    AccessDenied {
        /// What was refused, and what to do.
        what: String,
    },
    /// 0x80070002, fatal: a file the job names (a client certificate or
    /// key) does not exist.
    #[error("{path}: no such file")]
    FileNotFound {
        /// The file.
        path: String,
    },
    /// `ERROR_INVALID_PASSWORD` 0x80070056, fatal: the password does not
    /// open the PKCS#12 file.
    #[error("{path}: the password does not open it")]
    InvalidPassword {
        /// The file.
        path: String,
    },
    /// `CRYPT_E_NOT_FOUND` 0x80092004, fatal: no certificate or key found,
    /// a key that is not the certificate's, or a certificate file that no
    /// longer holds the certificate the job chose.
    #[error("client certificate: {what}")]
    ClientCertNotFound {
        /// What was missing or different.
        what: String,
    },
    /// `ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED` 0x80072F0C, fatal: the
    /// server demands a client certificate and the job has none.
    #[error(
        "the server demands a client certificate and the job has none (set one with set-client-certificate)"
    )]
    ClientCertNeeded,
    /// Context SERVER_CERTIFICATE_CALLBACK, transient: the job's pins
    /// (`TRUST_E_FAIL` 0x800B010B) or the embedder's validator (its own
    /// HRESULT) rejected a server that passed verification under the flags.
    #[error("server certificate rejected: {what}")]
    ServerCertRejected {
        /// The HRESULT the job shows.
        code: Hresult,
        /// Who rejected what.
        what: String,
    },

    /// 0x80072F05, fatal: the certificate is expired or not yet valid.
    #[error("the server certificate is expired or not yet valid")]
    CertDateInvalid,
    /// 0x80072F06, fatal: the certificate does not name the host.
    #[error("the server certificate does not match the host name")]
    CertCnInvalid,
    /// 0x80072F0D, fatal: the chain ends in an unknown or untrusted root.
    #[error("the server certificate was issued by an unknown or untrusted authority")]
    UnknownCa,
    /// 0x80072F93, fatal: the certificate is not meant for server authentication.
    #[error("the server certificate is not valid for server authentication")]
    CertWrongUsage,
    /// 0x80072F8A, fatal: the certificate is revoked.
    #[error("the server certificate is revoked")]
    CertRevoked,
    /// 0x80072F19, fatal: revocation could not be checked.
    #[error("revocation could not be checked: {reason}")]
    CertRevocationFailed {
        /// Why (CRL unreachable, stale, badly signed…).
        reason: String,
    },
    /// 0x80072F8F, fatal: any other TLS failure.
    #[error("TLS failure: {reason}")]
    SecureFailure {
        /// What the TLS library said.
        reason: String,
    },

    /// `HRESULT_FROM_WIN32(status)`, fatal: a redirect under the DISALLOW policy.
    #[error("server redirected to {location} ({status}) and the job's policy disallows redirects")]
    RedirectDisallowed {
        /// The 3xx status.
        status: u16,
        /// The URL it redirected to.
        location: String,
    },
    /// 0x80072F7C, fatal: a redirect that is never followed (scheme, https→http,
    /// too many hops).
    #[error("redirect refused: {reason}")]
    RedirectFailed {
        /// Why.
        reason: String,
    },
    /// `BG_E_HTTP_ERROR_<status>` 0x80190000+status; transient for 408, 429,
    /// 500, 502, 503, 504, fatal otherwise.
    #[error("the server answered HTTP {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// `Retry-After` in seconds, when the server sent one.
        retry_after: Option<u64>,
    },
    /// `BG_E_HTTP_ERROR_401` / `_407` (0x80190191 / 0x80190197), fatal: a
    /// challenge the job cannot or may not answer, or credentials the
    /// server or proxy refused. `why` never holds a password.
    #[error("the {} answered HTTP {status}: {why}", if *status == 407 { "proxy" } else { "server" })]
    AuthFailed {
        /// 401 (server) or 407 (proxy).
        status: u16,
        /// Why it was not answered, or that the answer was refused.
        why: String,
    },
    /// An upload packet's Ack with an error status: its `BITS-Error-Code`
    /// when it sent one, else `BG_E_HTTP_ERROR_S`; transient for 408, 429,
    /// 500, 502, 503, 504 as any status.
    #[error("the upload server answered HTTP {status} ({code}): {what}")]
    UploadRefused {
        /// The Ack's status.
        status: u16,
        /// The job's code.
        code: Hresult,
        /// `BITS-Error-Context` 0x7 (the server's application) or the
        /// remote file.
        context: ErrorContext,
        /// Which packet, and what the server said.
        what: String,
    },
    /// `BG_E_LOCAL_FILE_CHANGED` 0x8020001D, fatal: an upload's source
    /// changed size or modification time while it was sent.
    #[error("{path} changed while it was uploaded")]
    LocalFileChanged {
        /// The source file.
        path: String,
    },
    /// `BG_E_BLOCKED_BY_POLICY` 0x8020003E, transient: the bandwidth
    /// schedule has a rate of 0 for the job's priority now; the job goes
    /// back to QUEUED when that window ends.
    #[error("the bandwidth schedule blocks background transfers now (a rate of 0); the job waits for the window to end")]
    BlockedByPolicy,
    /// 0x80072EFD, transient: the TCP connection failed.
    #[error("cannot connect to {host}: {reason}")]
    CannotConnect {
        /// host:port.
        host: String,
        /// What the OS said.
        reason: String,
    },
    /// 0x80072EFE, transient: the connection was reset or closed early.
    #[error("connection reset or closed: {reason}")]
    ConnectionReset {
        /// What happened.
        reason: String,
    },
    /// 0x80072EE2, transient: a connect, header or body timeout.
    #[error("timed out: {what}")]
    Timeout {
        /// What timed out.
        what: String,
    },
    /// 0x80072EE7, transient: DNS failed.
    #[error("cannot resolve {host}")]
    NameNotResolved {
        /// The host.
        host: String,
    },
    /// 0x80072EE6, fatal: a URL scheme other than http/https.
    #[error("unsupported URL scheme {scheme:?}: only http and https")]
    UnsupportedScheme {
        /// The scheme.
        scheme: String,
    },
    /// 0x8020001B, transient: the server broke the protocol (bad Content-Range…).
    #[error("invalid server response: {what}")]
    InvalidServerResponse {
        /// What was wrong.
        what: String,
    },
    /// `HRESULT_FROM_WIN32` of the OS error, fatal, context LOCAL_FILE: a
    /// local file could not be written, renamed or removed.
    #[error("{operation} {path}: {source}")]
    LocalFile {
        /// What was done (`write`, `rename`…).
        operation: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `E_FAIL`, fatal: an internal failure.
    #[error("internal error: {what}")]
    Internal {
        /// What failed.
        what: String,
    },
}

impl BitsError {
    /// A local-file error from an `io::Error`.
    pub fn local(operation: &'static str, path: impl fmt::Display, source: io::Error) -> Self {
        BitsError::LocalFile {
            operation,
            path: path.to_string(),
            source,
        }
    }

    /// The HRESULT, per `docs/spec/policy.md`.
    pub fn hresult(&self) -> Hresult {
        use BitsError::*;
        match self {
            NotImplemented { .. } => Hresult::E_NOTIMPL,
            InvalidArg { .. } => Hresult::E_INVALIDARG,
            NotFound { .. } => Hresult::BG_E_NOT_FOUND,
            InvalidState { .. } => Hresult::BG_E_INVALID_STATE,
            Empty => Hresult::BG_E_EMPTY,
            TooManyFiles => Hresult::BG_E_TOO_MANY_FILES,
            StringTooLong { .. } => Hresult::BG_E_STRING_TOO_LONG,
            CredentialsTooLarge { code, .. } => *code,
            NotSupportedWithCustomHttpMethod { .. } => Hresult::BG_E_NOT_SUPPORTED_WITH_CUSTOM_HTTP_METHOD,
            ReadOnlyWhenJobActive { .. } => Hresult::BG_E_READ_ONLY_WHEN_JOB_ACTIVE,
            AccessDenied { .. } => Hresult::E_ACCESSDENIED,
            FileNotFound { .. } => Hresult::FILE_NOT_FOUND,
            InvalidPassword { .. } => Hresult::INVALID_PASSWORD,
            ClientCertNotFound { .. } => Hresult::CRYPT_E_NOT_FOUND,
            ClientCertNeeded => Hresult::WINHTTP_CLIENT_AUTH_CERT_NEEDED,
            ServerCertRejected { code, .. } => *code,
            CertDateInvalid => Hresult::WINHTTP_SECURE_CERT_DATE_INVALID,
            CertCnInvalid => Hresult::WINHTTP_SECURE_CERT_CN_INVALID,
            UnknownCa => Hresult::WINHTTP_SECURE_INVALID_CA,
            CertWrongUsage => Hresult::WINHTTP_SECURE_CERT_WRONG_USAGE,
            CertRevoked => Hresult::WINHTTP_SECURE_CERT_REVOKED,
            CertRevocationFailed { .. } => Hresult::WINHTTP_SECURE_CERT_REV_FAILED,
            SecureFailure { .. } => Hresult::WINHTTP_SECURE_FAILURE,
            RedirectDisallowed { status, .. } => Hresult::from_win32(u32::from(*status)),
            RedirectFailed { .. } => Hresult::WINHTTP_REDIRECT_FAILED,
            HttpStatus { status, .. } | AuthFailed { status, .. } => Hresult::http_status(*status),
            UploadRefused { code, .. } => *code,
            LocalFileChanged { .. } => Hresult::BG_E_LOCAL_FILE_CHANGED,
            BlockedByPolicy => Hresult::BG_E_BLOCKED_BY_POLICY,
            CannotConnect { .. } => Hresult::WINHTTP_CANNOT_CONNECT,
            ConnectionReset { .. } => Hresult::WINHTTP_CONNECTION_ERROR,
            Timeout { .. } => Hresult::WINHTTP_TIMEOUT,
            NameNotResolved { .. } => Hresult::WINHTTP_NAME_NOT_RESOLVED,
            UnsupportedScheme { .. } => Hresult::WINHTTP_UNRECOGNIZED_SCHEME,
            InvalidServerResponse { .. } => Hresult::BG_E_INVALID_SERVER_RESPONSE,
            LocalFile { source, .. } => match source.raw_os_error() {
                Some(code) => Hresult::from_win32(os_error_to_win32(code)),
                None => Hresult::E_FAIL,
            },
            Internal { .. } => Hresult::E_FAIL,
        }
    }

    /// The `BG_ERROR_CONTEXT` a job shows for this error.
    pub fn context(&self) -> ErrorContext {
        use BitsError::*;
        match self {
            LocalFile { .. } | LocalFileChanged { .. } => ErrorContext::LocalFile,
            UploadRefused { context, .. } => *context,
            CannotConnect { .. } | ConnectionReset { .. } | Timeout { .. } | NameNotResolved { .. } => {
                ErrorContext::GeneralTransport
            }
            CertDateInvalid
            | CertCnInvalid
            | UnknownCa
            | CertWrongUsage
            | CertRevoked
            | CertRevocationFailed { .. }
            | SecureFailure { .. }
            | ClientCertNeeded
            | ClientCertNotFound { .. }
            | FileNotFound { .. }
            | InvalidPassword { .. }
            | AccessDenied { .. }
            | RedirectDisallowed { .. }
            | RedirectFailed { .. }
            | HttpStatus { .. }
            | AuthFailed { .. }
            | UnsupportedScheme { .. }
            | InvalidServerResponse { .. }
            | InvalidArg { .. } => ErrorContext::RemoteFile,
            Internal { .. } => ErrorContext::GeneralQueueManager,
            ServerCertRejected { .. } => ErrorContext::ServerCertificateCallback,
            NotImplemented { .. }
            | NotFound { .. }
            | InvalidState { .. }
            | Empty
            | TooManyFiles
            | StringTooLong { .. }
            | CredentialsTooLarge { .. }
            | NotSupportedWithCustomHttpMethod { .. }
            | ReadOnlyWhenJobActive { .. }
            | BlockedByPolicy => ErrorContext::GeneralQueueManager,
        }
    }

    /// True when the job goes to TRANSIENT_ERROR and retries; false when it
    /// goes to ERROR.
    pub fn is_transient(&self) -> bool {
        use BitsError::*;
        match self {
            HttpStatus { status, .. } | UploadRefused { status, .. } => {
                TRANSIENT_HTTP_STATUSES.contains(status)
            }
            CannotConnect { .. }
            | ConnectionReset { .. }
            | Timeout { .. }
            | NameNotResolved { .. }
            | InvalidServerResponse { .. }
            | ServerCertRejected { .. }
            | BlockedByPolicy => true,
            _ => false,
        }
    }

    /// True for the certificate failures of the table in `docs/spec/policy.md` (found during
    /// or before the handshake).
    pub fn is_certificate_failure(&self) -> bool {
        use BitsError::*;
        matches!(
            self,
            CertDateInvalid
                | CertCnInvalid
                | UnknownCa
                | CertWrongUsage
                | CertRevoked
                | CertRevocationFailed { .. }
                | SecureFailure { .. }
        )
    }

    /// The record a job keeps of this error.
    pub fn to_job_error(&self, file_index: Option<usize>) -> JobError {
        JobError {
            code: self.hresult(),
            context: self.context(),
            message: self.to_string(),
            file_index,
        }
    }
}

/// A server-certificate fault in policy terms: what every TLS backend
/// classifies its library's verify errors into, which flag may ignore it,
/// and the error a handshake refused on it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertFault {
    /// Host name or IP address mismatch; ignorable by 0x02 (0x80072F06).
    Cn,
    /// Expired or not yet valid; ignorable by 0x04 (0x80072F05).
    Date,
    /// No path to a trusted root; ignorable by 0x08 (0x80072F0D).
    UnknownCa,
    /// Not valid for server authentication; ignorable by 0x10 (0x80072F93).
    Usage,
    /// Revoked by a CRL; never ignorable (0x80072F8A).
    Revoked,
    /// Revocation could not be checked; never ignorable (0x80072F19).
    RevocationFailed,
    /// Anything else (bad signature, CA misuse, weak key…); never
    /// ignorable (0x80072F8F).
    Other,
}

impl CertFault {
    /// The flag bit that covers this fault, or 0 when none may.
    pub const fn ignored_by(self) -> u32 {
        match self {
            CertFault::Cn => SecurityFlags::IGNORE_CERT_CN_INVALID,
            CertFault::Date => SecurityFlags::IGNORE_CERT_DATE_INVALID,
            CertFault::UnknownCa => SecurityFlags::IGNORE_UNKNOWN_CA,
            CertFault::Usage => SecurityFlags::IGNORE_CERT_WRONG_USAGE,
            CertFault::Revoked | CertFault::RevocationFailed | CertFault::Other => 0,
        }
    }

    /// Whether `flags` cover this fault.
    pub const fn covered_by(self, flags: SecurityFlags) -> bool {
        let bit = self.ignored_by();
        bit != 0 && flags.contains(bit)
    }

    /// The policy error for a handshake refused on this fault; `detail`
    /// says why for the faults whose error carries a reason.
    pub fn to_error(self, detail: &str) -> BitsError {
        match self {
            CertFault::Cn => BitsError::CertCnInvalid,
            CertFault::Date => BitsError::CertDateInvalid,
            CertFault::UnknownCa => BitsError::UnknownCa,
            CertFault::Usage => BitsError::CertWrongUsage,
            CertFault::Revoked => BitsError::CertRevoked,
            CertFault::RevocationFailed => BitsError::CertRevocationFailed {
                reason: detail.to_owned(),
            },
            CertFault::Other => BitsError::SecureFailure {
                reason: detail.to_owned(),
            },
        }
    }
}

/// Maps a Linux `errno` to the Win32 error a BITS job shows, so that
/// `HRESULT_FROM_WIN32` of it means what Windows would say. Unknown codes map
/// to `ERROR_GEN_FAILURE` (31).
pub fn os_error_to_win32(errno: i32) -> u32 {
    match errno {
        1 | 13 => 5,   // EPERM, EACCES → ERROR_ACCESS_DENIED
        2 => 2,        // ENOENT → ERROR_FILE_NOT_FOUND
        20 => 3,       // ENOTDIR → ERROR_PATH_NOT_FOUND
        17 => 80,      // EEXIST → ERROR_FILE_EXISTS
        28 => 112,     // ENOSPC → ERROR_DISK_FULL
        27 => 223,     // EFBIG → ERROR_FILE_TOO_LARGE
        30 => 19,      // EROFS → ERROR_WRITE_PROTECT
        122 => 1295,   // EDQUOT → ERROR_DISK_QUOTA_EXCEEDED
        5 => 1117,     // EIO → ERROR_IO_DEVICE
        21 => 5,       // EISDIR → ERROR_ACCESS_DENIED
        36 => 206,     // ENAMETOOLONG → ERROR_FILENAME_EXCED_RANGE
        16 | 26 => 32, // EBUSY, ETXTBSY → ERROR_SHARING_VIOLATION
        24 | 23 => 4,  // EMFILE, ENFILE → ERROR_TOO_MANY_OPEN_FILES
        12 => 8,       // ENOMEM → ERROR_NOT_ENOUGH_MEMORY
        _ => 31,       // ERROR_GEN_FAILURE
    }
}

/// The error a job keeps: what `bits info` prints under `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// The HRESULT (`"0x80190194"` in JSON).
    #[serde(with = "hresult_hex")]
    pub code: Hresult,
    /// Where it came from.
    pub context: ErrorContext,
    /// In words.
    pub message: String,
    /// The file it concerns, when one does.
    pub file_index: Option<usize>,
}

mod hresult_hex {
    use super::Hresult;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Hresult, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hresult, D::Error> {
        let text = String::deserialize(d)?;
        let hex = text
            .strip_prefix("0x")
            .ok_or_else(|| D::Error::custom("HRESULT must start with 0x"))?;
        u32::from_str_radix(hex, 16)
            .map(Hresult)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hresult_from_win32() {
        assert_eq!(Hresult::from_win32(12044), Hresult(0x8007_2F0C));
        assert_eq!(Hresult::from_win32(301), Hresult(0x8007_012D));
        assert_eq!(Hresult::from_win32(0), Hresult(0));
        assert_eq!(Hresult::http_status(404), Hresult(0x8019_0194));
        assert_eq!(Hresult(0x8019_0194).to_string(), "0x80190194");
        assert!(Hresult::BG_S_PARTIAL_COMPLETE.is_success());
        assert!(!Hresult::E_NOTIMPL.is_success());
    }

    fn check(e: BitsError, code: u32, context: ErrorContext, transient: bool) {
        assert_eq!(e.hresult(), Hresult(code), "{e}");
        assert_eq!(e.context(), context, "{e}");
        assert_eq!(e.is_transient(), transient, "{e}");
    }

    #[test]
    fn policy_table() {
        use ErrorContext::{GeneralQueueManager, GeneralTransport, RemoteFile};
        check(BitsError::CertDateInvalid, 0x80072F05, RemoteFile, false);
        check(BitsError::CertCnInvalid, 0x80072F06, RemoteFile, false);
        check(BitsError::UnknownCa, 0x80072F0D, RemoteFile, false);
        check(
            BitsError::CertRevocationFailed { reason: "x".into() },
            0x80072F19,
            RemoteFile,
            false,
        );
        check(BitsError::CertRevoked, 0x80072F8A, RemoteFile, false);
        check(BitsError::CertWrongUsage, 0x80072F93, RemoteFile, false);
        check(
            BitsError::SecureFailure { reason: "x".into() },
            0x80072F8F,
            RemoteFile,
            false,
        );
        for (status, code) in [
            (300, 0x8007012C),
            (301, 0x8007012D),
            (302, 0x8007012E),
            (303, 0x8007012F),
            (307, 0x80070133),
            (308, 0x80070134),
        ] {
            check(
                BitsError::RedirectDisallowed {
                    status,
                    location: "l".into(),
                },
                code,
                RemoteFile,
                false,
            );
        }
        check(
            BitsError::RedirectFailed { reason: "x".into() },
            0x80072F7C,
            RemoteFile,
            false,
        );
        check(
            BitsError::HttpStatus {
                status: 404,
                retry_after: None,
            },
            0x80190194,
            RemoteFile,
            false,
        );
        check(
            BitsError::HttpStatus {
                status: 403,
                retry_after: None,
            },
            0x80190193,
            RemoteFile,
            false,
        );
        for s in TRANSIENT_HTTP_STATUSES {
            check(
                BitsError::HttpStatus {
                    status: s,
                    retry_after: None,
                },
                0x80190000 + u32::from(s),
                RemoteFile,
                true,
            );
        }
        check(
            BitsError::CannotConnect {
                host: "h".into(),
                reason: "r".into(),
            },
            0x80072EFD,
            GeneralTransport,
            true,
        );
        check(
            BitsError::ConnectionReset { reason: "r".into() },
            0x80072EFE,
            GeneralTransport,
            true,
        );
        check(
            BitsError::Timeout { what: "r".into() },
            0x80072EE2,
            GeneralTransport,
            true,
        );
        check(
            BitsError::NameNotResolved { host: "h".into() },
            0x80072EE7,
            GeneralTransport,
            true,
        );
        check(
            BitsError::NotImplemented { what: "x".into() },
            0x80004001,
            GeneralQueueManager,
            false,
        );
        check(
            BitsError::InvalidArg { what: "x".into() },
            0x80070057,
            RemoteFile,
            false,
        );
        check(
            BitsError::NotFound { job: "x".into() },
            0x80200001,
            GeneralQueueManager,
            false,
        );
        check(
            BitsError::InvalidState {
                operation: "resume",
                state: "CANCELLED",
            },
            0x80200002,
            GeneralQueueManager,
            false,
        );
        check(BitsError::Empty, 0x80200003, GeneralQueueManager, false);
        check(BitsError::TooManyFiles, 0x8020001C, GeneralQueueManager, false);
        check(BitsError::BlockedByPolicy, 0x8020003E, GeneralQueueManager, true);
    }

    #[test]
    fn cert_faults_map_to_their_flag_and_error() {
        let all = SecurityFlags::new(0x1F).unwrap();
        for (fault, bit, code) in [
            (CertFault::Cn, 0x02, 0x80072F06),
            (CertFault::Date, 0x04, 0x80072F05),
            (CertFault::UnknownCa, 0x08, 0x80072F0D),
            (CertFault::Usage, 0x10, 0x80072F93),
            (CertFault::Revoked, 0, 0x80072F8A),
            (CertFault::RevocationFailed, 0, 0x80072F19),
            (CertFault::Other, 0, 0x80072F8F),
        ] {
            assert_eq!(fault.ignored_by(), bit, "{fault:?}");
            assert_eq!(fault.covered_by(all), bit != 0, "{fault:?}");
            assert!(!fault.covered_by(SecurityFlags::new(0x1F & !bit).unwrap()) || bit == 0);
            assert_eq!(fault.to_error("d").hresult().0, code, "{fault:?}");
        }
    }

    #[test]
    fn local_file_errors_are_hresult_from_win32_of_the_os_error() {
        let full = BitsError::local("write", "/x", io::Error::from_raw_os_error(28));
        check(full, 0x80070070, ErrorContext::LocalFile, false);
        let denied = BitsError::local("create", "/x", io::Error::from_raw_os_error(13));
        check(denied, 0x80070005, ErrorContext::LocalFile, false);
    }

    #[test]
    fn job_error_json() {
        let e = BitsError::HttpStatus {
            status: 404,
            retry_after: None,
        }
        .to_job_error(Some(0));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["code"], "0x80190194");
        assert_eq!(json["context"], "REMOTE_FILE");
        assert_eq!(json["file_index"], 0);
        let back: JobError = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
