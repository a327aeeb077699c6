//! `cargo xtask ci`: everything `.ci/run` checks, in an order that reuses
//! build artifacts: formatting and the architecture invariant first (cheap),
//! then the test matrix, then docs and conformance, which reuse the
//! whole-workspace build. Every step runs even after a failure; the summary
//! says which failed.

use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{cargo_with, run_checked, show};

/// Crates that bits-core must never depend on (normal dependencies): it
/// talks to the network only through the `Transport` trait, so it has no TLS
/// library (those belong in the bits-transport-* crates) and no HTTP client
/// or server library (bits-http owns hyper). The `http` crate (types only:
/// `HeaderMap`, `Method`) and `http-body` are allowed.
const FORBIDDEN_IN_CORE: &[&str] = &[
    "openssl",
    "openssl-sys",
    "tokio-openssl",
    "native-tls",
    "tokio-native-tls",
    "rustls",
    "tokio-rustls",
    "hyper",
    "hyper-util",
    "reqwest",
    "h2",
];

/// What bits-scheduler may not depend on beyond [`FORBIDDEN_IN_CORE`]
/// (normal dependencies): a store, TLS, HTTP or a command line are the
/// embedder's, so a fleet agent reuses the scheduler as it is.
const FORBIDDEN_IN_SCHEDULER: &[&str] = &["rusqlite", "libsqlite3-sys", "clap"];

