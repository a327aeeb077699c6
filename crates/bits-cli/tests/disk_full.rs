//! A full disk mid-transfer: the job goes to ERROR (context LOCAL_FILE),
//! nothing appears at LOCAL, the bytes so far are kept, and once there is
//! room again `resume` finishes from where it stopped.
//!
//! As root where `mount` works, LOCAL lives on a 1 MiB tmpfs (ENOSPC,
//! `0x80070070`); elsewhere the daemon runs under `ulimit -f` (EFBIG,
//! `0x800700DF`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bits_testkit::http::{HttpServer, Route};
use support::{content, Env, BITS};

/// A 1 MiB tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        // Lets the ulimit path be exercised where mount works too.
        if std::env::var_os("BITS_TEST_NO_MOUNT").is_some() {
            return None;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn grow(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,size=16m"])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount bigger");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_mid_transfer_keeps_bytes_and_resumes() {
    let env = Env::new();
    let server = HttpServer::start();
    let body = content(3_000_000, 7);
    server.set("/big", Route::body(body.clone()).etag("\"big-v1\""));

    let full = env.tmp.path().join("full");
    let tmpfs = Tmpfs::mount(&full);
    let limited = if tmpfs.is_none() {
        // No mount: a file-size limit on the daemon instead.
        std::fs::create_dir_all(&full).unwrap();
        let child = support::spawn_ready(
            Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "ulimit -f 1024 && exec {BITS} --store '{}' daemon --foreground",
                    env.store.display()
                ))
                .stderr(Stdio::null()),
            String::new,
        );
        Some(child)
    } else {
        None
    };
    let expected = if tmpfs.is_some() {
        "0x80070070"
    } else {
        "0x800700DF"
    };

    let local = full.join("big.bin");
    let id = env.create("big");
    env.run(&["add-file", &id, &server.url("/big"), local.to_str().unwrap()])
        .ok();
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).fails(1, expected);
    let info = env.info(&id);
    assert_eq!(info["state"], "ERROR");
    assert_eq!(info["error"]["code"], expected);
    assert_eq!(info["error"]["context"], "LOCAL_FILE");
    assert!(!local.exists(), "nothing at LOCAL");
    let temps = Env::temp_files(&full);
    assert_eq!(temps.len(), 1, "{temps:?}");
    let kept = std::fs::metadata(&temps[0]).unwrap().len();
    assert!(kept > 500_000, "bytes kept: {kept}");

    // Room again.
    match (&tmpfs, limited) {
        (Some(t), _) => t.grow(),
        (None, Some(mut child)) => {
            support::kill(child.id() as i32, "TERM");
            child.wait().unwrap();
        }
        (None, None) => unreachable!(),
    }
    server.clear_requests();
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).ok();
    let first = server.requests_for("/big");
    assert!(
        first[0].range().is_some_and(|r| r != "bytes=0-"),
        "resumed past byte 0: {first:?}"
    );
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read(&local).unwrap(), body);
    env.kill_daemon("TERM");
    drop(tmpfs);
}
