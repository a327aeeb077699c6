//! The command line as clap reads it: global options and one subcommand
//! per verb of `docs/spec/cli.md`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bits",
    version,
    about = "Background transfers that survive restarts, with the semantics of Windows BITS",
    long_about = None,
    after_help = "JOB is a job id (as printed by `create`) or a display name, when unique.\n\
                  Exit status: 0 done, 1 the job ended in ERROR (or another runtime failure), \
                  2 bad input (nothing changed)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The store folder (default: $BITS_STORE, else $XDG_STATE_HOME/bits, else ~/.local/state/bits).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The TLS backend of new jobs (`bits backends` lists them; default: the first compiled in).
    #[arg(long, global = true, value_name = "B")]
    pub backend: Option<String>,
    /// Print JSON (info, list, transfer, create, backends).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print less: no progress bars or notes.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more (repeat for more detail); also passed to a daemon started on demand.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new SUSPENDED job; prints its id.
    Create {
        /// An upload job (one file) instead of a download.
        #[arg(long, conflicts_with = "upload_reply")]
        upload: bool,
        /// An upload-reply job: one file up, the server's reply down.
        #[arg(long)]
        upload_reply: bool,
        /// The job's display name.
        name: String,
    },
    /// Add a file to a job; a relative LOCAL is taken from the current directory.
    AddFile {
        /// The job.
        job: String,
        /// An http or https URL.
        url: String,
        /// Where the file goes on `complete`.
        local: PathBuf,
    },
    /// Set the job's security flags (decimal or 0x hex).
    SetSecurityFlags {
        /// The job.
        job: String,
        /// The flags, e.g. 0x0004.
        flags: String,
    },
    /// Print the job's security flags as 0x and four hex digits.
    GetSecurityFlags {
        /// The job.
        job: String,
    },
    /// Rewrite each file URL of the job that starts with OLD.
    ReplaceRemotePrefix {
        /// The job.
        job: String,
        /// The prefix to replace (case-sensitive).
        old: String,
        /// Its replacement.
        new: String,
    },
    /// The job's own rate cap: 512K, 10M, 1.5G (bytes per second, 1024-based) or off.
    SetMaxRate {
        /// The job.
        job: String,
        /// The rate.
        rate: String,
    },
    /// Seconds to wait before retrying after a transient error (default 600, at least 5).
    SetMinRetryDelay {
        /// The job.
        job: String,
        /// Seconds.
        seconds: u32,
    },
    /// Seconds without progress after which a transient error becomes fatal (default 1209600).
    SetNoProgressTimeout {
        /// The job.
        job: String,
        /// Seconds (0: the first transient error is fatal).
        seconds: u32,
    },
    /// Set the job's priority: foreground, high, normal or low.
    SetPriority {
        /// The job.
        job: String,
        /// foreground|high|normal|low.
        priority: String,
    },
    /// Set the job's custom headers, sent on every request; none removes them.
    #[command(
        after_help = "Each HEADER is \"Name: value\". Host, Content-Length, Transfer-Encoding, Connection, \
                      Upgrade, TE, Range, If-Range and BITS-* are the engine's own (0x80070057); all of \
                      them together take at most 16,384 characters (0x80200021). Authorization, \
                      Proxy-Authorization and Cookie never follow a redirect to another origin, and their \
                      values are never shown by `info`."
    )]
    SetCustomHeaders {
        /// The job.
        job: String,
        /// "Name: value" (repeat for more; none removes them).
        #[arg(value_name = "HEADER")]
        headers: Vec<String>,
    },
    /// Print the job's custom headers, one per line (nothing when none).
    #[command(after_help = "Write-only headers cannot be read: exit 2 with 0x80070005 E_ACCESSDENIED.")]
    GetCustomHeaders {
        /// The job.
        job: String,
    },
    /// Make the job's custom headers write-only, for good (still sent and replaceable).
    MakeCustomHeadersWriteOnly {
        /// The job.
        job: String,
    },
    /// Set the client certificate offered to https servers that ask for one.
    #[command(
        after_help = "FILE is PEM (the certificate, optionally its chain, and the private key unless \
                      --key names it) or PKCS#12 (.p12/.pfx, detected by content). A PKCS#12 password \
                      is read from a file or an environment variable, never from the command line. \
                      A relative path is taken from the current directory and stored absolute. A file \
                      holding a private key must be its owner's alone (chmod 600). Errors: 0x80070002 \
                      no such file, 0x80070005 a key others can read, 0x80092004 no certificate or key \
                      (or they differ), 0x80070056 wrong password, 0x80004001 the job's backend cannot \
                      offer client certificates."
    )]
    SetClientCertificate {
        /// The job.
        job: String,
        /// The certificate file (PEM or PKCS#12).
        file: PathBuf,
        #[command(flatten)]
        secrets: CertSecrets,
    },
    /// Print the job's client certificate: its file, subject and SHA-1 thumbprint, one per line.
    GetClientCertificate {
        /// The job.
        job: String,
    },
    /// Forget the job's client certificate.
    RemoveClientCertificate {
        /// The job.
        job: String,
    },
    /// Set the HTTP method of the job's requests (GET by default).
    #[command(
        after_help = "Only before the job's first resume (else 0x80200002). A method other than GET makes \
                      the priority FOREGROUND for good (set-priority then exits 2 with 0x80200071); the \
                      job sends no HEAD and no Range, every error is fatal, and a resume restarts \
                      unfinished files from byte 0."
    )]
    SetHttpMethod {
        /// The job.
        job: String,
        /// An upper-case HTTP token: GET, POST, PROPFIND…
        method: String,
    },
    /// Print the job's HTTP method.
    GetHttpMethod {
        /// The job.
        job: String,
    },
    /// Set the keys the server's chain must show (sha256//…); none removes them.
    #[command(
        after_help = "The connection passes only when a certificate of the chain the server presents has \
                      the key of one of the pins. PINS is sha256//<base64>[;sha256//<base64>]... (curl's --pinnedpubkey form): the \
                      SHA-256 of a DER SubjectPublicKeyInfo. Checked after the usual verification under \
                      the job's flags, never instead of it. Only while the job is SUSPENDED (else \
                      0x80200075). A mismatch is TRANSIENT_ERROR 0x800B010B, before any HTTP request."
    )]
    SetServerCertPins {
        /// The job.
        job: String,
        /// The pins (none removes them).
        pins: Option<String>,
    },
    /// Print the job's server certificate pins (nothing when none).
    GetServerCertPins {
        /// The job.
        job: String,
    },
    /// Route the job's connections: the daemon's environment, direct, or proxies of its own.
    #[command(after_help = PROXY_HELP)]
    SetProxySettings {
        /// The job.
        job: String,
        /// preconfig | no_proxy | override.
        usage: String,
        /// override: the proxies, tried in order, separated by ; (or spaces).
        proxies: Option<String>,
        /// override: the hosts reached direct, separated by ; (or spaces).
        bypass: Option<String>,
    },
    /// Print the job's proxy settings: the usage, then (override) the proxies and the bypass list.
    #[command(after_help = GET_PROXY_HELP)]
    GetProxySettings {
        /// The job.
        job: String,
    },
    /// Set the credentials the job answers a server's 401 or a proxy's 407 with.
    #[command(after_help = CREDENTIALS_HELP)]
    SetCredentials {
        /// The job.
        job: String,
        /// server | proxy.
        target: String,
        /// basic | digest.
        scheme: String,
        /// The user name.
        user: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Forget the job's credentials of one target and scheme (none set is not an error).
    RemoveCredentials {
        /// The job.
        job: String,
        /// server | proxy.
        target: String,
        /// basic | digest.
        scheme: String,
    },
    /// Where an upload-reply job's reply goes on complete (default: LOCAL with .reply added).
    SetReplyFileName {
        /// The job.
        job: String,
        /// An absolute path, or one relative to the current directory.
        path: PathBuf,
    },
    /// Print where an upload-reply job's reply goes.
    GetReplyFileName {
        /// The job.
        job: String,
    },
    /// Start or restart transferring (starts the daemon when needed).
    Resume {
        /// The job.
        job: String,
    },
    /// Pause transferring.
    Suspend {
        /// The job.
        job: String,
    },
    /// Move the transferred files to their LOCAL names; the job becomes ACKNOWLEDGED.
    Complete {
        /// The job.
        job: String,
    },
    /// Remove the temporary files; the job becomes CANCELLED.
    Cancel {
        /// The job.
        job: String,
    },
    /// Show one job.
    Info {
        /// The job.
        job: String,
    },
    /// List the jobs of this store that are not final.
    List {
        /// Also ACKNOWLEDGED and CANCELLED jobs.
        #[arg(long)]
        all: bool,
    },
    /// Forget final jobs (ACKNOWLEDGED, CANCELLED).
    Prune {
        /// Only those older than this many days.
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        older_than: u32,
    },
    /// Show live progress until the jobs (or JOB) settle.
    Monitor {
        /// One job (default: every active job).
        job: Option<String>,
    },
    /// Block until the job is TRANSFERRED (exit 0) or in ERROR (exit 1).
    Wait {
        /// The job.
        job: String,
    },
    /// One-shot transfer: create, add, resume, wait, complete.
    #[command(
        after_help = "--header, --client-certificate (with --key, --password-file, --password-env), --pin, \
                      --priority and --proxy mean what set-custom-headers, set-client-certificate, \
                      set-server-cert-pins, set-priority and set-proxy-settings do, with the same checks; \
                      a refused one exits 2 before any job is created. --proxy URL is `override URL` \
                      (several URLs separated by ; are tried in order) and --noproxy LIST its bypass \
                      list, as curl's options; --proxy none is `no_proxy` (direct whatever the \
                      environment). Without --proxy the job uses the daemon's environment (preconfig: \
                      https_proxy, http_proxy, all_proxy, no_proxy, as curl reads them). With --json the job object is printed at the \
                      end, whether it succeeded or not."
    )]
    Transfer(TransferArgs),
    /// List the compiled-in backends and the certificate-flag values each honours.
    Backends,
    /// The service that carries the jobs (started on demand by resume, wait, monitor, transfer).
    Daemon {
        /// Stay attached (for systemd and tests); prints `ready` once it accepts commands.
        #[arg(long, conflicts_with = "stop")]
        foreground: bool,
        /// Stop the store's running daemon (its jobs are saved and resume at its next start).
        #[arg(long)]
        stop: bool,
        /// Make the store's running daemon read its config file (the bandwidth schedule) again;
        /// a malformed file is reported and the daemon keeps the schedule it had.
        #[arg(long, conflicts_with_all = ["stop", "foreground", "config"])]
        reload: bool,
        /// The config file (default: $XDG_CONFIG_HOME/bits/config.toml, else ~/.config/bits/config.toml).
        #[arg(long, value_name = "FILE", conflicts_with = "stop")]
        config: Option<std::path::PathBuf>,
    },
    /// TLS handshakes only, no HTTP request: the chain, every fault, the least flags per backend.
    #[command(long_about = DIAGNOSE_HELP)]
    Diagnose {
        /// The https:// URL of the server.
        url: String,
        /// Also check revocation (ENABLE_CRL_CHECK, 0x0001): the least value then includes it.
        #[arg(long)]
        crl: bool,
    },
    /// The upload server (BITS upload protocol, MC-BUP) and a download server of its folder.
    #[command(long_about = SERVE_HELP)]
    Serve(ServeArgs),
    /// The daemon, also taking job specs from NATS JetStream (a fleet agent).
    #[command(long_about = AGENT_HELP)]
    Agent(AgentArgs),
    /// The operator's side of a fleet: submit a spec, its status, cancel it, list the agents.
    #[command(subcommand)]
    Fleet(FleetCommand),
}

