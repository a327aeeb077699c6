//! How the `bits` command fails: one line on stderr that names the HRESULT
//! in hex and says what happened and what to do, and an exit status of 1
//! (runtime failure, a job in ERROR) or 2 (bad input, no change made).

use std::fmt;
use std::process::ExitCode;

use bits_core::{BitsError, Hresult};

/// `HRESULT_FROM_WIN32(ERROR_FILE_CORRUPT)`: the store's database is damaged.
pub const STORE_CORRUPT: Hresult = Hresult(0x8007_0570);
/// `HRESULT_FROM_WIN32(ERROR_REVISION_MISMATCH)`: the store was written by a
/// newer `bits`.
pub const STORE_TOO_NEW: Hresult = Hresult(0x8007_051A);
/// `HRESULT_FROM_WIN32(ERROR_BUSY)`: another daemon holds the store.
pub const DAEMON_BUSY: Hresult = Hresult(0x8007_00AA);
/// `HRESULT_FROM_WIN32(ERROR_SERVICE_NOT_ACTIVE)`: the daemon did not start
/// or went away.
pub const DAEMON_DOWN: Hresult = Hresult(0x8007_0426);

/// Exit status 0: done as asked.
pub const EXIT_OK: u8 = 0;
/// Exit status 1: the job ended in ERROR, or another runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status 2: bad input (unknown job, bad URL, bad flags, unsupported
/// flags, wrong state); nothing was changed.
pub const EXIT_BAD_INPUT: u8 = 2;

/// A failure of a `bits` command, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HRESULT it maps to.
    pub code: Hresult,
    /// What happened, in words (no trailing period).
    pub message: String,
    /// What to do about it (may be empty).
    pub hint: String,
    /// The exit status.
    pub exit: u8,
}

impl Failure {
    /// A failure with an explicit code, message, hint and exit status.
    pub fn new(code: Hresult, message: impl Into<String>, hint: impl Into<String>, exit: u8) -> Self {
        Failure {
            code,
            message: bits_core::without_user_info(&message.into()),
            hint: hint.into(),
            exit,
        }
    }

    /// Bad input: exit 2.
    pub fn bad_input(code: Hresult, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Failure::new(code, message, hint, EXIT_BAD_INPUT)
    }

    /// A runtime failure: exit 1.
    pub fn runtime(code: Hresult, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Failure::new(code, message, hint, EXIT_FAILURE)
    }

    /// Replaces the hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// The exit code for `main`.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit)
    }

    /// From a [`BitsError`], with the hint that fits its kind.
    pub fn from_bits(error: &BitsError) -> Self {
        let code = error.hresult();
        let exit = if is_bad_input(error) {
            EXIT_BAD_INPUT
        } else {
            EXIT_FAILURE
        };
        Failure::new(code, error.to_string(), default_hint(error), exit)
    }
}

/// Whether a [`BitsError`] reports bad input (exit 2) rather than a runtime
/// failure (exit 1). The errors of a client certificate file are bad input
/// here: a command meets them when it sets one; at transfer time they are
/// the job's ERROR, which `wait` and `transfer` report with exit 1.
pub fn is_bad_input(error: &BitsError) -> bool {
    matches!(
        error,
        BitsError::NotImplemented { .. }
            | BitsError::InvalidArg { .. }
            | BitsError::NotFound { .. }
            | BitsError::InvalidState { .. }
            | BitsError::Empty
            | BitsError::TooManyFiles
            | BitsError::UnsupportedScheme { .. }
            | BitsError::StringTooLong { .. }
            | BitsError::CredentialsTooLarge { .. }
            | BitsError::NotSupportedWithCustomHttpMethod { .. }
            | BitsError::ReadOnlyWhenJobActive { .. }
            | BitsError::AccessDenied { .. }
            | BitsError::FileNotFound { .. }
            | BitsError::InvalidPassword { .. }
            | BitsError::ClientCertNotFound { .. }
    )
}

