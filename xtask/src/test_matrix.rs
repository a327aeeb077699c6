//! `cargo xtask test-matrix [--quick]`: build, test and clippy every feature
//! combination that users can get, each as its own cargo invocation.
//!
//! Each combination selects packages with `-p` (or, for the last one,
//! `--workspace`) so that cargo's feature unification across the workspace
//! cannot hide a combination that does not build on its own. Within a
//! combination, `cargo build --all-targets` builds the test binaries once and
//! the test step reuses them; the combinations are ordered from small to big
//! so the whole-workspace run reuses the dependencies built before it.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::util::{cargo_with, have_nextest, run_timed};

/// One feature combination.
#[derive(Debug, Clone, PartialEq)]
pub struct Combination {
    /// Short name for the table.
    pub name: String,
    /// Package selection and feature arguments.
    pub args: Vec<String>,
    /// Whether to run clippy on it.
    pub clippy: bool,
    /// Whether the selection has library crates whose doctests should run
    /// (nextest does not run doctests).
    pub doctests: bool,
    /// Whether to run its tests at all (a combination whose tests another
    /// one already runs with the same features only builds and lints).
    pub test: bool,
    /// A nextest filterset narrowing the tests run (only with nextest).
    pub filter: Option<String>,
}

impl Combination {
    fn new(name: impl Into<String>, args: &[&str], doctests: bool) -> Combination {
        Combination {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            clippy: true,
            doctests,
            test: true,
            filter: None,
        }
    }
}

/// bits-cli's integration-test binaries that never touch TLS: they run the
/// daemon, the store, the schedule and the fleet over plain HTTP, so the
/// backend a combination compiles in changes nothing in them. The
/// one-backend combinations skip them; the whole-workspace one runs them.
pub const BACKEND_FREE_CLI_TESTS: &[&str] = &[
    "daemon",
    "disk_full",
    "fleet",
    "lifecycle",
    "progress",
    "schedule",
];

/// The nextest filterset that leaves out [`BACKEND_FREE_CLI_TESTS`].
fn without_backend_free_tests() -> String {
    let binaries: Vec<String> = BACKEND_FREE_CLI_TESTS
        .iter()
        .map(|b| format!("binary({b})"))
        .collect();
    format!("not ({})", binaries.join(" | "))
}