/// `bits agent --help` (`fleet.md`).
const AGENT_HELP: &str = "\
The daemon of this store (--store), plus a NATS connection: it consumes job specs published to \
bits.jobs.agent.NAME and bits.jobs.group.GROUP (stream BITS_JOBS, a durable consumer of its own \
per subject, created with the buckets BITS_STATE and BITS_AGENTS when missing), stores each as a \
local job whose id is the spec id (a spec delivered twice makes one job), acks it once stored, \
runs it as any job and completes it unless the spec says \"complete\": false. Every state change \
and progress at most once a second goes to BITS_STATE under SPEC.NAME. A local path must lie \
under --root (relative ones are taken from it), and a spec may set only the security-flag bits of \
--allow-flags (default 0x0F01): otherwise the job is stored in ERROR with 0x80070005. A spec that \
cannot be parsed is acked and reported on bits.rejected.NAME. With NATS down local jobs go on and \
states are written when it returns. Prints `ready` once it accepts commands.

Credentials come from files, never from the command line: --creds (a .creds file: user JWT and \
nkey seed), --nkey (a file holding the user's nkey seed, SU...) or --token-file (a file holding the \
token), one of them. tls://HOST:PORT connects with TLS verified in full (the chain to a trusted \
root, HOST in the certificate): the system's roots, or those of --nats-ca instead; --nats-cert and \
--nats-key give a client certificate to servers that verify clients. A server that refuses the \
credentials or whose certificate is not trusted is logged as an error and tried again every 10 s, \
while local jobs go on.";

/// The options of `bits agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The NATS server(s): nats://HOST:PORT or tls://HOST:PORT, several separated by commas.
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// The download root: every local path of a spec lies under it.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// The agent's name (default: the host name up to its first dot).
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// A group whose specs the agent takes (repeatable).
    #[arg(long = "group", value_name = "G")]
    pub groups: Vec<String>,
    /// The security-flag bits a spec may set (decimal or 0x hex).
    #[arg(long, value_name = "MASK", default_value = "0x0F01")]
    pub allow_flags: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `bits fleet …`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Publish a job spec (JSON) to a group or one agent; prints the spec id (one is added when missing).
    Submit {
        #[command(flatten)]
        nats: NatsArgs,
        /// Every agent of this group.
        #[arg(
            long,
            value_name = "G",
            conflicts_with = "agent",
            required_unless_present = "agent"
        )]
        group: Option<String>,
        /// This agent only.
        #[arg(long, value_name = "N")]
        agent: Option<String>,
        /// The spec file (`-`: standard input).
        spec: PathBuf,
    },
    /// The state of a spec on every agent that has it: one row per agent and a summary.
    Status {
        #[command(flatten)]
        nats: NatsArgs,
        /// The spec id, or the spec file.
        spec: String,
    },
    /// Withdraw a spec: every agent that has it, or gets it later, cancels its job.
    Cancel {
        #[command(flatten)]
        nats: NatsArgs,
        /// The spec id, or the spec file.
        spec: String,
    },
    /// The agents and when each was last seen.
    Agents {
        #[command(flatten)]
        nats: NatsArgs,
    },
}

