//! `cargo xtask <task>`: the workspace's developer and CI tasks.
//!
//! One module per task, each with a `run()`; the workspace root is found from
//! `CARGO_MANIFEST_DIR`'s parent, so tasks work from any directory. xtask
//! depends on none of the workspace's crates: it drives them through `cargo`.

mod background;
mod bench;
mod ci;
mod conformance;
mod demo;
mod fleet_bench;
mod latency;
mod test_matrix;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  test-matrix [--quick]   build, test and clippy each feature combination with its own -p
                          (--quick: bits-core alone without clippy, then the whole workspace)
  conformance [--check]   run the backends' conformance suites and write docs/conformance.md
                          and docs/backends.md (--check: fail if the committed files are stale)
  ci                      everything CI runs: fmt, docs, architecture invariants,
                          test-matrix, conformance --check
  demo [args...]          the end-to-end demo
  bench [options]         bits transfer vs curl and aria2c over HTTPS on 127.0.0.1 (bench --help)
  bench --background      background jobs yielding to curl behind a bottleneck (root)
  help                    this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match task.as_str() {
        "test-matrix" => test_matrix::run(rest),
        "conformance" => conformance::run(rest),
        "ci" => ci::run(rest),
        "demo" => demo::run(&util::project_root(), rest),
        "bench" => bench::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("xtask: unknown task {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
