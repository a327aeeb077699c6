//! `bits serve` through the real binary: it starts, says where it listens,
//! serves its folder to `bits transfer` over http and over https with the
//! test PKI (every compiled backend as the client), and refuses bad input.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use bits_testkit::pki::{LeafKind, TestPki};
use support::{content, Env, BITS};

/// A running `bits serve`, killed when dropped.
struct Serving {
    child: Child,
    addr: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Serving {
    serve_to(&[], args, "127.0.0.1:0", Stdio::null())
}

/// `bits -v serve ARGS` on `listen` with its log (each fragment's bytes)
/// in `log`.
fn serve_logged(args: &[&str], listen: &str, log: &std::path::Path) -> Serving {
    serve_to(
        &["-v"],
        args,
        listen,
        Stdio::from(std::fs::File::create(log).unwrap()),
    )
}

fn serve_to(global: &[&str], args: &[&str], listen: &str, stderr: Stdio) -> Serving {
    let mut child = Command::new(BITS)
        .args(global)
        .arg("serve")
        .args(args)
        .args(["--listen", listen])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start bits serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .to_owned();
    Serving { child, addr }
}

/// The test PKI's good leaf (chain and key) as PEM files for `--cert`,
/// `--key`.
fn tls_files(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let leaf = TestPki::shared().leaf(LeafKind::Good);
    let cert = env.tmp.path().join("cert.pem");
    let key = env.tmp.path().join("key.pem");
    std::fs::write(&cert, leaf.chain_pem()).unwrap();
    std::fs::write(&key, leaf.key_pem()).unwrap();
    (cert, key)
}

#[test]
fn bits_serve_serves_its_folder_over_http() {
    let env = Env::new();
    let root = env.tmp.path().join("served");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let data = content(300_000, 7);
    std::fs::write(root.join("sub/f.bin"), &data).unwrap();
    let s = serve(&["--root", root.to_str().unwrap()]);
    let local = env.path("f.bin");
    env.run(&[
        "transfer",
        &format!("http://{}/sub/f.bin", s.addr),
        local.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read(&local).unwrap(), data);
    // Nothing leaves the root.
    let r = env.run(&[
        "transfer",
        "--no-progress-timeout",
        "1",
        &format!("http://{}/%2e%2e/served/sub/f.bin", s.addr),
        env.path("g.bin").to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("0x80190194"), "404 expected: {r:?}");
}

#[test]
fn bits_serve_serves_https_to_every_backend() {
    let env = Env::trusting_test_root();
    let (cert, key) = tls_files(&env);
    let root = env.tmp.path().join("served");
    std::fs::create_dir(&root).unwrap();
    let data = content(100_000, 3);
    std::fs::write(root.join("f.bin"), &data).unwrap();
    let s = serve(&[
        "--root",
        root.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let backends = env.run(&["--json", "backends"]).ok().json();
    let names: Vec<String> = backends
        .as_array()
        .expect("an array of backends")
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(!names.is_empty());
    for backend in names {
        let local = env.path(&format!("{backend}.bin"));
        env.run(&[
            "--backend",
            &backend,
            "transfer",
            &format!("https://{}/f.bin", s.addr),
            local.to_str().unwrap(),
        ])
        .ok();
        assert_eq!(std::fs::read(&local).unwrap(), data, "{backend}");
    }
}

#[test]
fn bits_serve_refuses_bad_input() {
    let env = Env::new();
    let missing = env.tmp.path().join("missing");
    env.run(&["serve", "--root", missing.to_str().unwrap()])
        .fails(2, "0x80070057");
    let root = env.tmp.path().to_str().unwrap().to_owned();
    env.run(&["serve", "--root", &root, "--listen", "nowhere"])
        .fails(2, "0x80070057");
    env.run(&["serve", "--root", &root, "--max-upload-size", "lots"])
        .fails(2, "0x80070057");
    env.run(&["serve", "--root", &root, "--reply-cmd", "/no/such/program"])
        .fails(2, "0x80070002");
}

#[test]
fn transfer_upload_sends_a_file_to_bits_serve_over_http_and_https() {
    let env = Env::trusting_test_root();
    let (cert, key) = tls_files(&env);
    let root = env.tmp.path().join("served");
    std::fs::create_dir(&root).unwrap();
    let plain = serve(&["--root", root.to_str().unwrap()]);
    let tls = serve(&[
        "--root",
        root.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let data = content(1_500_000, 5);
    let source = env.path("report.bin");
    std::fs::write(&source, &data).unwrap();
    // FILE URL, as the issue writes it.
    let r = env
        .run(&[
            "--json",
            "transfer",
            "--upload",
            source.to_str().unwrap(),
            &format!("http://{}/uploads/plain.bin", plain.addr),
        ])
        .ok();
    let job = r.json();
    assert_eq!(job["type"], "UPLOAD", "{job}");
    assert_eq!(job["state"], "ACKNOWLEDGED", "{job}");
    assert_eq!(std::fs::read(root.join("uploads/plain.bin")).unwrap(), data);
    // URL FILE (bitsadmin's order), over https, on every backend.
    let backends = env.run(&["--json", "backends"]).ok().json();
    for b in backends.as_array().unwrap() {
        let backend = b["name"].as_str().unwrap();
        env.run(&[
            "--backend",
            backend,
            "transfer",
            "--upload",
            &format!("https://{}/uploads/{backend}.bin", tls.addr),
            source.to_str().unwrap(),
        ])
        .ok();
        assert_eq!(
            std::fs::read(root.join(format!("uploads/{backend}.bin"))).unwrap(),
            data,
            "{backend}"
        );
    }
    // The source is never touched; the server refuses to overwrite.
    assert_eq!(std::fs::read(&source).unwrap(), data);
    let r = env.run(&[
        "transfer",
        "--upload",
        source.to_str().unwrap(),
        &format!("http://{}/uploads/plain.bin", plain.addr),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("0x80070005"), "{r:?}");
    // Two files for one upload: refused before anything starts.
    env.run(&["transfer", "--upload", "a", "b", "c", "d"])
        .fails(2, "0x8020001C");
}

#[test]
fn an_upload_reply_job_gets_the_reply_of_bits_serve_reply_cmd() {
    let env = Env::new();
    let root = env.tmp.path().join("served");
    std::fs::create_dir(&root).unwrap();
    let script = env.tmp.path().join("reply.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'thanks for %s bytes' \"$(wc -c < \"$1\")\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let s = serve(&[
        "--root",
        root.to_str().unwrap(),
        "--reply-cmd",
        script.to_str().unwrap(),
    ]);
    let source = env.path("inventory.json");
    std::fs::write(&source, content(70_000, 2)).unwrap();
    let id = env
        .run(&["create", "--upload-reply", "inv"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    env.add_file(
        &id,
        &format!("http://{}/in/inventory.json", s.addr),
        "inventory.json",
    );
    let default = env.run(&["get-reply-file-name", &id]).ok();
    assert_eq!(default.stdout.trim(), format!("{}.reply", source.display()));
    let reply = env.path("answer.txt");
    env.run(&["set-reply-file-name", &id, reply.to_str().unwrap()])
        .ok();
    assert_eq!(env.info(&id)["reply_file_name"], reply.to_str().unwrap());
    env.run(&["resume", &id]).ok();
    env.run(&["wait", &id]).ok();
    assert!(!reply.exists(), "only on complete");
    env.run(&["complete", &id]).ok();
    assert_eq!(std::fs::read_to_string(&reply).unwrap(), "thanks for 70000 bytes");
    assert_eq!(
        std::fs::read(root.join("in/inventory.json")).unwrap(),
        content(70_000, 2)
    );
    // A download job has no reply file name.
    let d = env.create("d");
    env.run(&["set-reply-file-name", &d, reply.to_str().unwrap()])
        .fails(2, "0x80004001");
}

/// The hidden files (sessions) anywhere under `dir`.
fn hidden_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            found.extend(hidden_under(&e.path()));
        } else if name.starts_with('.') {
            found.push(name);
        }
    }
    found
}

#[test]
fn cancel_sends_cancel_session_and_the_server_forgets_the_upload() {
    let env = Env::new();
    let root = env.tmp.path().join("served");
    std::fs::create_dir(&root).unwrap();
    // Uploads over 10 bytes are refused with a (transient) 500: the
    // session stays open on the server, the job in TRANSIENT_ERROR.
    let s = serve(&["--root", root.to_str().unwrap(), "--max-upload-size", "10"]);
    std::fs::write(env.path("big.bin"), content(1000, 4)).unwrap();
    let id = env
        .run(&["create", "--upload", "up"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    env.add_file(&id, &format!("http://{}/up/big.bin", s.addr), "big.bin");
    env.run(&["resume", &id]).ok();
    let info = env.wait_for(&id, std::time::Duration::from_secs(20), |j| {
        j["state"] == "TRANSIENT_ERROR"
    });
    assert_eq!(info["error"]["code"], "0x80200020", "{info}");
    assert_eq!(hidden_under(&root).len(), 2, "{:?}", hidden_under(&root));
    env.run(&["cancel", &id]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !hidden_under(&root).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(hidden_under(&root).is_empty(), "{:?}", hidden_under(&root));
}

/// The length of the one partial upload in `dir`, if any.
fn partial_len(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .and_then(|e| e.metadata().ok())
        .map(|m| m.len())
}

#[test]
fn kill_9_of_the_client_daemon_mid_upload_continues_the_same_session() {
    let env = Env::new();
    let root = env.tmp.path().join("served");
    std::fs::create_dir(&root).unwrap();
    let log = env.tmp.path().join("serve.log");
    let s = serve_logged(&["--root", root.to_str().unwrap()], "127.0.0.1:0", &log);
    let total = 192usize << 20;
    // The moment the server holds bytes of it: kill -9 the daemon.
    let (id, data) = upload_until_the_server_holds_bytes(&env, &s.addr, &root, total, &[]);
    env.kill_daemon("KILL");
    let held = partial_len(&root.join("up")).expect("the session is still open");
    assert!(held < total as u64, "the upload ended before the kill");
    // A new daemon continues the stored session.
    completes_in_one_session(&env, &id, &root, &log, &data);
}

/// Lets upload job `id` finish (a new daemon starts), completes it and
/// checks the server's side: the file whole at `up/big.bin` under `root`,
/// and in `log` one session whose fragments wrote each byte once (an
/// overlap resent after a kill adds nothing).
fn completes_in_one_session(env: &Env, id: &str, root: &std::path::Path, log: &std::path::Path, data: &[u8]) {
    env.run(&["wait", id]).ok();
    env.run(&["complete", id]).ok();
    assert!(
        std::fs::read(root.join("up/big.bin")).unwrap() == data,
        "the file arrived whole"
    );
    let (sessions, written) = server_log(log);
    assert_eq!(sessions, 1, "one session, continued by each new daemon");
    assert_eq!(written, data.len() as u64, "each byte written once");
}

/// An upload job of `total` bytes to `/up/big.bin` on `addr` (served from
/// `root`), `setter` applied to it first (`[name, value]`), resumed: returns
/// once the server holds some of its bytes, with the job's id and data.
fn upload_until_the_server_holds_bytes(
    env: &Env,
    addr: &str,
    root: &std::path::Path,
    total: usize,
    setter: &[&str],
) -> (String, Vec<u8>) {
    let data = content(total, 6);
    std::fs::write(env.path("big.bin"), &data).unwrap();
    let id = env
        .run(&["create", "--upload", "big"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    env.add_file(&id, &format!("http://{addr}/up/big.bin"), "big.bin");
    if let [name, value] = setter {
        env.run(&[name, &id, value]).ok();
    }
    env.run(&["resume", &id]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while partial_len(&root.join("up")).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "no byte reached the server");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    (id, data)
}

/// From a `bits -v serve` log: the sessions created, and the bytes its
/// fragments wrote (cut ones included).
fn server_log(log: &std::path::Path) -> (usize, u64) {
    let text = std::fs::read_to_string(log).unwrap();
    let sessions = text.lines().filter(|l| l.contains("session created")).count();
    let written = text
        .lines()
        .filter(|l| l.contains(" fragment"))
        .filter_map(|l| l.split("written=").nth(1))
        .filter_map(|w| w.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    (sessions, written)
}

#[test]
fn kill_9_of_bits_serve_mid_upload_resumes_from_its_offset() {
    let env = Env::new();
    let root = env.tmp.path().join("served");
    std::fs::create_dir(&root).unwrap();
    let first_log = env.tmp.path().join("serve-1.log");
    let s = serve_logged(&["--root", root.to_str().unwrap()], "127.0.0.1:0", &first_log);
    let addr = s.addr.clone();
    let total = 128usize << 20;
    let (id, data) =
        upload_until_the_server_holds_bytes(&env, &addr, &root, total, &["set-min-retry-delay", "5"]);
    drop(s); // kill -9
    let held = partial_len(&root.join("up")).expect("the session is on disk");
    assert!(held < total as u64, "the upload ended before the kill");
    let second_log = env.tmp.path().join("serve-2.log");
    let _s = serve_logged(&["--root", root.to_str().unwrap()], &addr, &second_log);
    env.run(&["wait", &id]).ok();
    env.run(&["complete", &id]).ok();
    assert!(
        std::fs::read(root.join("up/big.bin")).unwrap() == data,
        "the file arrived whole"
    );
    let (sessions, written) = server_log(&second_log);
    assert_eq!(sessions, 0, "the session the server kept is continued");
    assert_eq!(
        written,
        total as u64 - held,
        "from the server's offset, each byte once"
    );
}

/// Issue 17: "small and 64 MiB files" on each backend. Each backend
/// uploads 64 MiB over https to one `bits serve --cert --key`: every
/// session's bytes arrive once, and each file is the source.
#[test]
fn every_backend_uploads_64_mib_over_https() {
    let env = Env::trusting_test_root();
    let (cert, key) = tls_files(&env);
    let root = env.tmp.path().join("served");
    std::fs::create_dir(&root).unwrap();
    let log = env.tmp.path().join("serve.log");
    let s = serve_logged(
        &[
            "--root",
            root.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        "127.0.0.1:0",
        &log,
    );
    let total = 64usize << 20;
    let data = content(total, 9);
    let source = env.path("big.bin");
    std::fs::write(&source, &data).unwrap();
    let backends = env.run(&["--json", "backends"]).ok().json();
    let names: Vec<&str> = backends
        .as_array()
        .expect("an array of backends")
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(!names.is_empty());
    for backend in &names {
        let started = std::time::Instant::now();
        let job = env
            .run(&[
                "--json",
                "--backend",
                backend,
                "transfer",
                "--upload",
                source.to_str().unwrap(),
                &format!("https://{}/big/{backend}.bin", s.addr),
            ])
            .ok()
            .json();
        eprintln!("{backend}: 64 MiB in {:?}", started.elapsed());
        assert_eq!(job["state"], "ACKNOWLEDGED", "{backend}: {job}");
        assert_eq!(job["bytes_transferred"], total, "{backend}: {job}");
        let served = root.join(format!("big/{backend}.bin"));
        assert_eq!(
            std::fs::metadata(&served).unwrap().len(),
            total as u64,
            "{backend}"
        );
        assert!(
            std::fs::read(&served).unwrap() == data,
            "{backend}: the file differs"
        );
        // Not kept longer than needed: the temp dir holds one at a time.
        std::fs::remove_file(&served).unwrap();
    }
    let (sessions, written) = server_log(&log);
    assert_eq!(sessions, names.len(), "one session per backend");
    assert_eq!(written, (total * names.len()) as u64, "each byte once");
}

/// A small pseudo-random generator (xorshift64*), seeded by the test.
struct Rng(u64);

impl Rng {
    /// Seeded from `BITS_TEST_SEED` when set (to replay a failure), else
    /// from the clock; the seed is printed.
    fn from_clock() -> Rng {
        let seed = std::env::var("BITS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("seed {seed} (BITS_TEST_SEED={seed} replays it)");
        Rng(seed | 1)
    }

    /// A number in `lo..hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (hi - lo)
    }
}

#[test]
fn kill_9_of_the_client_daemon_at_random_points_continues_one_session() {
    let env = Env::new();
    let root = env.tmp.path().join("served");
    std::fs::create_dir(&root).unwrap();
    let log = env.tmp.path().join("serve.log");
    let s = serve_logged(&["--root", root.to_str().unwrap()], "127.0.0.1:0", &log);
    let total = 192usize << 20;
    // Three kills, each at a random byte count the server must hold first:
    // one in each third of 5%..90% of the file.
    let mut rng = Rng::from_clock();
    let band = (total as u64) * 85 / 100 / 3;
    let thresholds: Vec<u64> = (0..3)
        .map(|k| {
            let lo = (total as u64) * 5 / 100 + k * band;
            rng.between(lo, lo + band)
        })
        .collect();
    eprintln!("kills once the server holds {thresholds:?} bytes");
    let (id, data) = upload_until_the_server_holds_bytes(&env, &s.addr, &root, total, &[]);
    let mut held = 0;
    for (k, threshold) in thresholds.into_iter().enumerate() {
        if k > 0 {
            // A command that needs the daemon starts a new one.
            env.run(&["resume", &id]).ok();
        }
        // This daemon moves the upload on (at least one new byte) up to
        // the threshold; then it is killed.
        let target = threshold.max(held + 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while partial_len(&root.join("up")).unwrap_or(0) < target {
            assert!(
                std::time::Instant::now() < deadline,
                "kill {k}: the server never held {target} bytes (it holds {:?}); {}",
                partial_len(&root.join("up")),
                env.info(&id)
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        env.kill_daemon("KILL");
        held = partial_len(&root.join("up")).expect("the session is still open");
        eprintln!("kill {k}: the server held {held} bytes");
        assert!(held < total as u64, "kill {k}: the upload ended before it");
    }
    completes_in_one_session(&env, &id, &root, &log, &data);
}

/// A relay on 127.0.0.1 to `upstream` that passes the client's bytes at
/// most at `rate` bytes a second (the answers unthrottled): a slow link
/// for an upload. Its threads end with their connections.
struct SlowLink {
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowLink {
    fn to(upstream: &str, rate: u64) -> SlowLink {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut up_in, mut up_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut down_in, mut down_out) = (server, client);
                std::thread::spawn(move || {
                    // 1/50 s of bytes at a time.
                    let mut buf = vec![0; (rate / 50).max(1) as usize];
                    let started = std::time::Instant::now();
                    let mut sent = 0u64;
                    while let Ok(n @ 1..) = up_in.read(&mut buf) {
                        if up_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let _ = up_out.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut down_in, &mut down_out);
                    let _ = down_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowLink { addr, stop }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop, which sees the flag.
        let _ = std::net::TcpStream::connect(&self.addr);
    }
}

/// `bits ARGS` on `env`'s store in a pseudo-terminal (util-linux
/// `script`), 120 columns wide, so it draws its progress bars: what it
/// wrote, escapes and all.
fn on_a_terminal(env: &Env, args: &[&str]) -> std::process::Child {
    let mut line = format!(
        "stty cols 120 rows 40; exec {BITS} --store '{}'",
        env.store.display()
    );
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env_remove("BITS_STORE")
        .env_remove("BITS_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script (a pseudo-terminal for the progress bars)")
}

/// The progress bars' frames in a terminal's output: each redraw, without
/// its escapes.
fn frames_of(output: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(output);
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() && c != '[' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split(['\r', '\n'])
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .collect()
}

/// A frame's rate ("1.82 MiB/s") in bytes a second.
fn rate_of(frame: &str) -> Option<f64> {
    let words: Vec<&str> = frame.split_whitespace().collect();
    let at = words.iter().position(|w| w.ends_with("B/s"))?;
    let unit = match words[at] {
        "B/s" => 1.0,
        "KiB/s" => 1024.0,
        "MiB/s" => 1024.0 * 1024.0,
        "GiB/s" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(words[at - 1].parse::<f64>().ok()? * unit)
}

/// Issue 17: "info, list, monitor, transfer --upload work for uploads as
/// they do for downloads (bytes sent, rate, ETA)". An upload through a
/// 2 MiB/s link to `bits serve`: while it runs, `info`/`list` (text and
/// JSON) show its total from the start and its bytes growing; `monitor`
/// on a terminal draws a bar with the total, a rate and an ETA, and says
/// how it ended on a pipe; `transfer --upload` draws the same bar.
#[test]
fn info_list_monitor_and_transfer_show_an_uploads_progress() {
    let env = Env::new();
    let root = env.tmp.path().join("served");
    std::fs::create_dir(&root).unwrap();
    let s = serve(&["--root", root.to_str().unwrap()]);
    let rate = 2u64 << 20;
    let link = SlowLink::to(&s.addr, rate);
    let total = 10u64 << 20;
    std::fs::write(env.path("big.bin"), content(total as usize, 6)).unwrap();
    let id = env
        .run(&["create", "--upload", "slow"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    env.add_file(&id, &format!("http://{}/up/big.bin", link.addr), "big.bin");
    // The total is the source's size, known before anything is sent.
    assert_eq!(env.info(&id)["bytes_total"], total);
    env.run(&["resume", &id]).ok();
    let monitor = on_a_terminal(&env, &["monitor", &id]);

    let started = std::time::Instant::now();
    let mut shown = Vec::new();
    let mut texts_checked = false;
    loop {
        let info = env.info(&id);
        assert_eq!(info["bytes_total"], total, "{info:#}");
        assert_eq!(info["files"][0]["bytes_total"], total, "{info:#}");
        let bytes = info["bytes_transferred"].as_u64().unwrap();
        assert_eq!(info["files"][0]["bytes_transferred"], bytes, "{info:#}");
        if info["state"] == "TRANSFERRED" {
            assert_eq!(bytes, total, "{info:#}");
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "never transferred: {info:#}"
        );
        if info["state"] == "TRANSFERRING" && bytes > 0 {
            shown.push(bytes);
            if !texts_checked && bytes >= 1 << 20 {
                texts_checked = true;
                // The other forms show the same progress (or a later one).
                let listed = env.run(&["list", "--json"]).ok().json();
                let job = listed
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|j| j["id"] == id.as_str())
                    .expect("the job is listed")
                    .clone();
                assert_eq!(job["bytes_total"], total, "{job:#}");
                let listed_bytes = job["bytes_transferred"].as_u64().unwrap();
                assert!((bytes..total).contains(&listed_bytes), "{job:#}");
                let text = env.run(&["info", &id]).ok().stdout;
                let line = text
                    .lines()
                    .find(|l| l.starts_with("progress:"))
                    .unwrap_or_else(|| panic!("{text}"));
                let sent: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                assert!(sent >= bytes && sent < total, "{line}");
                assert!(line.contains(&format!("/ {total} bytes, 0 / 1 files")), "{line}");
                let list = env.run(&["list"]).ok().stdout;
                let row = list
                    .lines()
                    .find(|l| l.starts_with(&id))
                    .unwrap_or_else(|| panic!("{list}"));
                assert!(row.contains(&format!("/{total}")), "{row}");
                assert!(!row.contains(&format!(" {total}/{total}")), "mid-transfer: {row}");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("shown while transferring: {shown:?}");
    assert!(texts_checked, "never seen mid-transfer past 1 MiB: {shown:?}");
    assert!(
        shown.windows(2).all(|w| w[0] <= w[1]),
        "never backwards: {shown:?}"
    );
    let mut values = shown.clone();
    values.dedup();
    assert!(values.len() >= 3, "the bytes grew in steps: {values:?}");

    // monitor on a terminal: a bar of the upload, with its rate and ETA.
    let out = monitor.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let frames = frames_of(&out.stdout);
    let moving: Vec<&String> = frames
        .iter()
        .filter(|f| f.contains("TRANSFERRING") && f.contains("/10.00 MiB") && !f.contains(" 0 B/"))
        .collect();
    assert!(!moving.is_empty(), "{frames:#?}");
    for f in &moving {
        assert!(f.starts_with("slow "), "{f}");
        assert!(f.contains(" ETA "), "{f}");
        assert!(rate_of(f).is_some(), "no rate: {f}");
    }
    // The rate once a few MiB went: about the link's (not far off, at
    // least, as an ETA needs).
    let last = moving.last().unwrap();
    let r = rate_of(last).unwrap();
    assert!(r > rate as f64 / 4.0 && r < rate as f64 * 4.0, "{last}");
    let end = frames.last().unwrap();
    assert!(
        end.contains("10.00 MiB/10.00 MiB") && end.contains("1/1 files TRANSFERRED"),
        "{end}"
    );
    // On a pipe it says how the job ended.
    let piped = env.run(&["monitor", &id]).ok();
    assert!(
        piped
            .stdout
            .contains(&format!("{id} TRANSFERRED {total}/{total} bytes slow")),
        "{piped:?}"
    );
    env.run(&["complete", &id]).ok();

    // transfer --upload on a terminal draws the same bar.
    let small = 4u64 << 20;
    std::fs::write(env.path("small.bin"), content(small as usize, 2)).unwrap();
    let source = env.path("small.bin");
    let url = format!("http://{}/up/small.bin", link.addr);
    let transfer = on_a_terminal(
        &env,
        &[
            "transfer",
            "--name",
            "sent",
            "--upload",
            source.to_str().unwrap(),
            &url,
        ],
    );
    let out = transfer.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let frames = frames_of(&out.stdout);
    let moving = frames
        .iter()
        .filter(|f| f.starts_with("sent ") && f.contains("/4.00 MiB") && !f.contains(" 0 B/"))
        .find(|f| rate_of(f).is_some_and(|r| r > 0.0) && f.contains(" ETA "));
    assert!(moving.is_some(), "{frames:#?}");
    assert_eq!(
        std::fs::read(root.join("up/small.bin")).unwrap().len() as u64,
        small
    );
}
