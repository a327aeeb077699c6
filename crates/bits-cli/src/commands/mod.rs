//! The verbs of `bits`, grouped by what they touch: [`create`] (new jobs
//! and their files), [`edit`] (changes to a stored job, and pruning),
//! [`transfer`] (running jobs: resume, complete, wait, monitor, transfer),
//! [`show`] (reading jobs), [`http_options`] (custom headers, client
//! certificate, HTTP method, pins, proxies, credentials), [`daemon`]
//! (starting and stopping the service), [`backends`], [`diagnose`] (a
//! server's TLS, no job), [`serve`] (the upload server).

mod backends;
mod create;
mod daemon;
mod diagnose;
mod edit;
mod fleet;
mod http_options;
mod serve;
mod show;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use bits_core::Job;

use crate::backend::Backend;
use crate::cli::{Cli, Command, Global};
use crate::error::Failure;
use crate::ops::JobOp;
use crate::store::{self, Store};
use crate::view;

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

    /// What the store's running daemon's schedule allows now.
    fn published(&self) -> Option<crate::daemon::Published> {
        crate::daemon::Published::read(&self.dir)
    }

    /// The job's JSON object, with its network use now.
    fn job_json(&self, job: &Job) -> serde_json::Value {
        view::job_json(
            job,
            &crate::daemon::NetworkView::of(job, self.published().as_ref()),
        )
    }

    fn print_job(&self, job: &Job) {
        if self.global.json {
            out!("{}", self.job_json(job));
        } else {
            let net = crate::daemon::NetworkView::of(job, self.published().as_ref());
            out_raw!("{}", view::job_text(job, &net));
        }
    }
}

/// Runs the command `cli` names.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = store::resolve_dir(cli.global.store.as_deref())?;
    let ctx = Ctx {
        global: cli.global,
        dir,
    };
    match cli.command {
        Command::Create {
            upload,
            upload_reply,
            name,
        } => create::create(&ctx, upload, upload_reply, &name),
        Command::AddFile { job, url, local } => create::add_file(&ctx, &job, &url, &local),
        Command::SetSecurityFlags { job, flags } => edit::set_security_flags(&ctx, &job, &flags),
        Command::GetSecurityFlags { job } => show::security_flags(&ctx, &job),
        Command::ReplaceRemotePrefix { job, old, new } => edit::replace_remote_prefix(&ctx, &job, old, new),
        Command::SetMaxRate { job, rate } => {
            let rate = edit::parse_max_rate(&rate)?;
            edit::simple_op(&ctx, &job, JobOp::SetMaxRate { rate })
        }
        Command::SetMinRetryDelay { job, seconds } => edit::simple_op(
            &ctx,
            &job,
            JobOp::SetMinRetryDelay {
                seconds: u64::from(seconds),
            },
        ),
        Command::SetNoProgressTimeout { job, seconds } => edit::simple_op(
            &ctx,
            &job,
            JobOp::SetNoProgressTimeout {
                seconds: u64::from(seconds),
            },
        ),
        Command::SetPriority { job, priority } => edit::set_priority(&ctx, &job, &priority),
        Command::SetCustomHeaders { job, headers } => http_options::set_custom_headers(&ctx, &job, headers),
        Command::GetCustomHeaders { job } => http_options::get_custom_headers(&ctx, &job),
        Command::MakeCustomHeadersWriteOnly { job } => {
            edit::simple_op(&ctx, &job, JobOp::MakeCustomHeadersWriteOnly)
        }
        Command::SetClientCertificate { job, file, secrets } => {
            http_options::set_client_certificate(&ctx, &job, &file, &secrets)
        }
        Command::GetClientCertificate { job } => http_options::get_client_certificate(&ctx, &job),
        Command::RemoveClientCertificate { job } => {
            edit::simple_op(&ctx, &job, JobOp::SetClientCertificate { certificate: None })
        }
        Command::SetHttpMethod { job, method } => http_options::set_http_method(&ctx, &job, &method),
        Command::GetHttpMethod { job } => http_options::get_http_method(&ctx, &job),
        Command::SetServerCertPins { job, pins } => {
            http_options::set_server_cert_pins(&ctx, &job, pins.as_deref())
        }
        Command::GetServerCertPins { job } => http_options::get_server_cert_pins(&ctx, &job),
        Command::SetProxySettings {
            job,
            usage,
            proxies,
            bypass,
        } => http_options::set_proxy_settings(&ctx, &job, &usage, proxies.as_deref(), bypass.as_deref()),
        Command::GetProxySettings { job } => http_options::get_proxy_settings(&ctx, &job),
        Command::SetCredentials {
            job,
            target,
            scheme,
            user,
            password,
        } => http_options::set_credentials(&ctx, &job, &target, &scheme, &user, &password),
        Command::RemoveCredentials { job, target, scheme } => {
            http_options::remove_credentials(&ctx, &job, &target, &scheme)
        }
        Command::SetReplyFileName { job, path } => create::set_reply_file_name(&ctx, &job, &path),
        Command::GetReplyFileName { job } => create::get_reply_file_name(&ctx, &job),
        Command::Resume { job } => transfer::resume(&ctx, &job),
        Command::Suspend { job } => edit::simple_op(&ctx, &job, JobOp::Suspend),
        Command::Cancel { job } => edit::simple_op(&ctx, &job, JobOp::Cancel),
        Command::Complete { job } => transfer::complete(&ctx, &job),
        Command::Info { job } => show::info(&ctx, &job),
        Command::List { all } => show::list(&ctx, all),
        Command::Prune { older_than } => edit::prune(&ctx, older_than),
        Command::Monitor { job } => transfer::monitor(&ctx, job.as_deref()),
        Command::Wait { job } => transfer::wait(&ctx, &job),
        Command::Transfer(args) => transfer::transfer(&ctx, args),
        Command::Backends => backends::backends(&ctx),
        Command::Daemon { stop: true, .. } => daemon::stop(&ctx),
        Command::Daemon { reload: true, .. } => daemon::reload(&ctx),
        Command::Daemon {
            foreground, config, ..
        } => daemon::start(&ctx, foreground, config),
        Command::Diagnose { url, crl } => diagnose::diagnose(&ctx, &url, crl),
        Command::Serve(args) => serve::serve(&ctx, &args),
        Command::Agent(args) => fleet::agent(&ctx, &args),
        Command::Fleet(cmd) => fleet::fleet(&ctx, cmd),
    }
}
