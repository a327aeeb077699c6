//! Helpers shared by the tasks: where the workspace is, how to run cargo.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// The workspace root: the parent of xtask's own manifest directory.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                project_root().join(dir)
            }
        }
        None => project_root().join("target"),
    }
}

/// The cargo that runs us (so `cargo +toolchain xtask` stays on that toolchain).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

/// A `cargo` command with `args`.
pub fn cargo_with(args: &[&str]) -> Command {
    let mut cmd = cargo();
    cmd.args(args);
    cmd
}

/// Shows a command the way a shell user would type it.
pub fn show(cmd: &Command) -> String {
    let mut parts = vec!["cargo".to_string()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let envs: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    if envs.is_empty() {
        parts.join(" ")
    } else {
        format!("{} {}", envs.join(" "), parts.join(" "))
    }
}

/// Runs `cmd` with inherited output; returns whether it succeeded and how long it took.
pub fn run_timed(cmd: &mut Command) -> Result<(bool, Duration)> {
    eprintln!("\n$ {}", show(cmd));
    let start = Instant::now();
    let status = cmd.status().with_context(|| format!("starting {}", show(cmd)))?;
    Ok((status.success(), start.elapsed()))
}

/// Runs `cmd` and fails unless it succeeds.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let (ok, _) = run_timed(cmd)?;
    if !ok {
        bail!("`{}` failed", show(cmd));
    }
    Ok(())
}

/// Whether `cargo nextest` is installed.
pub fn have_nextest() -> bool {
    cargo_with(&["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// nginx in the foreground (`daemon off;`) under the prefix `dir`, with
/// the configuration `conf`, listening on 127.0.0.1:`port`; stopped on
/// drop (SIGQUIT to its master, by pid).
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl Nginx {
    /// Writes `conf` to `dir/nginx.conf`, starts nginx with it (its errors
    /// in `dir/error.log`) and waits until it listens on `port`.
    pub fn start(dir: &Path, conf: &str, port: u16) -> Result<Nginx> {
        std::fs::create_dir_all(dir)?;
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let error_log = dir.join("error.log");
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Nginx { child, port };
        await_listening(&mut nginx.child, port, "nginx", &error_log)?;
        Ok(nginx)
    }
}

/// nginx's `location /dav/` for uploads: curl's `-T` is a WebDAV `PUT`
/// written under `root` (`root/dav/NAME`; nginx keeps the body in its
/// temporary file and renames it into place once whole), of any size.
pub fn nginx_dav_location(root: &Path) -> String {
    format!(
        r#"location /dav/ {{
            root {};
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }}"#,
        root.display()
    )
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Waits (10 s at most) until a just-started server (`name`: nginx, `bits
/// serve`) listens on 127.0.0.1:`port`; if it exits first, fails with its
/// `error_log`.
pub fn await_listening(child: &mut Child, port: u16, name: &str, error_log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{name} exited ({status}): {}",
                std::fs::read_to_string(error_log).unwrap_or_default()
            );
        }
        ensure!(Instant::now() < deadline, "{name} did not listen within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(project_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn commands_show_as_typed() {
        let mut cmd = cargo_with(&["test", "-p", "x"]);
        assert_eq!(show(&cmd), "cargo test -p x");
        cmd.env("A", "1");
        assert_eq!(show(&cmd), "A=1 cargo test -p x");
    }
}
