//! Jobs and their files: the data a store keeps, and the operations a user
//! may ask for, each checked against the state table first so that a refused
//! operation changes nothing.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::bandwidth::{Controller, LimiterSlot, SharedLimiter};
use crate::credentials::{AuthScheme, AuthTarget, Credentials};
use crate::error::{BitsError, Hresult, JobError};
use crate::flags::SecurityFlags;
use crate::http_options::{ClientCertificate, CustomHeaders, PinSet};
use crate::policy::ConnectionPolicy;
use crate::proxy::ProxySettings;
use crate::state::{check_operation, next_state, Event, JobState, Operation};

/// Default minimum retry delay, in seconds.
pub const DEFAULT_MIN_RETRY_DELAY: u64 = 600;
/// Smallest minimum retry delay; lower values are stored as this.
pub const MIN_RETRY_DELAY_FLOOR: u64 = 5;
/// Default no-progress timeout, in seconds (14 days).
pub const DEFAULT_NO_PROGRESS_TIMEOUT: u64 = 1_209_600;

/// `BG_JOB_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobType {
    /// Download files from servers.
    Download,
    /// Upload one file.
    Upload,
    /// Upload one file and download the server's reply.
    UploadReply,
}

impl JobType {
    /// The name as `bits` prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobType::Download => "DOWNLOAD",
            JobType::Upload => "UPLOAD",
            JobType::UploadReply => "UPLOAD_REPLY",
        }
    }
}

/// `BG_JOB_PRIORITY`, highest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    /// Runs before everything else.
    Foreground,
    /// Before NORMAL and LOW.
    High,
    /// The default.
    Normal,
    /// Only when nothing else waits.
    Low,
}

impl Priority {
    /// The name as `bits` prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Foreground => "FOREGROUND",
            Priority::High => "HIGH",
            Priority::Normal => "NORMAL",
            Priority::Low => "LOW",
        }
    }

    /// Parses `foreground|high|normal|low`, case-insensitively.
    pub fn parse(text: &str) -> Result<Self, BitsError> {
        match text.to_ascii_lowercase().as_str() {
            "foreground" => Ok(Priority::Foreground),
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            _ => Err(BitsError::InvalidArg {
                what: format!("priority {text:?} is not one of foreground, high, normal, low"),
            }),
        }
    }
}

/// One file of a job.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileInfo {
    /// The URL as the user gave it (validated, not normalized, so that
    /// `replace-remote-prefix` matches what the user sees); a reported
    /// redirect changes it.
    pub remote_name: String,
    /// The absolute path the file gets on `complete`.
    pub local_name: PathBuf,
    /// The hidden temporary file beside `local_name` that receives the bytes.
    pub temp_name: PathBuf,
    /// The size, once the server said it.
    pub bytes_total: Option<u64>,
    /// Bytes safely in the temporary file.
    pub bytes_transferred: u64,
    /// Every byte is in the temporary file.
    pub completed: bool,
    /// The server's validator (ETag, else Last-Modified) the bytes so far
    /// belong to; a different one restarts the file.
    #[serde(default)]
    pub validator: Option<String>,
    /// The next transfer of this file starts again from byte 0 (set when
    /// `ENABLE_CRL_CHECK` is turned on part-way).
    #[serde(default)]
    pub restart: bool,
    /// An upload's session with its server, once created: kept with the
    /// job so that a restart continues it.
    #[serde(default)]
    pub upload: Option<UploadSession>,
    /// The protocol that carried the file's last response, by its ALPN
    /// name ([`crate::transport::Response::protocol`]: `http/1.1`, `h2`);
    /// `None` until a response came (and in stores written before it was
    /// recorded). Downloads only, for now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// An upload's session ([MC-BUP]): its id, what the server acknowledged,
/// and the source file as it was when the session began (a change fails
/// the job with `BG_E_LOCAL_FILE_CHANGED`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UploadSession {
    /// `BITS-Session-Id`.
    pub id: String,
    /// Bytes the server acknowledged (`BITS-Received-Content-Range`).
    pub acked: u64,
    /// The source's size when the session began.
    pub source_len: u64,
    /// The source's modification time then.
    pub source_modified: Option<SystemTime>,
    /// Upload-reply: the `BITS-Reply-URL` of the last fragment's Ack.
    #[serde(default)]
    pub reply_url: Option<String>,
    /// The Create-Session Ack's `BITS-Host-Id`: the session's later
    /// packets go to this host (the URL's scheme, port and path kept).
    /// `None` once the client fell back to the URL's own host.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Its `BITS-Host-Id-Fallback-Timeout`, seconds: how long the host id
    /// may stay unreachable before packets return to the URL's own host;
    /// `None`: they never do.
    #[serde(default)]
    pub host_id_fallback: Option<u64>,
}