/// The backends `bits-cli` can be built with alone: its features other than
/// `default`, read from `cargo metadata` so that a new backend feature joins
/// the matrix by itself (`openssl` and `native` if metadata fails).
pub fn cli_features() -> Vec<String> {
    let from_metadata = || -> Option<Vec<String>> {
        let out = cargo_with(&["metadata", "--format-version", "1", "--no-deps"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let cli = v["packages"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "bits-cli")?;
        let mut features: Vec<String> = cli["features"]
            .as_object()?
            .keys()
            .filter(|k| *k != "default")
            .cloned()
            .collect();
        features.sort();
        Some(features)
    };
    from_metadata().unwrap_or_else(|| vec!["native".into(), "openssl".into()])
}

/// Every combination, in the order they run (small to big, so later ones
/// reuse what earlier ones built): bits-core alone, bits-scheduler alone,
/// bits-cli with each backend feature alone, bits-cli with its default
/// features, and the whole workspace with every feature.
pub fn all(cli_features: &[String]) -> Vec<Combination> {
    let mut combos = vec![
        Combination::new(
            "bits-core, no default features",
            &["-p", "bits-core", "--no-default-features"],
            true,
        ),
        Combination::new("bits-scheduler alone", &["-p", "bits-scheduler"], true),
    ];
    for f in cli_features {
        let mut one = Combination::new(
            format!("bits-cli, {f} only"),
            &["-p", "bits-cli", "--no-default-features", "--features", f],
            false,
        );
        one.filter = Some(without_backend_free_tests());
        combos.push(one);
    }
    // Its default features are every backend, so bits-cli's tests under the
    // whole-workspace combination are the same tests with the same features:
    // here it only has to build and lint on its own.
    let mut default = Combination::new("bits-cli, default features", &["-p", "bits-cli"], false);
    default.test = false;
    combos.push(default);
    combos.push(Combination::new(
        "workspace, all features",
        &["--workspace", "--all-features"],
        true,
    ));
    combos
}

/// The pre-commit subset: bits-core alone (build and test: does the core
/// still stand without any backend?) and the whole workspace with clippy.
pub fn quick() -> Vec<Combination> {
    let all = all(&[]);
    let mut core = all[0].clone();
    core.clippy = false;
    vec![core, all[all.len() - 1].clone()]
}

/// The result of one step of one combination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// Succeeded in this time.
    Pass(Duration),
    /// Failed after this time.
    Fail(Duration),
    /// Not run because the build failed.
    Blocked,
    /// Not part of this run (e.g. clippy under `--quick`).
    Skipped,
}

impl Cell {
    fn from_run(ok: bool, took: Duration) -> Cell {
        if ok {
            Cell::Pass(took)
        } else {
            Cell::Fail(took)
        }
    }

    /// Whether this cell makes the run fail.
    pub fn failed(self) -> bool {
        matches!(self, Cell::Fail(_) | Cell::Blocked)
    }

    fn text(self) -> String {
        match self {
            Cell::Pass(d) => format!("pass {}s", d.as_secs()),
            Cell::Fail(d) => format!("FAIL {}s", d.as_secs()),
            Cell::Blocked => "blocked".into(),
            Cell::Skipped => "-".into(),
        }
    }
}

/// One row of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The combination's name.
    pub name: String,
    /// Build, test, clippy.
    pub cells: [Cell; 3],
}

/// Runs the task.
pub fn run(args: &[String]) -> Result<()> {
    let mut quick_mode = false;
    for a in args {
        match a.as_str() {
            "--quick" => quick_mode = true,
            other => bail!("test-matrix: unknown option {other:?} (expected --quick)"),
        }
    }
    let combos = if quick_mode { quick() } else { all(&cli_features()) };
    let rows = run_combinations(&combos)?;
    let table = render_table(&rows);
    println!("\n{table}");
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.cells.iter().any(|c| c.failed()))
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("test-matrix failed for: {}", failed.join("; "));
    }
    Ok(())
}

/// Runs every combination, keeping going after failures.
pub fn run_combinations(combos: &[Combination]) -> Result<Vec<Row>> {
    let nextest = have_nextest();
    if !nextest {
        eprintln!("cargo-nextest not found: using cargo test");
    }
    let mut rows = Vec::new();
    for c in combos {
        eprintln!("\n=== {} ({})", c.name, c.args.join(" "));
        let args = &c.args;
        let build = {
            let mut cmd = cargo_with(&["build", "--all-targets"]);
            cmd.args(args);
            let (ok, took) = run_timed(&mut cmd)?;
            Cell::from_run(ok, took)
        };
        let test = if build.failed() {
            Cell::Blocked
        } else if !c.test {
            Cell::Skipped
        } else {
            let mut cmd = if nextest {
                let mut cmd = cargo_with(&["nextest", "run", "--no-tests=pass"]);
                cmd.args(args);
                if let Some(filter) = &c.filter {
                    cmd.args(["-E", filter]);
                }
                cmd
            } else {
                let mut cmd = cargo_with(&["test"]);
                cmd.args(args);
                cmd
            };
            let (mut ok, mut took) = run_timed(&mut cmd)?;
            if nextest && c.doctests {
                let mut cmd = cargo_with(&["test", "--doc"]);
                cmd.args(args);
                let (doc_ok, doc_took) = run_timed(&mut cmd)?;
                ok &= doc_ok;
                took += doc_took;
            }
            Cell::from_run(ok, took)
        };
        let clippy = if c.clippy {
            let mut cmd = cargo_with(&["clippy", "--all-targets"]);
            cmd.args(args).args(["--", "-D", "warnings"]);
            let (ok, took) = run_timed(&mut cmd)?;
            Cell::from_run(ok, took)
        } else {
            Cell::Skipped
        };
        rows.push(Row {
            name: format!("{} (`{}`)", c.name, c.args.join(" ")),
            cells: [build, test, clippy],
        });
    }
    Ok(rows)
}