/// How `bits fleet` reaches NATS.
#[derive(Debug, clap::Args)]
pub struct NatsArgs {
    /// The NATS server(s): nats://HOST:PORT or tls://HOST:PORT, several separated by commas.
    #[arg(long, value_name = "URL")]
    pub nats: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Credentials and TLS for NATS, shared by `bits agent` and `bits fleet`:
/// files only, so no secret is on argv.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// A NATS credentials file (.creds: user JWT and nkey seed).
    #[arg(long, value_name = "F", conflicts_with_all = ["nkey", "token_file"])]
    pub creds: Option<PathBuf>,
    /// A file holding the user's nkey seed (SU...).
    #[arg(long, value_name = "F", conflicts_with = "token_file")]
    pub nkey: Option<PathBuf>,
    /// A file holding the NATS token.
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// PEM root certificate(s) to trust for NATS instead of the system's; TLS is then required.
    #[arg(long, value_name = "F")]
    pub nats_ca: Option<PathBuf>,
    /// A PEM client certificate (chain) for NATS servers that verify clients; needs --nats-key.
    #[arg(long, value_name = "F", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    /// The PEM private key of --nats-cert.
    #[arg(long, value_name = "F", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
}

/// `bits serve --help` (`docs/spec/upload.md`, "The server").
const SERVE_HELP: &str = "\
Serves the BITS upload protocol (BITS_POST packets: Create-Session, Fragment, Close-Session, \
Cancel-Session, Ping) for URLs under --root, and plain GET/HEAD with Range of the files there. \
An upload appears at its URL's path under the root only when its session closes, atomically; \
sessions are kept on disk beside their destination, so a restart loses none. Paths that leave \
the root (.., symlinks) are refused. Prints `listening ADDR` once ready; runs until killed.";

