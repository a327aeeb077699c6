//! `bits`: background transfers with the semantics of Windows BITS, from the
//! command line. The contract (commands, options, JSON fields, exit codes)
//! is `shared/spec/cli.md`.
//!
//! - [`store`]: the SQLite job store of one store folder.
//! - [`ipc`]: how the CLI and the daemon share it (the architecture note).
//! - [`daemon`]: `bits daemon`, which carries the active jobs.
//! - [`backend`]: the compiled-in TLS backends (the only `cfg(feature)`).
//! - [`ops`], [`view`], [`watch`]: job operations, output, following jobs.

/// `println!` that never panics: when stdout is gone (`bits list | head -1`)
/// the text is dropped and the command's own result still decides the exit
/// status.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that never panics (see [`out!`]).
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics.
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod backend;
mod daemon;
mod error;
mod ipc;
mod ops;
mod store;
mod view;
mod watch;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use bits_core::{BitsError, Hresult, Job, JobState, JobType, Priority, SecurityFlags};
use clap::{Args, Parser, Subcommand};

use crate::backend::Backend;
use crate::error::{Failure, EXIT_BAD_INPUT};
use crate::ops::JobOp;
use crate::store::Store;

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
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// The store folder (default: $BITS_STORE, else $XDG_STATE_HOME/bits, else ~/.local/state/bits).
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    /// The TLS backend of new jobs (`bits backends` lists them; default: the first compiled in).
    #[arg(long, global = true, value_name = "B")]
    backend: Option<String>,
    /// Print JSON (info, list, transfer, create, backends).
    #[arg(long, global = true)]
    json: bool,
    /// Print less: no progress bars or notes.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print more (repeat for more detail); also passed to a daemon started on demand.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new SUSPENDED job; prints its id.
    Create {
        /// An upload job (one file) instead of a download.
        #[arg(long)]
        upload: bool,
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
    },
}

#[derive(Debug, Args)]
struct TransferArgs {
    /// Security flags (decimal or 0x hex).
    #[arg(long, value_name = "FLAGS")]
    security_flags: Option<String>,
    /// Minimum retry delay in seconds.
    #[arg(long, value_name = "SECONDS")]
    retry_delay: Option<u32>,
    /// No-progress timeout in seconds.
    #[arg(long, value_name = "SECONDS")]
    no_progress_timeout: Option<u32>,
    /// The job's display name (default: transfer).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// URL LOCAL pairs.
    #[arg(value_name = "URL LOCAL", num_args = 2.., required = true)]
    pairs: Vec<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    init_logging(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let f = error::to_failure(&e);
            err!("bits: {f}");
            f.exit_code()
        }
    }
}

/// Help and version print as clap does; any other parse error is one line,
/// `E_INVALIDARG`, exit 2.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let f = Failure::bad_input(
                Hresult::E_INVALIDARG,
                "a command is needed",
                "`bits --help` lists the commands and options",
            );
            err!("bits: {f}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        _ => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad command line")
                .trim()
                .trim_start_matches("error: ")
                .to_string();
            let f = Failure::bad_input(
                Hresult::E_INVALIDARG,
                first,
                "nothing was changed; `bits --help` lists the commands and options",
            );
            err!("bits: {f}");
            f.exit_code()
        }
    }
}

