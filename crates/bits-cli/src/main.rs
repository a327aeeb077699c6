//! `bits`: background transfers with the semantics of Windows BITS, from the
//! command line. The contract (commands, options, JSON fields, exit codes)
//! is `docs/spec/cli.md`.
//!
//! - [`cli`], [`commands`]: the command line and its verbs; this file keeps
//!   clap's top level, logging and exit codes.
//! - [`store`]: the SQLite job store of one store folder.
//! - [`ipc`]: how the CLI and the daemon share it (the architecture note).
//! - [`daemon`]: `bits daemon`, which carries the active jobs (its
//!   scheduling is the `bits-scheduler` crate).
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
mod cli;
mod commands;
mod daemon;
mod error;
mod ipc;
mod ops;
mod store;
mod view;
mod watch;

use std::process::ExitCode;

use bits_core::Hresult;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::{Failure, EXIT_BAD_INPUT};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    init_logging(&cli);
    match commands::run(cli) {
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
            // The first line, and the next ones while a line announces
            // them ("the following required arguments were not provided:").
            let mut first = String::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if !first.is_empty() {
                    first.push(' ');
                }
                first.push_str(line.trim_start_matches("error: "));
                if !line.ends_with(':') || line.starts_with("Usage:") {
                    break;
                }
            }
            if first.is_empty() {
                first = "bad command line".to_string();
            }
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
    // The services log at info by default.
    let daemon = matches!(
        cli.command,
        Command::Daemon { .. } | Command::Serve(_) | Command::Agent(_)
    );
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