fn default_hint(error: &BitsError) -> &'static str {
    match error {
        BitsError::NotImplemented { .. } => {
            "nothing was changed; the job's backend cannot honour it exactly (`bits backends` lists the backends and the flag values each honours)"
        }
        BitsError::StringTooLong { .. } => {
            "nothing was changed; send fewer or shorter headers"
        }
        BitsError::NotSupportedWithCustomHttpMethod { .. } => {
            "nothing was changed; `bits set-http-method JOB GET` first (possible only before the job's first resume)"
        }
        BitsError::ReadOnlyWhenJobActive { .. } => {
            "nothing was changed; `bits suspend JOB` first, then set it and `bits resume JOB`"
        }
        BitsError::AccessDenied { .. } => "nothing was changed",
        BitsError::FileNotFound { .. } => "nothing was changed; check the path",
        BitsError::InvalidPassword { .. } => {
            "nothing was changed; check the password given with --password-file or --password-env"
        }
        BitsError::ClientCertNotFound { .. } => {
            "nothing was changed; give a file with the certificate and its private key (or the key with --key)"
        }
        BitsError::InvalidArg { .. } | BitsError::UnsupportedScheme { .. } => {
            "nothing was changed; fix the argument and run the command again"
        }
        BitsError::NotFound { .. } => "`bits list --all` shows the jobs of this store",
        BitsError::InvalidState { .. } => "nothing was changed; `bits info JOB` shows the job's state",
        BitsError::Empty => "add a file first with `bits add-file JOB URL LOCAL`",
        BitsError::TooManyFiles => "an upload job takes exactly one file; create another job",
        _ => "`bits info JOB` shows the job; fix the cause and `bits resume JOB`",
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(name) = hresult_name(self.code) {
            write!(f, " {name}")?;
        }
        write!(f, ": {}", one_line(&self.message))?;
        if !self.hint.is_empty() {
            write!(f, "; {}", one_line(&self.hint))?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

impl From<BitsError> for Failure {
    fn from(error: BitsError) -> Self {
        Failure::from_bits(&error)
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The symbolic name of the HRESULTs `bits` prints, when it has one.
pub fn hresult_name(code: Hresult) -> Option<&'static str> {
    Some(match code.0 {
        0x0000_0000 => "S_OK",
        0x0000_0001 => "S_FALSE",
        0x0020_0017 => "BG_S_PARTIAL_COMPLETE",
        0x0020_001A => "BG_S_UNABLE_TO_DELETE_FILES",
        0x8000_4001 => "E_NOTIMPL",
        0x8000_4005 => "E_FAIL",
        0x8007_0057 => "E_INVALIDARG",
        0x8020_0001 => "BG_E_NOT_FOUND",
        0x8020_0002 => "BG_E_INVALID_STATE",
        0x8020_0003 => "BG_E_EMPTY",
        0x8020_000F => "BG_E_ERROR_INFORMATION_UNAVAILABLE",
        0x8020_001B => "BG_E_INVALID_SERVER_RESPONSE",
        0x8020_001C => "BG_E_TOO_MANY_FILES",
        0x8020_0021 => "BG_E_STRING_TOO_LONG",
        0x8020_0025 => "BG_E_USERNAME_TOO_LARGE",
        0x8020_0026 => "BG_E_PASSWORD_TOO_LARGE",
        0x8020_0071 => "BG_E_NOT_SUPPORTED_WITH_CUSTOM_HTTP_METHOD",
        0x8020_0075 => "BG_E_READ_ONLY_WHEN_JOB_ACTIVE",
        0x8007_0056 => "ERROR_INVALID_PASSWORD",
        0x8009_2004 => "CRYPT_E_NOT_FOUND",
        0x800B_010B => "TRUST_E_FAIL",
        0x8007_2F0C => "ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED",
        0x8007_2EE2 => "ERROR_WINHTTP_TIMEOUT",
        0x8007_2EE6 => "ERROR_WINHTTP_UNRECOGNIZED_SCHEME",
        0x8007_2EE7 => "ERROR_WINHTTP_NAME_NOT_RESOLVED",
        0x8007_2EFD => "ERROR_WINHTTP_CANNOT_CONNECT",
        0x8007_2EFE => "ERROR_WINHTTP_CONNECTION_ERROR",
        0x8007_2F05 => "ERROR_WINHTTP_SECURE_CERT_DATE_INVALID",
        0x8007_2F06 => "ERROR_WINHTTP_SECURE_CERT_CN_INVALID",
        0x8007_2F0D => "ERROR_WINHTTP_SECURE_INVALID_CA",
        0x8007_2F19 => "ERROR_WINHTTP_SECURE_CERT_REV_FAILED",
        0x8007_2F78 => "ERROR_WINHTTP_INVALID_SERVER_RESPONSE",
        0x8007_2F7C => "ERROR_WINHTTP_REDIRECT_FAILED",
        0x8007_2F8A => "ERROR_WINHTTP_SECURE_CERT_REVOKED",
        0x8007_2F8F => "ERROR_WINHTTP_SECURE_FAILURE",
        0x8007_2F93 => "ERROR_WINHTTP_SECURE_CERT_WRONG_USAGE",
        0x8007_0002 => "ERROR_FILE_NOT_FOUND",
        0x8007_0003 => "ERROR_PATH_NOT_FOUND",
        0x8007_0005 => "E_ACCESSDENIED",
        0x8007_0013 => "ERROR_WRITE_PROTECT",
        0x8007_0070 => "ERROR_DISK_FULL",
        0x8007_00DF => "ERROR_FILE_TOO_LARGE",
        0x8007_050F => "ERROR_DISK_QUOTA_EXCEEDED",
        0x8007_0570 => "ERROR_FILE_CORRUPT",
        0x8007_051A => "ERROR_REVISION_MISMATCH",
        0x8007_00AA => "ERROR_BUSY",
        0x8007_0426 => "ERROR_SERVICE_NOT_ACTIVE",
        0x8007_04C7 => "ERROR_CANCELLED",
        c if c & 0xFFFF_0000 == 0x8019_0000 => return Some(http_name(c & 0xFFFF)),
        _ => return None,
    })
}

fn http_name(status: u32) -> &'static str {
    match status {
        400 => "BG_E_HTTP_ERROR_400",
        401 => "BG_E_HTTP_ERROR_401",
        403 => "BG_E_HTTP_ERROR_403",
        404 => "BG_E_HTTP_ERROR_404",
        408 => "BG_E_HTTP_ERROR_408",
        410 => "BG_E_HTTP_ERROR_410",
        429 => "BG_E_HTTP_ERROR_429",
        500 => "BG_E_HTTP_ERROR_500",
        502 => "BG_E_HTTP_ERROR_502",
        503 => "BG_E_HTTP_ERROR_503",
        504 => "BG_E_HTTP_ERROR_504",
        _ => "BG_E_HTTP_ERROR",
    }
}

/// Turns any error of a command into a [`Failure`]: a `Failure` or a
/// `BitsError` inside the `anyhow::Error` keeps its code; anything else is
/// `E_FAIL`, exit 1.
pub fn to_failure(error: &anyhow::Error) -> Failure {
    if let Some(f) = error.downcast_ref::<Failure>() {
        return f.clone();
    }
    if let Some(b) = error.downcast_ref::<BitsError>() {
        return Failure::from_bits(b);
    }
    Failure::runtime(
        Hresult::E_FAIL,
        format!("{error:#}"),
        "run again with -v for details",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_of_urls_never_shows() {
        let f = Failure::from_bits(&BitsError::InvalidArg {
            what: "remote name \"https://u:hunter3@h:99999/x\" is not a valid URL; proxy \
                   http://alice:pw@[::1]:3128 and https://h/@x?a=b@c, ftp://:p@q"
                .into(),
        });
        let line = f.to_string();
        assert!(
            !line.contains("hunter3") && !line.contains("alice") && !line.contains(":pw"),
            "{line}"
        );
        assert!(line.contains("\"https://…@h:99999/x\""), "{line}");
        assert!(
            line.contains("http://…@[::1]:3128 and https://h/@x?a=b@c, ftp://…@q"),
            "{line}"
        );
        assert_eq!(bits_core::without_user_info("no url @ all"), "no url @ all");
    }

    #[test]
    fn one_line_with_code_name_and_hint() {
        let f = Failure::from_bits(&BitsError::NotFound { job: "x".into() });
        let text = f.to_string();
        assert!(
            text.starts_with("0x80200001 BG_E_NOT_FOUND: no job x; "),
            "{text}"
        );
        assert_eq!(f.exit, 2);
        assert!(!text.contains('\n'));
    }

    #[test]
    fn runtime_errors_exit_1() {
        let f = Failure::from_bits(&BitsError::HttpStatus {
            status: 404,
            retry_after: None,
        });
        assert_eq!(f.exit, 1);
        assert!(f.to_string().starts_with("0x80190194 BG_E_HTTP_ERROR_404: "));
    }

    #[test]
    fn anyhow_keeps_codes() {
        let e = anyhow::Error::new(BitsError::Empty);
        assert_eq!(to_failure(&e).code, Hresult::BG_E_EMPTY);
        let e = anyhow::anyhow!("boom\nsecond line");
        let f = to_failure(&e);
        assert_eq!(f.code, Hresult::E_FAIL);
        assert!(!f.to_string().contains('\n'));
    }
}