/// A BITS job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: Uuid,
    /// Its display name.
    pub display_name: String,
    /// Download, upload or upload-reply.
    pub job_type: JobType,
    /// Where it stands: read it with [`Job::state`]; it changes only
    /// through the state table ([`crate::state::next_state`]).
    state: JobState,
    /// The transport (TLS backend) that carries it, by name.
    pub backend: String,
    /// Its files, transferred in order.
    pub files: Vec<FileInfo>,
    /// Priority.
    pub priority: Priority,
    /// Security flags.
    pub security_flags: SecurityFlags,
    /// Seconds to wait before retrying after a transient error.
    pub min_retry_delay: u64,
    /// Seconds without progress after which a transient error becomes fatal.
    pub no_progress_timeout: u64,
    /// When the job was created.
    pub creation_time: SystemTime,
    /// When it last changed.
    pub modification_time: SystemTime,
    /// When its last file finished.
    pub transfer_completion_time: Option<SystemTime>,
    /// The current error (ERROR and TRANSIENT_ERROR only).
    pub error: Option<JobError>,
    /// When the job last went without progress into TRANSIENT_ERROR; the
    /// no-progress timeout counts from here and resets when bytes move.
    #[serde(default)]
    pub no_progress_since: Option<SystemTime>,
    /// Custom headers sent on every request (read them with
    /// [`Job::custom_headers`], which honours write-only).
    #[serde(default)]
    custom_headers: Option<CustomHeaders>,
    /// The custom headers can no longer be read (for good).
    #[serde(default)]
    pub custom_headers_write_only: bool,
    /// The HTTP method when it is not GET (`SetHttpMethod`).
    #[serde(default)]
    http_method: Option<String>,
    /// The client certificate offered to servers that ask for one.
    #[serde(default)]
    pub client_certificate: Option<ClientCertificate>,
    /// Pins the server's chain must match.
    #[serde(default)]
    pub server_cert_pins: Option<PinSet>,
    /// The job has been resumed at least once (its HTTP method is fixed).
    #[serde(default)]
    pub resumed: bool,
    /// How its connections are routed (`SetProxySettings`).
    #[serde(default)]
    pub proxy: ProxySettings,
    /// Credentials for authentication challenges (`SetCredentials`), at
    /// most one per target and scheme; read them with [`Job::credentials`].
    #[serde(default)]
    credentials: Vec<Credentials>,
    /// Where an upload-reply job's reply goes on `complete`, when set
    /// (`SetReplyFileName`); read it with [`Job::reply_file_name`].
    #[serde(default)]
    reply_file_name: Option<PathBuf>,
    /// The job's own rate cap, bytes per second (`bits set-max-rate`,
    /// beyond BITS); `None`: unlimited. Set it with [`Job::set_max_rate`].
    #[serde(default)]
    pub max_rate: Option<u64>,
    /// The daemon-wide limiter of background jobs for this run
    /// ([`Job::set_shared_limiter`]); never stored.
    #[serde(skip)]
    shared_limiter: LimiterSlot,
    /// How its transfer yields to other traffic (the engine sets it while
    /// it runs; `bits info` shows it).
    #[serde(default)]
    pub controller: Controller,
    /// Whether its controller holds it back for other traffic now.
    #[serde(default)]
    pub yielding: bool,
}

impl Job {
    /// A new SUSPENDED job with the defaults of BITS.
    pub fn new(display_name: impl Into<String>, job_type: JobType, backend: impl Into<String>) -> Job {
        let now = SystemTime::now();
        Job {
            id: Uuid::new_v4(),
            display_name: display_name.into(),
            job_type,
            state: JobState::Suspended,
            backend: backend.into(),
            files: Vec::new(),
            priority: Priority::Normal,
            security_flags: SecurityFlags::DEFAULT,
            min_retry_delay: DEFAULT_MIN_RETRY_DELAY,
            no_progress_timeout: DEFAULT_NO_PROGRESS_TIMEOUT,
            creation_time: now,
            modification_time: now,
            transfer_completion_time: None,
            error: None,
            no_progress_since: None,
            custom_headers: None,
            custom_headers_write_only: false,
            http_method: None,
            client_certificate: None,
            server_cert_pins: None,
            resumed: false,
            proxy: ProxySettings::preconfig(),
            credentials: Vec::new(),
            reply_file_name: None,
            max_rate: None,
            shared_limiter: LimiterSlot::default(),
            controller: Controller::None,
            yielding: false,
        }
    }

    fn check(&self, op: Operation) -> Result<(), BitsError> {
        check_operation(self.state, self.job_type, op)
    }

    fn touch(&mut self) {
        self.modification_time = SystemTime::now();
    }

    /// Adds a file. REMOTE must be an absolute http or https URL and LOCAL an
    /// absolute path (`E_INVALIDARG` otherwise); an upload job takes one file
    /// (`BG_E_TOO_MANY_FILES`), whose LOCAL is the file to send: it must be
    /// a regular file (`0x80070002` otherwise), and its size is the file's
    /// total.
    pub fn add_file(&mut self, remote: &str, local: &Path) -> Result<(), BitsError> {
        self.check(Operation::AddFile)?;
        if self.job_type != JobType::Download && !self.files.is_empty() {
            return Err(BitsError::TooManyFiles);
        }
        parse_remote_url(remote)?;
        if !local.is_absolute() {
            return Err(BitsError::InvalidArg {
                what: format!("local name {} is not an absolute path", local.display()),
            });
        }
        let file_name = local.file_name().ok_or_else(|| BitsError::InvalidArg {
            what: format!("local name {} names no file", local.display()),
        })?;
        let bytes_total = if self.job_type == JobType::Download {
            None
        } else {
            match std::fs::metadata(local) {
                Ok(m) if m.is_file() => Some(m.len()),
                _ => {
                    return Err(BitsError::FileNotFound {
                        path: local.display().to_string(),
                    })
                }
            }
        };
        let temp_name = local.with_file_name(format!(
            ".{}.bits-{}-{}.tmp",
            file_name.to_string_lossy(),
            &self.id.simple().to_string()[..8],
            self.files.len()
        ));
        self.files.push(FileInfo {
            remote_name: remote.to_string(),
            local_name: local.to_path_buf(),
            temp_name,
            bytes_total,
            bytes_transferred: 0,
            completed: false,
            validator: None,
            restart: false,
            upload: None,
            protocol: None,
        });
        self.touch();
        Ok(())
    }