/// The options of `bits serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The folder served: uploads land under it, downloads come from it.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Address and port to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Serve https with this PEM certificate chain (leaf first); needs --key.
    #[arg(long, value_name = "F", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, value_name = "F", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The largest upload accepted (bytes, or K, M, G); larger ones get 500 BG_E_TOO_LARGE.
    #[arg(long, value_name = "N")]
    pub max_upload_size: Option<String>,
    /// Let a finished upload replace an existing file (else 409).
    #[arg(long)]
    pub allow_overwrite: bool,
    /// The program that answers upload-reply jobs: run with the uploaded file's path, its output is the reply.
    #[arg(long, value_name = "PROG")]
    pub reply_cmd: Option<PathBuf>,
}

/// `bits set-proxy-settings --help` (`docs/spec/http-options.md`, "Proxies").
const PROXY_HELP: &str = "\
preconfig (the default): the daemon's environment, read as curl reads it: https_proxy or \
HTTPS_PROXY for https URLs, http_proxy (lower case only) for http URLs, all_proxy or ALL_PROXY \
for both, no_proxy or NO_PROXY for the exceptions. A daemon started on demand (by resume, wait, \
monitor, transfer) inherits the environment of that command; a daemon already running keeps its \
own (`bits daemon --stop` and the next command starts one with yours).
no_proxy: always direct, whatever the environment.
override PROXIES [BYPASS]: the job's own proxies, tried in order, each http://HOST:PORT, \
socks5h://HOST:PORT (SOCKS5, the proxy resolves names) or HOST:PORT (http); the port defaults \
to 1080. BYPASS lists the hosts reached direct: host names, domain suffixes (.example.org), \
IP addresses, CIDRs (10.0.0.0/8), * (every host), and <local> (every host name without a dot). \
Separate entries with ; (or spaces, inside one quoted argument).