/// Renders the result as an aligned plain-text table.
pub fn render_table(rows: &[Row]) -> String {
    let header = ["combination", "build", "test", "clippy"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.cells[0].text(),
                r.cells[1].text(),
                r.cells[2].text(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: [&str; 4]| {
        let mut text = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str(" | ");
            }
            let _ = write!(text, "{c:<w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("-|-"));
    out.push('\n');
    for row in &cells {
        line(&mut out, [&row[0], &row[1], &row[2], &row[3]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn table_shows_every_cell_aligned() {
        let rows = vec![
            Row {
                name: "core".into(),
                cells: [Cell::Pass(secs(12)), Cell::Pass(secs(3)), Cell::Skipped],
            },
            Row {
                name: "workspace".into(),
                cells: [Cell::Fail(secs(100)), Cell::Blocked, Cell::Pass(secs(7))],
            },
        ];
        let expected = "\
combination | build     | test    | clippy
------------|-----------|---------|--------
core        | pass 12s  | pass 3s | -
workspace   | FAIL 100s | blocked | pass 7s
";
        assert_eq!(render_table(&rows), expected);
    }

    #[test]
    fn blocked_and_failed_cells_fail_the_run_skipped_ones_do_not() {
        assert!(Cell::Fail(secs(1)).failed());
        assert!(Cell::Blocked.failed());
        assert!(!Cell::Skipped.failed());
        assert!(!Cell::Pass(secs(1)).failed());
    }

    #[test]
    fn cli_backend_features_come_from_cargo_metadata() {
        let f = cli_features();
        assert!(
            ["native", "openssl", "rustls"]
                .iter()
                .all(|b| f.contains(&b.to_string())),
            "{f:?}"
        );
        assert!(!f.contains(&"default".to_string()), "{f:?}");
    }

    #[test]
    fn backend_free_tests_exist_and_never_pick_a_backend_or_https() {
        let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/bits-cli/tests");
        for name in BACKEND_FREE_CLI_TESTS {
            let path = tests.join(format!("{name}.rs"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for word in ["--backend", "https://", "TlsServer"] {
                assert!(
                    !text.contains(word),
                    "{name}.rs mentions {word}: it depends on the backend"
                );
            }
        }
    }

    #[test]
    fn every_combination_selects_packages_without_unification_except_the_workspace_one() {
        let all = all(&["native".to_string(), "openssl".to_string()]);
        assert_eq!(all.len(), 6);
        for c in &all[..5] {
            assert_eq!(c.args[0], "-p", "{}", c.name);
            assert!(!c.args.iter().any(|a| a == "--workspace"));
        }
        assert_eq!(all[1].args, ["-p", "bits-scheduler"]);
        assert_eq!(
            all[2].args,
            ["-p", "bits-cli", "--no-default-features", "--features", "native"]
        );
        assert_eq!(all[4].args, ["-p", "bits-cli"]);
        assert_eq!(all[5].args, ["--workspace", "--all-features"]);
        // One backend: only the tests a backend can change; default
        // features: the workspace run has its tests; the workspace: all.
        assert_eq!(
            all[2].filter.as_deref(),
            Some(
                "not (binary(daemon) | binary(disk_full) | binary(fleet) | binary(lifecycle) \
                 | binary(progress) | binary(schedule))"
            )
        );
        assert!(!all[4].test);
        assert!(all[5].test && all[5].filter.is_none());
        let q = quick();
        assert_eq!(q.len(), 2);
        assert!(!q[0].clippy);
        assert!(q[1].clippy);
    }
}