    /// Sets the security flags, once `check` (a transport's
    /// [`crate::Transport::check_policy`], or its backend's own check) says
    /// the job's connection policy under them is honoured exactly
    /// (`E_NOTIMPL` otherwise, and nothing changes). Turning on
    /// `ENABLE_CRL_CHECK` restarts every part-way file from byte 0 under the
    /// new policy; finished files are left alone.
    pub fn set_security_flags(
        &mut self,
        flags: SecurityFlags,
        check: impl FnOnce(&ConnectionPolicy) -> Result<(), BitsError>,
    ) -> Result<(), BitsError> {
        self.check(Operation::SetSecurityFlags)?;
        check(&self.connection_policy().with_flags(flags))?;
        if flags.crl_check() && !self.security_flags.crl_check() {
            for file in self
                .files
                .iter_mut()
                .filter(|f| !f.completed && f.bytes_transferred > 0)
            {
                file.bytes_transferred = 0;
                file.restart = true;
            }
        }
        self.security_flags = flags;
        self.touch();
        Ok(())
    }

    /// Rewrites every remote name that starts with `old` (case-sensitive).
    /// Returns `S_FALSE` when nothing matched. Upload jobs: `E_NOTIMPL`.
    pub fn replace_remote_prefix(&mut self, old: &str, new: &str) -> Result<Hresult, BitsError> {
        self.check(Operation::ReplaceRemotePrefix)?;
        if self.job_type != JobType::Download {
            return Err(BitsError::NotImplemented {
                what: "replace-remote-prefix on an upload job".into(),
            });
        }
        if old.is_empty() || new.is_empty() {
            return Err(BitsError::InvalidArg {
                what: "a prefix is empty".into(),
            });
        }
        let mut renamed = Vec::new();
        for (i, file) in self.files.iter().enumerate() {
            if let Some(rest) = file.remote_name.strip_prefix(old) {
                let name = format!("{new}{rest}");
                parse_remote_url(&name)?;
                renamed.push((i, name));
            }
        }
        if renamed.is_empty() {
            return Ok(Hresult::S_FALSE);
        }
        for (i, name) in renamed {
            self.files[i].remote_name = name;
        }
        self.touch();
        Ok(Hresult::S_OK)
    }