https goes through an http proxy as a CONNECT tunnel: TLS runs end to end with the server, \
under the job's security flags, pins and client certificate, never applied to the proxy. \
Allowed in every state but ACKNOWLEDGED and CANCELLED (0x80200002); a running job uses the \
new settings from its next request. Errors: 0x80070057 a bad usage, URL or bypass entry; \
0x80004001 another proxy scheme (https://, socks4://, socks5://). At transfer time: cannot \
connect to the proxy 0x80072EFD (transient); the proxy refuses with HTTP status S: 0x8019 and S \
in four hex digits (407: 0x80190197).";

/// `bits set-credentials --help` (`docs/spec/http-options.md`, "Credentials").
const CREDENTIALS_HELP: &str = "\
The password is read from a file (its first line), an environment variable or standard input \
(its first line), never from the command line, where every user can read it. It is kept in the \
store only (folder 0700, file 0600) and never shown by info, list, logs or errors; info shows \
the target, scheme and user.

basic and digest (MD5, SHA-256) are honoured; ntlm, negotiate and passport are refused with \
0x80004001. Credentials answer one challenge of their scheme (401 from the server, 407 from a \
proxy), are never sent to another origin after a redirect, and server Basic credentials are \
never sent over plain http (0x80190191). One set per target and scheme: setting again replaces \
it. Allowed in every state but ACKNOWLEDGED and CANCELLED (0x80200002). A user name or \
password in a URL (https://user:pass@host/) is refused with 0x80070057: use this command.";

/// `bits get-proxy-settings --help`.
const GET_PROXY_HELP: &str = "\
Prints the usage alone on its first line: preconfig, no_proxy or override. For override, two \
more lines: the proxies, in the order they are tried, as URLs separated by ; \
(http://127.0.0.1:3128;socks5h://10.0.0.1:1080), then the bypass list separated by ; \
(an empty line when there is none). The lines are what set-proxy-settings takes back.";

/// `bits diagnose --help`.
const DIAGNOSE_HELP: &str = "\
TLS handshakes only, never an HTTP request: on each compiled backend (or --backend B) \
the chain the server presents (subject, issuer, validity, names, the sha256// pin of each key), \
every certificate fault found (date 0x0004, name 0x0002, unknown CA 0x0008, usage 0x0010; \
with --crl revocation too) and the least security-flags value the backend accepts the server \
under, or why none does. Values a backend refuses (E_NOTIMPL) are skipped and listed.

Exit status: 0 the diagnosis ran (whatever it found), 1 the server cannot be reached, 2 a bad URL.

--json prints one object:
  url, host, port, crl: what was diagnosed
  backends: one object per backend:
    backend: its name
    chain: [{subject, issuer, not_before, not_after (RFC 3339), names [\"DNS:..\", \"IP:..\"], pin \"sha256//..\"}],
           leaf first, from the loosest handshake that succeeded ([] when none did)
    chain_flags: the flags of that handshake (\"0x001E\") or null
    whole_chain: false when the backend tells only the leaf (native)
    faults: {date, name, unknown_ca, usage[, revoked, revocation_unchecked]}:
            each {\"present\": true|false|null (null: cannot tell), \"evidence\": \"...\"}
    least_flags: \"0x0004\" or null; why_none: the reason when null
    refused: the values the backend refuses (E_NOTIMPL)
    tries: [{flags, outcome: \"accepted\" | \"refused\" | \"0x80072F05\", message}] in the order tried";

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Security flags (decimal or 0x hex).
    #[arg(long, value_name = "FLAGS")]
    pub security_flags: Option<String>,
    /// Minimum retry delay in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub retry_delay: Option<u32>,
    /// No-progress timeout in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub no_progress_timeout: Option<u32>,
    /// The job's display name (default: transfer).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The job's priority: foreground, high, normal or low.
    #[arg(long, value_name = "P")]
    pub priority: Option<String>,
    /// The job's rate cap: 512K, 10M, 1.5G (bytes per second, 1024-based) or off.
    #[arg(long, value_name = "RATE")]
    pub max_rate: Option<String>,
    /// A custom header, "Name: value", sent on every request (repeatable).
    #[arg(long = "header", value_name = "H")]
    pub headers: Vec<String>,
    /// A client certificate (PEM or PKCS#12) offered to servers that ask for one.
    #[arg(long, value_name = "FILE")]
    pub client_certificate: Option<PathBuf>,
    #[command(flatten)]
    pub secrets: CertSecrets,
    /// Server key pins, sha256//BASE64[;sha256//BASE64]...
    #[arg(long = "pin", value_name = "PINS")]
    pub pins: Option<String>,
    /// Go through this proxy (http://HOST:PORT, socks5h://HOST:PORT), or `none` for direct.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// With --proxy URL: the hosts reached direct (as set-proxy-settings BYPASS).
    #[arg(long, value_name = "LIST", requires = "proxy")]
    pub noproxy: Option<String>,
    /// Upload: the two arguments are the file to send and the upload URL
    /// (in either order), sent with the BITS upload protocol.
    #[arg(long)]
    pub upload: bool,
    /// URL LOCAL pairs (with --upload: FILE URL).
    #[arg(value_name = "URL LOCAL", num_args = 2.., required = true)]
    pub pairs: Vec<String>,
}

/// Where `set-credentials` reads the password: exactly one source. There
/// is no option that takes a password itself: argv is readable by every
/// user.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PasswordSource {
    /// A file whose first line is the password.
    #[arg(long, value_name = "F")]
    pub password_file: Option<PathBuf>,
    /// An environment variable that holds the password.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

/// The private key and password of a client certificate. There is no
/// option that takes a password itself: argv is readable by every user.
#[derive(Debug, Args)]
pub struct CertSecrets {
    /// The private key, when it is not in the certificate file (PEM).
    #[arg(long, value_name = "KEYFILE")]
    pub key: Option<PathBuf>,
    /// A file whose first line is the PKCS#12 password.
    #[arg(long, value_name = "F", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// An environment variable that holds the PKCS#12 password.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}