fn init_logging(cli: &Cli) {
    let daemon = matches!(cli.command, Command::Daemon { .. });
    let level = match (cli.global.quiet, cli.global.verbose, daemon) {
        (true, _, _) => "error",
        (_, 0, true) => "info",
        (_, 0, false) => "off",
        (_, 1, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BITS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Everything a command needs besides its own arguments.
struct Ctx {
    global: Global,
    dir: PathBuf,
}

impl Ctx {
    fn open(&self) -> Result<Store, Failure> {
        Store::open(&self.dir)
    }

    fn backend(&self) -> Result<Backend, Failure> {
        match &self.global.backend {
            Some(name) => Backend::from_name(name),
            None => Ok(Backend::default_backend()),
        }
    }

    fn note(&self, text: impl AsRef<str>) {
        if !self.global.quiet {
            out!("{}", text.as_ref());
        }
    }

    fn print_job(&self, job: &Job) {
        if self.global.json {
            out!("{}", view::job_json(job));
        } else {
            out_raw!("{}", view::job_text(job));
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = store::resolve_dir(cli.global.store.as_deref())?;
    let ctx = Ctx {
        global: cli.global,
        dir,
    };
    let ok = Ok(ExitCode::SUCCESS);
    match cli.command {
        Command::Create { upload, name } => create(&ctx, upload, &name),
        Command::AddFile { job, url, local } => add_file(&ctx, &job, &url, &local),
        Command::SetSecurityFlags { job, flags } => {
            let flags = SecurityFlags::parse(&flags).map_err(Failure::from)?;
            simple_op(&ctx, &job, JobOp::SetSecurityFlags { flags: flags.bits() })
        }
        Command::GetSecurityFlags { job } => {
            let job = ctx.open()?.resolve(&job)?;
            out!("{}", job.security_flags);
            ok
        }
        Command::ReplaceRemotePrefix { job, old, new } => {
            let store = ctx.open()?;
            let job = store.resolve(&job)?;
            let code = ipc::apply(
                &store,
                job.id,
                JobOp::ReplaceRemotePrefix {
                    old: old.clone(),
                    new,
                },
            )?;
            if code == Hresult::S_FALSE {
                out!(
                    "no file of job {} starts with {old:?}; nothing changed (S_FALSE)",
                    job.id
                );
            }
            ok
        }
        Command::SetMinRetryDelay { job, seconds } => simple_op(
            &ctx,
            &job,
            JobOp::SetMinRetryDelay {
                seconds: u64::from(seconds),
            },
        ),
        Command::SetNoProgressTimeout { job, seconds } => simple_op(
            &ctx,
            &job,
            JobOp::SetNoProgressTimeout {
                seconds: u64::from(seconds),
            },
        ),
        Command::SetPriority { job, priority } => {
            let priority = Priority::parse(&priority).map_err(Failure::from)?;
            simple_op(&ctx, &job, JobOp::SetPriority { priority })
        }
        Command::Resume { job } => resume(&ctx, &job),
        Command::Suspend { job } => simple_op(&ctx, &job, JobOp::Suspend),
        Command::Cancel { job } => simple_op(&ctx, &job, JobOp::Cancel),
        Command::Complete { job } => complete(&ctx, &job),
        Command::Info { job } => {
            let job = ctx.open()?.resolve(&job)?;
            ctx.print_job(&job);
            ok
        }
        Command::List { all } => {
            let jobs = ctx.open()?.list(all)?;
            if ctx.global.json {
                let array: Vec<_> = jobs.iter().map(view::job_json).collect();
                out!("{}", serde_json::Value::Array(array));
            } else {
                out_raw!("{}", view::list_text(&jobs));
            }
            ok
        }
        Command::Prune { older_than } => {
            let age = Duration::from_secs(u64::from(older_than) * 86_400);
            let cutoff = SystemTime::now()
                .checked_sub(age)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let cutoff = if older_than == 0 {
                SystemTime::now() + Duration::from_secs(1)
            } else {
                cutoff
            };
            let n = ctx.open()?.prune(cutoff)?;
            ctx.note(format!("pruned {n} final job(s) older than {older_than} day(s)"));
            ok
        }
        Command::Monitor { job } => monitor(&ctx, job.as_deref()),
        Command::Wait { job } => wait(&ctx, &job),
        Command::Transfer(args) => transfer(&ctx, args),
        Command::Backends => backends(&ctx),
        Command::Daemon { stop: true, .. } => stop_daemon(&ctx),
        Command::Daemon { foreground, .. } => {
            if foreground {
                Ok(daemon::run(&ctx.dir)?)
            } else {
                start_daemon(&ctx)
            }
        }
    }
}

fn simple_op(ctx: &Ctx, job: &str, op: JobOp) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    ipc::apply(&store, job.id, op)?;
    Ok(ExitCode::SUCCESS)
}

fn create(ctx: &Ctx, upload: bool, name: &str) -> anyhow::Result<ExitCode> {
    let backend = ctx.backend()?;
    check_name(name)?;
    let job_type = if upload {
        JobType::Upload
    } else {
        JobType::Download
    };
    let job = Job::new(name, job_type, backend.name());
    let store = ctx.open()?;
    store.insert(&job)?;
    if ctx.global.json {
        out!("{}", view::job_json(&job));
    } else {
        out!("{}", job.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Display names: 1 to 256 characters (BITS' limit), no control characters.
fn check_name(name: &str) -> Result<(), Failure> {
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("display name {name:?} must be 1 to 256 characters without control characters"),
            "nothing was changed; choose another name",
        ));
    }
    Ok(())
}

/// Checks a file to add: the URL parses as http/https, then
/// [`check_local`].
fn check_file(url: &str, local: &Path, writable: &mut HashSet<PathBuf>) -> Result<PathBuf, Failure> {
    bits_core::job::parse_remote_url(url).map_err(Failure::from)?;
    check_local(local, writable)
}

/// Checks the LOCAL of a file to add: it becomes absolute, names a file
/// (not a folder), and its folder exists and takes new files. Returns it
/// made absolute. `writable` holds the folders already found to take new
/// files: a command adding many files to one folder probes it once (a
/// probe is a file created and deleted, and 2,000 of them cost more than
/// the rest of the command).
fn check_local(local: &Path, writable: &mut HashSet<PathBuf>) -> Result<PathBuf, Failure> {
    let local = store::absolute(local)?;
    if local.file_name().is_none() || local.is_dir() {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("local name {} is a folder, not a file", local.display()),
            "nothing was changed; give the path of the file to write",
        ));
    }
    let folder = local.parent().unwrap_or(Path::new("/"));
    if writable.contains(folder) {
        return Ok(local);
    }
    if !folder.is_dir() {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!(
                "the folder {} of local name {} does not exist",
                folder.display(),
                local.display()
            ),
            "nothing was changed; create the folder first",
        ));
    }
    // Really try: permissions, read-only mounts and ACLs all show here.
    let probe = folder.join(format!(".bits-probe-{}", uuid::Uuid::new_v4().simple()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            writable.insert(folder.to_path_buf());
            Ok(local)
        }
        Err(e) => {
            let code =
                Hresult::from_win32(bits_core::error::os_error_to_win32(e.raw_os_error().unwrap_or(0)));
            Err(Failure::bad_input(
                if code.is_success() {
                    Hresult::E_INVALIDARG
                } else {
                    code
                },
                format!(
                    "cannot write in the folder {} of local name {}: {e}",
                    folder.display(),
                    local.display()
                ),
                "nothing was changed; choose a folder you can write to",
            ))
        }
    }
}

fn add_file(ctx: &Ctx, job: &str, url: &str, local: &Path) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    let local = check_file(url, local, &mut HashSet::new())?;
    ipc::apply(
        &store,
        job.id,
        JobOp::AddFile {
            url: url.to_string(),
            local,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn resume(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    // Refuse what resume refuses (no files, final state) before starting a daemon.
    job.clone().resume().map_err(Failure::from)?;
    ipc::apply_via_daemon(&store, job.id, JobOp::Resume, ctx.global.verbose)?;
    Ok(ExitCode::SUCCESS)
}

fn complete(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    let code = ipc::apply(&store, job.id, JobOp::Complete)?;
    report_complete(ctx, &store, job.id, code);
    Ok(ExitCode::SUCCESS)
}

fn report_complete(ctx: &Ctx, store: &Store, id: uuid::Uuid, code: Hresult) {
    if code == Hresult::BG_S_PARTIAL_COMPLETE {
        let kept = store
            .get(id)
            .ok()
            .flatten()
            .map(|j| j.files.iter().filter(|f| f.completed).count())
            .unwrap_or(0);
        err!(
            "bits: {code} BG_S_PARTIAL_COMPLETE: job {id} completed with only its {kept} finished file(s); the others were dropped"
        );
    } else if code == Hresult::BG_S_UNABLE_TO_DELETE_FILES {
        err!("bits: {code} BG_S_UNABLE_TO_DELETE_FILES: job {id} completed, but some temporary files could not be removed");
    } else if ctx.global.verbose > 0 {
        err!("bits: job {id} completed");
    }
}

fn wait(ctx: &Ctx, job: &str) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let job = store.resolve(job)?;
    if job.state().is_final() || job.state() == JobState::Suspended {
        return Err(Failure::from_bits(&BitsError::InvalidState {
            operation: "wait",
            state: job.state().as_str(),
        })
        .with_hint(if job.state() == JobState::Suspended {
            "nothing to wait for; `bits resume JOB` first"
        } else {
            "nothing to wait for; `bits info JOB` shows the job"
        })
        .into());
    }
    if job.state().is_active() {
        ipc::ensure_daemon(store.dir(), ctx.global.verbose)?;
    }
    let bars = watch::show_bars(ctx.global.quiet);
    let ended = settled(watch::follow(&store, &[job.id], false, bars, ctx.global.verbose)?);
    let job = ended.into_iter().next().unwrap_or(job);
    settle_exit(&job)
}

/// Exit 0 for TRANSFERRED (or already ACKNOWLEDGED), 1 with the error line
/// otherwise.
fn settle_exit(job: &Job) -> anyhow::Result<ExitCode> {
    match job.state() {
        JobState::Transferred | JobState::Acknowledged => Ok(ExitCode::SUCCESS),
        _ => Err(job_failure(job).into()),
    }
}

/// The one line for a job that did not transfer.
fn job_failure(job: &Job) -> Failure {
    let id = job.id;
    match (job.state(), &job.error) {
        (JobState::Error, Some(e)) => Failure::runtime(
            e.code,
            format!("job {id} is in ERROR ({}): {}", e.context.as_str(), e.message),
            format!("`bits info {id}` shows it; fix the cause and `bits resume {id}`, or `bits cancel {id}`"),
        ),
        (state, _) => Failure::runtime(
            Hresult::E_FAIL,
            format!(
                "job {id} stopped in state {} before it transferred",
                state.as_str()
            ),
            format!("`bits info {id}` shows it"),
        ),
    }
}

fn monitor(ctx: &Ctx, job: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = ctx.open()?;
    let ids: Vec<uuid::Uuid> = match job {
        Some(j) => vec![store.resolve(j)?.id],
        None => store.active()?.iter().map(|j| j.id).collect(),
    };
    if ids.is_empty() {
        ctx.note("no active jobs");
        return Ok(ExitCode::SUCCESS);
    }
    ipc::ensure_daemon(store.dir(), ctx.global.verbose)?;
    let bars = watch::show_bars(ctx.global.quiet);
    let ended = settled(watch::follow(&store, &ids, true, bars, ctx.global.verbose)?);
    if !bars {
        for j in &ended {
            ctx.note(format!(
                "{} {} {}/{} bytes {}",
                j.id,
                j.state().as_str(),
                j.bytes_transferred(),
                j.bytes_total()
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into()),
                j.display_name
            ));
        }
    }
    if job.is_some() {
        if let Some(j) = ended.first() {
            if j.state() == JobState::Error {
                return Err(job_failure(j).into());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn transfer(ctx: &Ctx, args: TransferArgs) -> anyhow::Result<ExitCode> {
    if !args.pairs.len().is_multiple_of(2) {
        return Err(Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!(
                "transfer takes URL LOCAL pairs; {} is left without a LOCAL",
                args.pairs.last().map(String::as_str).unwrap_or("")
            ),
            "nothing was changed; give a LOCAL path after each URL",
        )
        .into());
    }
    let backend = ctx.backend()?;
    let name = args.name.unwrap_or_else(|| "transfer".to_string());
    check_name(&name)?;
    let mut job = Job::new(name, JobType::Download, backend.name());
    if let Some(text) = &args.security_flags {
        let flags = SecurityFlags::parse(text).map_err(Failure::from)?;
        job.set_security_flags(flags, |p| backend.check_policy(p))
            .map_err(Failure::from)?;
    }
    if let Some(s) = args.retry_delay {
        job.set_min_retry_delay(u64::from(s)).map_err(Failure::from)?;
    }
    if let Some(s) = args.no_progress_timeout {
        job.set_no_progress_timeout(u64::from(s)).map_err(Failure::from)?;
    }
    let mut writable = HashSet::new();
    for pair in args.pairs.chunks(2) {
        // `add_file` checks the URL (parsing it twice costs 2,000 files
        // some milliseconds).
        let local = check_local(Path::new(&pair[1]), &mut writable)?;
        job.add_file(&pair[0], &local).map_err(Failure::from)?;
    }
    // Stored QUEUED: no daemon carries a new job, and the daemon needs
    // only to be told to look (reading and rewriting a job of many files
    // for a `resume` costs more than the rest of the start).
    job.resume().map_err(Failure::from)?;
    let store = ctx.open()?;
    store.insert(&job)?;
    let id = job.id;
    let verbose = ctx.global.verbose;
    watch::catch_interrupt();
    ipc::transfer_via_daemon(&store, id, verbose)?;
    let bars = watch::show_bars(ctx.global.quiet);
    let ended = match watch::follow(&store, &[id], ctx.global.json, bars, verbose)? {
        watch::Followed::Settled(jobs) => jobs,
        watch::Followed::Interrupted => return interrupted(ctx, &store, id),
    };
    let mut job = ended.into_iter().next().unwrap_or(job);
    let mut result = Ok(ExitCode::SUCCESS);
    // The daemon completes the job itself (`ipc::Request::Transfer`); the
    // `complete` sent here gets that completion's result, or does the work
    // when the daemon could not (an older one, or one started again).
    if matches!(job.state(), JobState::Transferred | JobState::Acknowledged) {
        match ipc::apply(&store, id, JobOp::Complete) {
            Ok(code) => report_complete(ctx, &store, id, code),
            // Completed by a daemon that has since stopped, and with it
            // the result it kept.
            Err(_) if job.state() == JobState::Acknowledged => {}
            Err(f) => result = Err(f),
        }
        // The job as complete left it, for --json (reading a job of many
        // files is not free).
        if ctx.global.json {
            if let Some(j) = store.get(id)? {
                job = j;
            }
        }
    } else {
        result = Err(job_failure(&job));
    }
    if ctx.global.json {
        out!("{}", view::job_json(&job));
        let _ = std::io::stdout().flush();
    }
    Ok(result?)
}

/// Ctrl-C during `transfer`: the job is suspended, with every byte so far
/// kept, and the line says how to finish or drop it. Exit 130, as a shell
/// reports an interrupted command.
fn interrupted(ctx: &Ctx, store: &Store, id: uuid::Uuid) -> anyhow::Result<ExitCode> {
    let suspended = ipc::apply(store, id, JobOp::Suspend);
    let job = store.get(id)?;
    if ctx.global.json {
        if let Some(j) = &job {
            out!("{}", view::job_json(j));
        }
    }
    let kept = job.map(|j| j.bytes_transferred()).unwrap_or(0);
    let what = match suspended {
        Ok(_) => format!("job {id} is suspended with {kept} bytes kept"),
        Err(f) => format!("job {id} could not be suspended ({f})"),
    };
    err!(
        "bits: 0x800704C7 ERROR_CANCELLED: transfer interrupted; {what}; `bits resume {id}` and `bits wait {id}` then `bits complete {id}` finish it, `bits cancel {id}` drops it"
    );
    Ok(ExitCode::from(130))
}

/// The jobs of a [`watch::follow`] that cannot be interrupted.
fn settled(followed: watch::Followed) -> Vec<Job> {
    match followed {
        watch::Followed::Settled(jobs) => jobs,
        watch::Followed::Interrupted => Vec::new(),
    }
}

fn backends(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for (i, b) in Backend::compiled().into_iter().enumerate() {
        let (flags, problem) = match b.transport(&ctx.dir) {
            Ok(t) => (
                bits_core::transport::supported_cert_flags(|p| t.check_policy(p)),
                None,
            ),
            Err(e) => (Vec::new(), Some(Failure::from_bits(&e).to_string())),
        };
        rows.push((b.name(), i == 0, flags, problem));
    }
    if ctx.global.json {
        let array: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, default, flags, problem)| {
                serde_json::json!({
                    "name": name,
                    "default": default,
                    "supported_cert_flags": flags,
                    "supported_cert_flags_hex": flags.iter().map(|f| format!("0x{f:04X}")).collect::<Vec<_>>(),
                    "error": problem,
                })
            })
            .collect();
        out!("{}", serde_json::Value::Array(array));
        return Ok(ExitCode::SUCCESS);
    }
    for (name, default, flags, problem) in &rows {
        let mark = if *default { " (default)" } else { "" };
        out!("{name}{mark}");
        if let Some(p) = problem {
            out!("  unavailable: {p}");
            continue;
        }
        let hex: Vec<String> = flags.iter().map(|f| format!("0x{f:04X}")).collect();
        if flags.len() == 32 {
            out!("  certificate flags honoured: all 32 values, 0x0000 to 0x001F");
        } else {
            out!(
                "  certificate flags honoured ({} of 32): {}; others are refused with 0x80004001 E_NOTIMPL",
                flags.len(),
                hex.join(" ")
            );
        }
        out!("  redirect bits 0x0000 0x0100 0x0200, with or without 0x0800: always");
    }
    let missing: Vec<&str> = backend::KNOWN
        .iter()
        .copied()
        .filter(|k| rows.iter().all(|(n, ..)| n != k))
        .collect();
    if !missing.is_empty() {
        out!("not compiled in: {}", missing.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn stop_daemon(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let Some(mut client) = ipc::Client::connect(&ctx.dir) else {
        ctx.note(format!(
            "no bits daemon is running for store {}",
            ctx.dir.display()
        ));
        return Ok(ExitCode::SUCCESS);
    };
    let pid = client.call(&ipc::Request::Ping)?.pid.unwrap_or(0);
    // The daemon may close the socket before its acknowledgement is written:
    // either way, whether it is gone is what the loop below checks.
    let _ = client.call(&ipc::Request::Shutdown);
    drop(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ipc::Client::connect(&ctx.dir).is_some() {
        if std::time::Instant::now() > deadline {
            return Err(Failure::runtime(
                Hresult::WINHTTP_TIMEOUT,
                format!("the bits daemon (pid {pid}) did not stop within 30 s"),
                format!("see {}", ipc::path(&ctx.dir, ipc::LOG_FILE).display()),
            )
            .into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ctx.note(format!(
        "bits daemon (pid {pid}) stopped; its jobs resume at the next start"
    ));
    Ok(ExitCode::SUCCESS)
}

fn start_daemon(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if let Some(mut c) = ipc::Client::connect(&ctx.dir) {
        let pid = c.call(&ipc::Request::Ping).ok().and_then(|r| r.pid);
        return Err(ipc::busy(&ctx.dir, pid).into());
    }
    let mut client = ipc::ensure_daemon(&ctx.dir, ctx.global.verbose)?;
    let pid = client.call(&ipc::Request::Ping)?.pid.unwrap_or(0);
    ctx.note(format!(
        "bits daemon running (pid {pid}) for store {}; log: {}",
        ctx.dir.display(),
        ipc::path(&ctx.dir, ipc::LOG_FILE).display()
    ));
    Ok(ExitCode::SUCCESS)
}