    /// Sets the priority. A job with a non-GET HTTP method stays
    /// FOREGROUND (`BG_E_NOT_SUPPORTED_WITH_CUSTOM_HTTP_METHOD`).
    pub fn set_priority(&mut self, priority: Priority) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        if let Some(method) = &self.http_method {
            return Err(BitsError::NotSupportedWithCustomHttpMethod {
                method: method.clone(),
            });
        }
        self.priority = priority;
        self.touch();
        Ok(())
    }

    /// Sets the minimum retry delay; values below 5 s are stored as 5.
    pub fn set_min_retry_delay(&mut self, seconds: u64) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        self.min_retry_delay = seconds.max(MIN_RETRY_DELAY_FLOOR);
        self.touch();
        Ok(())
    }

    /// Caps the job's transfer rate at `rate` bytes per second (`None`:
    /// unlimited). A cap of 0 is refused with `E_INVALIDARG`: a job that
    /// must not move is suspended.
    pub fn set_max_rate(&mut self, rate: Option<u64>) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        if rate == Some(0) {
            return Err(BitsError::InvalidArg {
                what: "a max rate of 0 (suspend the job instead, or say off)".into(),
            });
        }
        self.max_rate = rate;
        self.touch();
        Ok(())
    }

    /// Hands the job the daemon-wide limiter of background jobs for its
    /// next run (`None`: none): the engine's rate cap draws from it, with
    /// the job's own [`Job::max_rate`], the lower winning. A FOREGROUND job
    /// never draws from it. Not a property of the job: never stored, and
    /// allowed in any state.
    pub fn set_shared_limiter(&mut self, limiter: Option<SharedLimiter>) {
        self.shared_limiter = LimiterSlot(limiter);
    }

    /// The limiter of [`Job::set_shared_limiter`].
    pub fn shared_limiter(&self) -> Option<&SharedLimiter> {
        self.shared_limiter.0.as_ref()
    }

    /// Sets the no-progress timeout; 0 makes the first transient error fatal.
    pub fn set_no_progress_timeout(&mut self, seconds: u64) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        self.no_progress_timeout = seconds;
        self.touch();
        Ok(())
    }

    /// Sets the display name.
    pub fn set_display_name(&mut self, name: impl Into<String>) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        self.display_name = name.into();
        self.touch();
        Ok(())
    }

    /// Where the job stands.
    pub fn state(&self) -> JobState {
        self.state
    }

    /// A copy of the job without its files (a store that keeps files apart
    /// reads and writes the rest this way). Every field is named, so a new
    /// field of [`Job`] does not compile until it is here.
    pub fn without_files(&self) -> Job {
        let Job {
            id,
            display_name,
            job_type,
            state,
            backend,
            files: _,
            priority,
            security_flags,
            min_retry_delay,
            no_progress_timeout,
            creation_time,
            modification_time,
            transfer_completion_time,
            error,
            no_progress_since,
            custom_headers,
            custom_headers_write_only,
            http_method,
            client_certificate,
            server_cert_pins,
            resumed,
            proxy,
            credentials,
            reply_file_name,
            max_rate,
            shared_limiter,
            controller,
            yielding,
        } = self;
        Job {
            id: *id,
            display_name: display_name.clone(),
            job_type: *job_type,
            state: *state,
            backend: backend.clone(),
            files: Vec::new(),
            priority: *priority,
            security_flags: *security_flags,
            min_retry_delay: *min_retry_delay,
            no_progress_timeout: *no_progress_timeout,
            creation_time: *creation_time,
            modification_time: *modification_time,
            transfer_completion_time: *transfer_completion_time,
            error: error.clone(),
            no_progress_since: *no_progress_since,
            custom_headers: custom_headers.clone(),
            custom_headers_write_only: *custom_headers_write_only,
            http_method: http_method.clone(),
            client_certificate: client_certificate.clone(),
            server_cert_pins: server_cert_pins.clone(),
            resumed: *resumed,
            proxy: proxy.clone(),
            credentials: credentials.clone(),
            reply_file_name: reply_file_name.clone(),
            max_rate: *max_rate,
            shared_limiter: shared_limiter.clone(),
            controller: *controller,
            yielding: *yielding,
        }
    }

    /// Where an upload-reply job's reply goes on `complete`: the name set
    /// with [`Job::set_reply_file_name`], else LOCAL with `.reply` added
    /// (`docs/spec/upload.md`, choice). `None` for other jobs, and before
    /// the file is added.
    pub fn reply_file_name(&self) -> Option<PathBuf> {
        if self.job_type != JobType::UploadReply {
            return None;
        }
        self.reply_file_name.clone().or_else(|| {
            self.files.first().map(|f| {
                let mut name = f.local_name.clone().into_os_string();
                name.push(".reply");
                PathBuf::from(name)
            })
        })
    }

    /// The hidden file beside [`Job::reply_file_name`] that receives the
    /// reply until `complete`.
    pub fn reply_temp_name(&self) -> Option<PathBuf> {
        let reply = self.reply_file_name()?;
        let name = reply.file_name()?.to_string_lossy().into_owned();
        Some(reply.with_file_name(format!(
            ".{name}.bits-{}-reply.tmp",
            &self.id.simple().to_string()[..8]
        )))
    }

    /// Sets where the reply goes (`SetReplyFileName`): an absolute path.
    /// Allowed in every state but ACKNOWLEDGED and CANCELLED, and until
    /// the reply starts arriving.
    ///
    /// # Errors
    /// `E_NOTIMPL` for a job that is not upload-reply; `E_INVALIDARG` for a
    /// relative path or one naming no file; `BG_E_INVALID_STATE` by the
    /// state, or once the reply is being received.
    pub fn set_reply_file_name(&mut self, path: &Path) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        if self.job_type != JobType::UploadReply {
            return Err(BitsError::NotImplemented {
                what: "a reply file name on a job that is not upload-reply".into(),
            });
        }
        if !path.is_absolute() || path.file_name().is_none() {
            return Err(BitsError::InvalidArg {
                what: format!(
                    "reply file name {} is not an absolute path to a file",
                    path.display()
                ),
            });
        }
        if self.reply_temp_name().is_some_and(|t| t.exists()) {
            return Err(BitsError::InvalidState {
                operation: "set-reply-file-name once the reply is arriving",
                state: self.state.as_str(),
            });
        }
        self.reply_file_name = Some(path.to_path_buf());
        self.touch();
        Ok(())
    }

    /// What the job's connections are made under: its flags, client
    /// certificate and pins, its proxy settings and credentials, whether
    /// they yield to other traffic (every priority but FOREGROUND), and
    /// whether they offer HTTP/2 (a job of several files; one of a single
    /// file, every upload among them, speaks HTTP/1.1:
    /// [`ConnectionPolicy::with_http1_only`]). An embedder's validator is
    /// the engine's ([`ConnectionPolicy::with_validator`]).
    pub fn connection_policy(&self) -> ConnectionPolicy {
        ConnectionPolicy::new(self.security_flags)
            .with_client_certificate(self.client_certificate.clone())
            .with_pins(self.server_cert_pins.clone())
            .with_proxy(self.proxy.clone())
            .with_proxy_credentials(&self.credentials)
            .with_yielding(self.priority != Priority::Foreground)
            .with_http1_only(self.files.len() < 2)
    }

    /// Sets the proxy settings, once `check` (the transport's
    /// [`crate::Transport::check_policy`]) says the job's policy with them
    /// is honoured exactly.
    pub fn set_proxy_settings(
        &mut self,
        proxy: ProxySettings,
        check: impl FnOnce(&ConnectionPolicy) -> Result<(), BitsError>,
    ) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        check(&self.connection_policy().with_proxy(proxy.clone()))?;
        self.proxy = proxy;
        self.touch();
        Ok(())
    }

    /// The job's credentials (their `Debug` never shows the password).
    pub fn credentials(&self) -> &[Credentials] {
        &self.credentials
    }

    /// Sets credentials (`SetCredentials`), replacing those of the same
    /// target and scheme. Allowed in every state but ACKNOWLEDGED and
    /// CANCELLED; a running transfer uses them from its next request.
    ///
    /// # Errors
    /// The job's state as any property (`BG_E_INVALID_STATE`).
    pub fn set_credentials(&mut self, credentials: Credentials) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        credentials.scheme.check_supported()?;
        self.credentials
            .retain(|c| !(c.target == credentials.target && c.scheme == credentials.scheme));
        self.credentials.push(credentials);
        self.touch();
        Ok(())
    }

    /// Removes the credentials of `target` and `scheme`
    /// (`RemoveCredentials`); none set is not an error, as in BITS. The
    /// schemes not honoured are refused with `E_NOTIMPL` like
    /// [`Job::set_credentials`].
    ///
    /// # Errors
    /// The job's state as any property (`BG_E_INVALID_STATE`).
    pub fn remove_credentials(&mut self, target: AuthTarget, scheme: AuthScheme) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        scheme.check_supported()?;
        self.credentials
            .retain(|c| !(c.target == target && c.scheme == scheme));
        self.touch();
        Ok(())
    }

    /// Sets the custom headers (`Name: value` lines; none removes them).
    /// Write-only headers can still be replaced.
    ///
    /// # Errors
    /// As [`CustomHeaders::parse`]; the job's state as any property.
    pub fn set_custom_headers<S: AsRef<str>>(&mut self, lines: &[S]) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        self.custom_headers = CustomHeaders::parse(lines)?;
        self.touch();
        Ok(())
    }

    /// The custom headers, for reading.
    ///
    /// # Errors
    /// `E_ACCESSDENIED` once they are write-only.
    pub fn custom_headers(&self) -> Result<Option<&CustomHeaders>, BitsError> {
        if self.custom_headers_write_only {
            return Err(BitsError::AccessDenied {
                what: "the job's custom headers are write-only".into(),
            });
        }
        Ok(self.custom_headers.as_ref())
    }

    /// The custom headers, to send (write-only or not).
    pub fn custom_headers_to_send(&self) -> Option<&CustomHeaders> {
        self.custom_headers.as_ref()
    }

    /// Makes the custom headers write-only, for good.
    pub fn make_custom_headers_write_only(&mut self) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        self.custom_headers_write_only = true;
        self.touch();
        Ok(())
    }

    /// The HTTP method of downloads (GET unless set).
    pub fn http_method(&self) -> http::Method {
        self.http_method
            .as_deref()
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(http::Method::GET)
    }

    /// Whether the job has a method other than GET: its priority is
    /// FOREGROUND for good, it sends no HEAD and no Range, its errors are
    /// all fatal and a resume restarts every unfinished file from byte 0.
    pub fn has_custom_http_method(&self) -> bool {
        self.http_method.is_some()
    }

    /// Sets the HTTP method (`SetHttpMethod`): an upper-case token; `GET`
    /// goes back to the default. Another method makes the priority
    /// FOREGROUND.
    ///
    /// # Errors
    /// `E_INVALIDARG` for a bad method; `E_NOTIMPL` on an upload job;
    /// `BG_E_INVALID_STATE` once the job has been resumed.
    pub fn set_http_method(&mut self, method: &str) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        let method = crate::http_options::parse_http_method(method)?;
        if self.job_type != JobType::Download {
            return Err(BitsError::NotImplemented {
                what: "an HTTP method on an upload job".into(),
            });
        }
        if self.resumed {
            return Err(BitsError::InvalidState {
                operation: "set-http-method after the job has been resumed",
                state: self.state.as_str(),
            });
        }
        if method == http::Method::GET {
            self.http_method = None;
        } else {
            self.http_method = Some(method.as_str().to_owned());
            self.priority = Priority::Foreground;
        }
        self.touch();
        Ok(())
    }

    /// Sets (or, with `None`, removes) the client certificate, once
    /// `check` (the transport's [`crate::Transport::check_policy`]) says
    /// the job's policy with it is honoured exactly. The certificate was
    /// checked by whoever made it (a transport's loader).
    pub fn set_client_certificate(
        &mut self,
        certificate: Option<ClientCertificate>,
        check: impl FnOnce(&ConnectionPolicy) -> Result<(), BitsError>,
    ) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        check(
            &self
                .connection_policy()
                .with_client_certificate(certificate.clone()),
        )?;
        self.client_certificate = certificate;
        self.touch();
        Ok(())
    }

    /// Sets (or, with `None`, removes) the server-certificate pins, once
    /// `check` says the job's policy with them is honoured exactly.
    ///
    /// # Errors
    /// `BG_E_READ_ONLY_WHEN_JOB_ACTIVE` unless the job is SUSPENDED.
    pub fn set_server_cert_pins(
        &mut self,
        pins: Option<PinSet>,
        check: impl FnOnce(&ConnectionPolicy) -> Result<(), BitsError>,
    ) -> Result<(), BitsError> {
        self.check(Operation::SetProperty)?;
        if self.state != JobState::Suspended {
            return Err(BitsError::ReadOnlyWhenJobActive {
                what: "the server certificate pins",
                state: self.state.as_str(),
            });
        }
        check(&self.connection_policy().with_pins(pins.clone()))?;
        self.server_cert_pins = pins;
        self.touch();
        Ok(())
    }

    /// Starts (or restarts after an error) transferring: SUSPENDED, ERROR
    /// and TRANSIENT_ERROR go to QUEUED and the error is cleared; a
    /// TRANSFERRED job with a file added since goes to QUEUED; an active job
    /// stays as it is. No files: `BG_E_EMPTY`, and the job stays.
    pub fn resume(&mut self) -> Result<(), BitsError> {
        self.check(Operation::Resume)?;
        if self.files.is_empty() {
            return Err(BitsError::Empty);
        }
        let event = if self.files.iter().any(|f| !f.completed) {
            Event::Resume
        } else {
            Event::ResumeTransferred
        };
        let before = self.state;
        if self.transition(event) != before {
            self.no_progress_since = None;
        }
        self.resumed = true;
        if self.has_custom_http_method() {
            // No Range with a custom method: every unfinished file starts again.
            for file in self
                .files
                .iter_mut()
                .filter(|f| !f.completed && f.bytes_transferred > 0)
            {
                file.bytes_transferred = 0;
                file.restart = true;
            }
        }
        Ok(())
    }

    /// Pauses the job: any non-final state goes to SUSPENDED.
    pub fn suspend(&mut self) -> Result<(), BitsError> {
        self.check(Operation::Suspend)?;
        self.transition(Event::Suspend);
        Ok(())
    }

    /// Applies an engine or scheduler event through the state table.
    /// Returns the new state. The user's operations (`Resume`, `Suspend`,
    /// `Complete`, `Cancel`) change nothing here: they go through
    /// [`Job::resume`], [`Job::suspend`], [`crate::engine::complete`] and
    /// [`crate::engine::cancel`], which check them and do their part first.
    pub fn apply(&mut self, event: Event) -> JobState {
        if event.is_operation() {
            return self.state;
        }
        self.transition(event)
    }

    /// Moves the job through the state table.
    pub(crate) fn transition(&mut self, event: Event) -> JobState {
        let next = next_state(self.state, event);
        if next != self.state {
            self.state = next;
            if event == Event::AllFilesDone {
                self.transfer_completion_time = Some(SystemTime::now());
            }
            if matches!(
                next,
                JobState::Queued | JobState::Connecting | JobState::Transferring | JobState::Transferred
            ) {
                self.error = None;
            }
            self.touch();
        }
        next
    }

    /// Records a failure: a transient error puts an active job in
    /// TRANSIENT_ERROR (or straight in ERROR when the no-progress timeout is
    /// 0 or has run out); a fatal one puts it in ERROR. Returns the new state.
    pub fn fail(&mut self, error: &BitsError, file_index: Option<usize>, now: SystemTime) -> JobState {
        let fatal = !error.is_transient() || self.no_progress_expired(now) || self.has_custom_http_method();
        let event = if fatal {
            Event::FatalFailure
        } else {
            Event::TransientFailure
        };
        let before = self.state;
        let next = next_state(before, event);
        if next == before {
            return before;
        }
        if next == JobState::TransientError && self.no_progress_since.is_none() {
            self.no_progress_since = Some(now);
        }
        self.state = next;
        self.error = Some(error.to_job_error(file_index));
        self.touch();
        next
    }

    /// Whether the no-progress timeout has run out at `now`: always with a
    /// timeout of 0, else when the job has gone that long without moving a
    /// byte since its first transient error.
    pub fn no_progress_expired(&self, now: SystemTime) -> bool {
        if self.no_progress_timeout == 0 {
            return true;
        }
        match self.no_progress_since {
            Some(since) => now
                .duration_since(since)
                .map(|d| d.as_secs() >= self.no_progress_timeout)
                .unwrap_or(false),
            None => false,
        }
    }

    /// Bytes moved: the no-progress clock stops.
    pub fn note_progress(&mut self) {
        self.no_progress_since = None;
    }

    /// Total size, or `None` while any file's size is unknown.
    pub fn bytes_total(&self) -> Option<u64> {
        self.files.iter().map(|f| f.bytes_total).sum()
    }

    /// Bytes transferred over all files.
    pub fn bytes_transferred(&self) -> u64 {
        self.files.iter().map(|f| f.bytes_transferred).sum()
    }

    /// Files whose every byte is transferred.
    pub fn files_transferred(&self) -> usize {
        self.files.iter().filter(|f| f.completed).count()
    }

    /// Index of the first file not yet transferred.
    pub fn next_file(&self) -> Option<usize> {
        self.files.iter().position(|f| !f.completed)
    }
}

