//! `cargo xtask demo`: the README's first command. Builds `bits` and a demo
//! server, starts real HTTPS servers on 127.0.0.1 with a throwaway test PKI,
//! and runs real transfers through them, progress bar included:
//! a good certificate that transfers, an expired one refused with
//! `0x80072F05`, the same accepted with `--security-flags 0x4`, and a
//! redirect reported under `0x0100`. Needs no network.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

/// Kills the demo server when the demo ends, however it ends.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the demo.
pub fn run(root: &Path, _args: &[String]) -> Result<()> {
    step("building bits and the demo server");
    let status = Command::new(cargo())
        .current_dir(root)
        .args(["build", "-q", "-p", "bits-cli", "-p", "bits-testkit", "--bins"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let target = target_dir(root);
    let bits = target.join("debug/bits");
    let server_bin = target.join("debug/bits-demo-server");

    let work = std::env::temp_dir().join(format!("bits-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let store = work.join("store");

    step("starting HTTPS servers on 127.0.0.1 with a throwaway test PKI");
    let mut child = Command::new(&server_bin)
        .arg(&work)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", server_bin.display()))?;
    let stdout = child.stdout.take().context("demo server stdout")?;
    let _guard = ServerGuard(child);
    let mut info = HashMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == "ready" {
            break;
        }
        if let Some((k, v)) = line.split_once(' ') {
            println!("    {k:<9} {v}");
            info.insert(k.to_string(), v.to_string());
        }
    }
    let get = |k: &str| {
        info.get(k)
            .cloned()
            .with_context(|| format!("demo server did not say {k}"))
    };
    let root_pem = get("root")?;

    let bits_cmd = |args: &[&str]| {
        let mut c = Command::new(&bits);
        c.env("SSL_CERT_FILE", &root_pem)
            .env_remove("SSL_CERT_DIR")
            .arg("--store")
            .arg(&store)
            .args(args);
        c
    };

    step("1. a good certificate: the file transfers");
    let out = work.join("good.bin");
    expect(bits_cmd(&["transfer", &get("good")?, path(&out)]), 0)?;
    println!(
        "    {} is {} bytes",
        out.display(),
        std::fs::metadata(&out)?.len()
    );

    step("2. an expired certificate: refused with 0x80072F05, nothing written");
    let out = work.join("expired.bin");
    expect(bits_cmd(&["transfer", &get("expired")?, path(&out)]), 1)?;
    if out.exists() {
        bail!("{} exists after a refused transfer", out.display());
    }

    step("3. the same with --security-flags 0x4 (IGNORE_CERT_DATE_INVALID): accepted");
    expect(
        bits_cmd(&[
            "transfer",
            "--security-flags",
            "0x4",
            &get("expired")?,
            path(&out),
        ]),
        0,
    )?;

    step("4. a redirect under 0x0100 (ALLOW_REPORT): the remote name becomes the final URL");
    let out = work.join("redirected.bin");
    expect(
        bits_cmd(&[
            "transfer",
            "--json",
            "--security-flags",
            "0x0100",
            &get("redirect")?,
            path(&out),
        ]),
        0,
    )?;

    step("the jobs, as `bits list --all` shows them");
    expect(bits_cmd(&["list", "--all"]), 0)?;
    let _ = bits_cmd(&["daemon", "--stop"]).stderr(Stdio::null()).status();
    println!("\ndemo done; files and store are in {}", work.display());
    Ok(())
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn expect(mut cmd: Command, code: i32) -> Result<()> {
    let shown: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    println!("    $ bits {}", shown[2..].join(" "));
    let status = cmd.status().context("running bits")?;
    if status.code() != Some(code) {
        bail!("expected exit status {code}, got {status}");
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}