/// Runs the task.
pub fn run(args: &[String]) -> Result<()> {
    if let Some(other) = args.first() {
        bail!("ci: unknown option {other:?} (ci takes none)");
    }
    type Step = (&'static str, fn() -> Result<()>);
    let steps: [Step; 5] = [
        ("cargo fmt --check", fmt),
        ("architecture invariants", architecture),
        ("test-matrix", || crate::test_matrix::run(&[])),
        ("cargo doc -D warnings", doc),
        ("conformance --check", || {
            crate::conformance::run_with(true, &["--workspace", "--all-features"])
        }),
    ];
    let mut results = Vec::new();
    for (name, step) in steps {
        eprintln!("\n##### ci: {name}");
        let start = Instant::now();
        let result = step();
        if let Err(e) = &result {
            eprintln!("ci: {name} failed: {e:#}");
        }
        results.push((name, result.is_ok(), start.elapsed().as_secs()));
    }
    println!("\nci summary:");
    for (name, ok, secs) in &results {
        println!("  {:<4} {secs:>5}s  {name}", if *ok { "pass" } else { "FAIL" });
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    if !failed.is_empty() {
        bail!("ci failed: {}", failed.join(", "));
    }
    Ok(())
}

fn fmt() -> Result<()> {
    run_checked(&mut cargo_with(&["fmt", "--all", "--", "--check"]))
}

fn doc() -> Result<()> {
    // --all-features: the same feature resolution as the matrix's last
    // combination, so the dependencies are already checked.
    let mut cmd = cargo_with(&["doc", "--no-deps", "--workspace", "--all-features"]);
    cmd.env("RUSTDOCFLAGS", "-D warnings");
    run_checked(&mut cmd)
}

fn architecture() -> Result<()> {
    check_core_tree(&normal_tree("bits-core")?)?;
    println!("architecture invariant holds: bits-core has no TLS or HTTP library");
    check_scheduler_tree(&normal_tree("bits-scheduler")?)?;
    println!("architecture invariant holds: bits-scheduler has no store, TLS, HTTP library or CLI");
    check_xtask_tree(&normal_tree("xtask")?)?;
    println!("architecture invariant holds: xtask depends on none of the workspace's crates");
    let rustls_only = ["--no-default-features", "--features", "rustls"];
    check_no_system_tls(&normal_tree_with("bits-cli", &rustls_only)?)?;
    println!("architecture invariant holds: bits-cli with only rustls links no OpenSSL");
    Ok(())
}

/// Fails when a rustls-only build of bits-cli would link a system TLS
/// library (issue 8: static and musl builds must not need OpenSSL).
pub fn check_no_system_tls(tree: &str) -> Result<()> {
    const SYSTEM_TLS: &[&str] = &[
        "openssl",
        "openssl-sys",
        "native-tls",
        "tokio-openssl",
        "tokio-native-tls",
    ];
    let mut found: Vec<&str> = crate_names(tree).filter(|n| SYSTEM_TLS.contains(n)).collect();
    found.sort_unstable();
    found.dedup();
    if !found.is_empty() {
        bail!(
            "architecture invariant broken: bits-cli --no-default-features --features rustls \
             depends on {} (`cargo tree -p bits-cli --no-default-features --features rustls -e normal -i {}`)",
            found.join(", "),
            found[0]
        );
    }
    Ok(())
}

/// `cargo tree -p <package> -e normal --prefix none --format {p}`: one
/// `name version [(path)]` per line.
fn normal_tree(package: &str) -> Result<String> {
    normal_tree_with(package, &[])
}

fn normal_tree_with(package: &str, features: &[&str]) -> Result<String> {
    let mut args = vec![
        "tree", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}",
    ];
    args.extend_from_slice(features);
    let mut cmd = cargo_with(&args);
    eprintln!("$ {}", show(&cmd));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!("cargo tree -p {package} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn crate_names(tree: &str) -> impl Iterator<Item = &str> {
    tree.lines().filter_map(|line| line.split_whitespace().next())
}

/// Fails when `cargo tree -p bits-core -e normal --prefix none` output names
/// a crate of [`FORBIDDEN_IN_CORE`] (a TLS or HTTP library).
pub fn check_core_tree(tree: &str) -> Result<()> {
    check_tree(
        "bits-core",
        tree,
        &[FORBIDDEN_IN_CORE],
        "TLS belongs in the bits-transport-* crates, HTTP libraries in bits-http",
    )
}

/// Fails when `cargo tree -p bits-scheduler -e normal --prefix none`
/// output names a crate of [`FORBIDDEN_IN_CORE`] or
/// [`FORBIDDEN_IN_SCHEDULER`].
pub fn check_scheduler_tree(tree: &str) -> Result<()> {
    check_tree(
        "bits-scheduler",
        tree,
        &[FORBIDDEN_IN_CORE, FORBIDDEN_IN_SCHEDULER],
        "the store, TLS and the command line reach it through its seams",
    )
}

/// Fails, naming them and `hint`, when `package`'s `tree` holds crates of
/// one of the `forbidden` lists.
fn check_tree(package: &str, tree: &str, forbidden: &[&[&str]], hint: &str) -> Result<()> {
    let mut found: Vec<&str> = crate_names(tree)
        .filter(|name| forbidden.iter().any(|list| list.contains(name)))
        .collect();
    found.sort_unstable();
    found.dedup();
    if !found.is_empty() {
        bail!(
            "architecture invariant broken: {package} depends on {} \
             (`cargo tree -p {package} -e normal -i {}` shows the path); {hint}",
            found.join(", "),
            found[0]
        );
    }
    Ok(())
}

/// Fails when xtask's normal dependencies include a workspace crate
/// (`bits-*`): xtask must build even when those do not.
pub fn check_xtask_tree(tree: &str) -> Result<()> {
    let mut found: Vec<&str> = crate_names(tree).filter(|n| n.starts_with("bits-")).collect();
    found.sort_unstable();
    found.dedup();
    if !found.is_empty() {
        bail!(
            "architecture invariant broken: xtask depends on {}; \
             drive the workspace's crates through cargo instead",
            found.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_only_tree_with_openssl_sys_fails() {
        assert!(check_no_system_tls("bits-cli v0.1.0\nrustls v0.23.46\nring v0.17.14\n").is_ok());
        let e = check_no_system_tls("bits-cli v0.1.0\nopenssl-sys v0.9.118\n").unwrap_err();
        assert!(e.to_string().contains("openssl-sys"), "{e}");
    }

    #[test]
    fn a_clean_core_tree_passes() {
        let tree = "bits-core v0.1.0 (/w/crates/bits-core)\nasync-trait v0.1.89\ntokio v1.48.0\n\
                    openssl-probe-free v1.0.0\n";
        check_core_tree(tree).unwrap();
    }

    #[test]
    fn the_http_types_crates_are_allowed_in_core() {
        let tree = "bits-core v0.1.0 (/w/crates/bits-core)\nhttp v1.5.0\nhttp-body v1.0.1\n\
                    hyperlocal-free v0.1.0\n";
        check_core_tree(tree).unwrap();
    }

    #[test]
    fn an_http_library_fails_and_is_named() {
        let tree = "bits-core v0.1.0 (/w)\nhttp v1.5.0\nreqwest v0.13.5\nhyper-util v0.1.21\n\
                    hyper v1.12.0\nh2 v0.4.13\n";
        let err = check_core_tree(tree).unwrap_err().to_string();
        assert!(
            err.contains("depends on h2, hyper, hyper-util, reqwest ("),
            "{err}"
        );
        assert!(err.contains("-i h2"), "{err}");
        assert!(err.contains("HTTP libraries in bits-http"), "{err}");
    }

    /// Each of `forbidden`, alone in `package`'s tree, fails `check` and is named.
    fn each_fails_alone(package: &str, forbidden: &[&str], check: fn(&str) -> Result<()>) {
        for name in forbidden {
            let tree = format!("{package} v0.1.0 (/w)\n{name} v1.0.0\n");
            let err = check(&tree).unwrap_err().to_string();
            assert!(err.contains(&format!("depends on {name} (")), "{name}: {err}");
        }
    }

    #[test]
    fn every_forbidden_crate_fails_alone() {
        each_fails_alone("bits-core", FORBIDDEN_IN_CORE, check_core_tree);
    }

    #[test]
    fn the_scheduler_may_not_depend_on_a_store_tls_or_cli() {
        check_scheduler_tree("bits-scheduler v0.1.0 (/w)\nbits-core v0.1.0 (/w)\ntokio v1.48.0\n").unwrap();
        each_fails_alone("bits-scheduler", FORBIDDEN_IN_CORE, check_scheduler_tree);
        each_fails_alone("bits-scheduler", FORBIDDEN_IN_SCHEDULER, check_scheduler_tree);
    }

    #[test]
    fn xtask_may_not_depend_on_workspace_crates() {
        check_xtask_tree("xtask v0.1.0 (/w/xtask)\nanyhow v1.0.0\nserde_json v1.0.0\n").unwrap();
        let err = check_xtask_tree("xtask v0.1.0\nbits-core v0.1.0 (/w/crates/bits-core)\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bits-core"), "{err}");
    }

    #[test]
    fn a_tls_dependency_fails_and_is_named() {
        let tree = "bits-core v0.1.0 (/w)\nnative-tls v0.2.18\nopenssl v0.10.82\nopenssl v0.10.82\n";
        let err = check_core_tree(tree).unwrap_err().to_string();
        assert!(err.contains("native-tls, openssl"), "{err}");
        assert!(err.contains("-i native-tls"), "{err}");
    }
}