/// Parses a remote name: an absolute `http` or `https` URL with a host and
/// no user info. Anything else is `E_INVALIDARG`.
///
/// A `user:password@` in the URL is refused, not turned into credentials:
/// a URL is shown by `info` and `list`, logged and often typed on a
/// command line, where every user can read it. Credentials are set with
/// [`Job::set_credentials`]; the error never repeats the password.
pub fn parse_remote_url(text: &str) -> Result<Url, BitsError> {
    let url = Url::parse(text).map_err(|e| BitsError::InvalidArg {
        what: format!(
            "remote name {:?} is not a valid URL ({e})",
            crate::credentials::without_user_info(text)
        ),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(BitsError::InvalidArg {
            what: format!(
                "remote name {shown} carries a user name or password before the host; credentials are \
                 never taken from a URL (it is shown and logged): set them with set-credentials"
            ),
        });
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BitsError::InvalidArg {
            what: format!(
                "remote name {text:?} has scheme {:?}; only http and https are supported",
                url.scheme()
            ),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(BitsError::InvalidArg {
            what: format!("remote name {text:?} has no host"),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{MockTransport, Transport};

    fn job() -> Job {
        Job::new("j", JobType::Download, "mock")
    }

    fn accepting() -> MockTransport {
        let mut t = MockTransport::new();
        t.expect_check_policy().returning(|_| Ok(()));
        t
    }

    #[test]
    fn background_priorities_yield_foreground_does_not() {
        let mut j = job();
        for (priority, yielding) in [
            (Priority::Foreground, false),
            (Priority::High, true),
            (Priority::Normal, true),
            (Priority::Low, true),
        ] {
            j.set_priority(priority).unwrap();
            assert_eq!(j.connection_policy().yielding(), yielding, "{priority:?}");
        }
    }

    #[test]
    fn a_job_of_several_files_offers_http2_one_of_a_single_file_does_not() {
        let mut j = job();
        assert!(j.connection_policy().http1_only());
        j.add_file("https://example.com/a", Path::new("/data/a")).unwrap();
        assert!(j.connection_policy().http1_only());
        j.add_file("https://example.com/b", Path::new("/data/b")).unwrap();
        assert!(!j.connection_policy().http1_only());
    }

    #[test]
    fn new_job_defaults() {
        let j = job();
        assert_eq!(j.state, JobState::Suspended);
        assert_eq!(j.security_flags.bits(), 0);
        assert_eq!(j.min_retry_delay, 600);
        assert_eq!(j.no_progress_timeout, 1_209_600);
        assert_eq!(j.priority, Priority::Normal);
        assert_eq!(
            (
                j.bytes_total(),
                j.bytes_transferred(),
                j.files.len(),
                j.files_transferred()
            ),
            (Some(0), 0, 0, 0)
        );
        assert!(j.error.is_none());
    }

    #[test]
    fn add_file_validates_and_places_temp_beside_local() {
        let mut j = job();
        j.add_file("https://example.com/a.bin", Path::new("/data/a.bin"))
            .unwrap();
        let f = &j.files[0];
        assert_eq!(f.bytes_total, None);
        assert_eq!(f.temp_name.parent(), Some(Path::new("/data")));
        assert!(f
            .temp_name
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".a.bin.bits-"));
        for bad in [
            "not a url",
            "ftp://h/x",
            "file:///etc/passwd",
            "smb://h/x",
            "http://",
        ] {
            let before = j.clone();
            assert_eq!(
                j.add_file(bad, Path::new("/data/b")).unwrap_err().hresult().0,
                0x8007_0057,
                "{bad}"
            );
            assert_eq!(j, before);
        }
        assert_eq!(
            j.add_file("http://h/x", Path::new("rel/x"))
                .unwrap_err()
                .hresult()
                .0,
            0x8007_0057
        );
    }

    #[test]
    fn upload_takes_one_file() {
        // The source must exist: one of its own, not whatever /tmp holds.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let mut j = Job::new("u", JobType::Upload, "mock");
        j.add_file("https://h/up", &a).unwrap();
        assert_eq!(
            j.add_file("https://h/up", &b).unwrap_err().hresult().0,
            0x8020_001C
        );
    }

    #[test]
    fn resume_with_no_files_is_empty_and_stays_suspended() {
        let mut j = job();
        assert_eq!(j.resume().unwrap_err().hresult().0, 0x8020_0003);
        assert_eq!(j.state, JobState::Suspended);
    }

    #[test]
    fn resume_suspend_cycle() {
        let mut j = job();
        j.add_file("http://h/x", Path::new("/tmp/x")).unwrap();
        j.resume().unwrap();
        assert_eq!(j.state, JobState::Queued);
        j.resume().unwrap();
        assert_eq!(j.state, JobState::Queued);
        j.suspend().unwrap();
        assert_eq!(j.state, JobState::Suspended);
        j.state = JobState::Error;
        j.error = Some(
            BitsError::HttpStatus {
                status: 404,
                retry_after: None,
            }
            .to_job_error(Some(0)),
        );
        j.resume().unwrap();
        assert_eq!(j.state, JobState::Queued);
        assert!(j.error.is_none());
    }

    #[test]
    fn operations_on_final_jobs_change_nothing() {
        for s in [JobState::Acknowledged, JobState::Cancelled] {
            let mut j = job();
            j.add_file("http://h/x", Path::new("/tmp/x")).unwrap();
            j.state = s;
            let before = j.clone();
            let t = accepting();
            let codes = [
                j.add_file("http://h/y", Path::new("/tmp/y"))
                    .unwrap_err()
                    .hresult(),
                j.set_security_flags(SecurityFlags::new(4).unwrap(), |p| t.check_policy(p))
                    .unwrap_err()
                    .hresult(),
                j.replace_remote_prefix("http://h", "http://g")
                    .unwrap_err()
                    .hresult(),
                j.set_priority(Priority::High).unwrap_err().hresult(),
                j.set_min_retry_delay(9).unwrap_err().hresult(),
                j.set_no_progress_timeout(9).unwrap_err().hresult(),
                j.resume().unwrap_err().hresult(),
                j.suspend().unwrap_err().hresult(),
            ];
            assert!(codes.iter().all(|c| c.0 == 0x8020_0002), "{codes:?}");
            assert_eq!(j, before);
        }
    }

    #[test]
    fn set_security_flags_refused_by_transport_changes_nothing() {
        let mut j = job();
        let mut t = MockTransport::new();
        t.expect_check_policy().returning(|p| {
            if p.flags().bits() == 0 {
                Ok(())
            } else {
                Err(BitsError::NotImplemented { what: "x".into() })
            }
        });
        let before = j.clone();
        assert_eq!(
            j.set_security_flags(SecurityFlags::new(8).unwrap(), |p| t.check_policy(p))
                .unwrap_err()
                .hresult()
                .0,
            0x8000_4001
        );
        assert_eq!(j, before);
    }

    #[test]
    fn enabling_crl_check_restarts_partial_files_only() {
        let mut j = job();
        for n in 0..3 {
            j.add_file(&format!("https://h/{n}"), Path::new(&format!("/tmp/{n}")))
                .unwrap();
        }
        j.files[0].completed = true;
        j.files[0].bytes_transferred = 100;
        j.files[1].bytes_transferred = 50;
        let t = accepting();
        j.set_security_flags(SecurityFlags::new(1).unwrap(), |p| t.check_policy(p))
            .unwrap();
        assert_eq!((j.files[0].bytes_transferred, j.files[0].restart), (100, false));
        assert_eq!((j.files[1].bytes_transferred, j.files[1].restart), (0, true));
        assert_eq!((j.files[2].bytes_transferred, j.files[2].restart), (0, false));
        // Already on: setting it again restarts nothing.
        j.files[1].restart = false;
        j.files[1].bytes_transferred = 10;
        j.set_security_flags(SecurityFlags::new(3).unwrap(), |p| t.check_policy(p))
            .unwrap();
        assert_eq!((j.files[1].bytes_transferred, j.files[1].restart), (10, false));
    }

    #[test]
    fn replace_remote_prefix_rules() {
        let mut j = job();
        j.add_file("http://Server/a", Path::new("/tmp/a")).unwrap();
        j.add_file("http://other/b", Path::new("/tmp/b")).unwrap();
        assert_eq!(
            j.replace_remote_prefix("http://server", "http://x").unwrap(),
            Hresult::S_FALSE
        );
        assert_eq!(
            j.replace_remote_prefix("http://Server", "http://NewServer")
                .unwrap(),
            Hresult::S_OK
        );
        assert_eq!(j.files[0].remote_name, "http://NewServer/a");
        assert_eq!(j.files[1].remote_name, "http://other/b");
        assert_eq!(
            j.replace_remote_prefix("", "http://x").unwrap_err().hresult().0,
            0x8007_0057
        );
        let before = j.clone();
        assert_eq!(
            j.replace_remote_prefix("http://", "ftp://")
                .unwrap_err()
                .hresult()
                .0,
            0x8007_0057
        );
        assert_eq!(j, before);
        let mut u = Job::new("u", JobType::Upload, "mock");
        assert_eq!(
            u.replace_remote_prefix("a", "b").unwrap_err().hresult().0,
            0x8000_4001
        );
    }

    #[test]
    fn min_retry_delay_floor() {
        let mut j = job();
        j.set_min_retry_delay(1).unwrap();
        assert_eq!(j.min_retry_delay, 5);
        j.set_min_retry_delay(60).unwrap();
        assert_eq!(j.min_retry_delay, 60);
    }

    #[test]
    fn fail_transient_then_no_progress() {
        let mut j = job();
        j.add_file("http://h/x", Path::new("/tmp/x")).unwrap();
        j.resume().unwrap();
        j.apply(Event::Scheduled);
        j.set_no_progress_timeout(10).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let e503 = BitsError::HttpStatus {
            status: 503,
            retry_after: None,
        };
        assert_eq!(j.fail(&e503, Some(0), t0), JobState::TransientError);
        assert_eq!(j.error.as_ref().unwrap().code.0, 0x8019_01F7);
        assert_eq!(j.apply(Event::RetryTimer), JobState::Queued);
        j.apply(Event::Scheduled);
        assert_eq!(
            j.fail(&e503, Some(0), t0 + std::time::Duration::from_secs(5)),
            JobState::TransientError
        );
        j.apply(Event::RetryTimer);
        j.apply(Event::Scheduled);
        assert_eq!(
            j.fail(&e503, Some(0), t0 + std::time::Duration::from_secs(11)),
            JobState::Error
        );
        assert_eq!(j.error.as_ref().unwrap().code.0, 0x8019_01F7);
    }

    #[test]
    fn zero_no_progress_timeout_makes_first_transient_fatal() {
        let mut j = job();
        j.add_file("http://h/x", Path::new("/tmp/x")).unwrap();
        j.set_no_progress_timeout(0).unwrap();
        j.resume().unwrap();
        let e = BitsError::ConnectionReset { reason: "r".into() };
        assert_eq!(j.fail(&e, Some(0), SystemTime::now()), JobState::Error);
    }

    #[test]
    fn fatal_failure() {
        let mut j = job();
        j.add_file("http://h/x", Path::new("/tmp/x")).unwrap();
        j.resume().unwrap();
        j.apply(Event::Scheduled);
        let e = BitsError::HttpStatus {
            status: 404,
            retry_after: None,
        };
        assert_eq!(j.fail(&e, Some(0), SystemTime::now()), JobState::Error);
        let err = j.error.clone().unwrap();
        assert_eq!(
            (err.code.0, err.context, err.file_index),
            (0x8019_0194, crate::ErrorContext::RemoteFile, Some(0))
        );
    }

    #[test]
    fn without_files_keeps_everything_else() {
        let mut j = job();
        j.add_file("http://h/x", Path::new("/tmp/x")).unwrap();
        j.resume().unwrap();
        let head = j.without_files();
        assert!(head.files.is_empty());
        assert_eq!(
            Job {
                files: j.files.clone(),
                ..head
            },
            j
        );
    }

    #[test]
    fn job_round_trips_through_json() {
        let mut j = job();
        j.add_file("http://h/x", Path::new("/tmp/x")).unwrap();
        let text = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), j);
    }

    /// A file written before the protocol was recorded loads without it;
    /// a file without one is written as before, with one it round-trips.
    #[test]
    fn a_file_s_protocol_is_optional_in_json() {
        let mut j = job();
        j.add_file("http://h/x", Path::new("/tmp/x")).unwrap();
        let mut file = j.files[0].clone();
        let text = serde_json::to_string(&file).unwrap();
        assert!(!text.contains("protocol"), "{text}");
        assert_eq!(serde_json::from_str::<FileInfo>(&text).unwrap(), file);
        file.protocol = Some("h2".into());
        let text = serde_json::to_string(&file).unwrap();
        assert!(text.contains(r#""protocol":"h2""#), "{text}");
        assert_eq!(serde_json::from_str::<FileInfo>(&text).unwrap(), file);
    }
}
