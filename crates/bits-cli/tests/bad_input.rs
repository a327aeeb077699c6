//! Every kind of bad input: exit 2, one stderr line naming the HRESULT,
//! and nothing changed.

mod support;

use support::Env;

/// A job with one file, and its `info` before the bad command.
fn job(env: &Env) -> (String, serde_json::Value) {
    let id = env.create("victim");
    env.run(&[
        "add-file",
        &id,
        "http://127.0.0.1:9/a",
        env.path("a").to_str().unwrap(),
    ])
    .ok();
    let info = env.info(&id);
    (id, info)
}

#[test]
fn unknown_and_ambiguous_jobs() {
    let env = Env::new();
    env.run(&["info", "nope"]).fails(2, "0x80200001");
    env.run(&["resume", "00000000-0000-0000-0000-000000000000"])
        .fails(2, "0x80200001");
    let a = env.create("twin");
    let b = env.create("twin");
    let r = env.run(&["suspend", "twin"]).fails(2, "0x80070057");
    assert!(r.stderr.contains(&a) && r.stderr.contains(&b), "{r:?}");
    // No daemon was started for bad input.
    assert!(env.daemon_pid().is_none());
}

#[test]
fn bad_urls_and_local_names() {
    let env = Env::new();
    let (id, before) = job(&env);
    let local = env.path("b");
    let local = local.to_str().unwrap();
    for url in ["not a url", "http://", "127.0.0.1/x"] {
        env.run(&["add-file", &id, url, local]).fails(2, "0x80070057");
    }
    for url in ["ftp://127.0.0.1/x", "file:///etc/passwd", "smb://h/x"] {
        env.run(&["add-file", &id, url, local]).fails(2, "0x80070057");
    }
    let missing = env.path("no/such/folder/x");
    env.run(&["add-file", &id, "http://127.0.0.1/x", missing.to_str().unwrap()])
        .fails(2, "0x80070057");
    env.run(&["add-file", &id, "http://127.0.0.1/x", env.data.to_str().unwrap()])
        .fails(2, "0x80070057");
    env.run(&["transfer", "http://127.0.0.1/x", missing.to_str().unwrap()])
        .fails(2, "0x80070057");
    env.run(&["transfer", "http://127.0.0.1/x"])
        .fails(2, "0x80070057");
    env.run(&["transfer", "http://127.0.0.1/x", local, "http://127.0.0.1/y"])
        .fails(2, "0x80070057");
    env.run(&["replace-remote-prefix", &id, "", "http://x/"])
        .fails(2, "0x80070057");
    env.run(&["replace-remote-prefix", &id, "http://127.0.0.1:9/", "gopher://x/"])
        .fails(2, "0x80070057");
    assert_eq!(env.info(&id), before);
    // transfer refused everything before creating a job
    let all = env.run(&["list", "--all", "--json"]).ok().json();
    assert_eq!(all.as_array().unwrap().len(), 1);
}

#[test]
fn bad_flags_numbers_and_names() {
    let env = Env::new();
    let (id, before) = job(&env);
    env.run(&["set-security-flags", &id, "zz"]).fails(2, "0x80070057");
    env.run(&["set-security-flags", &id, "-1"]).fails(2, "0x80070057");
    env.run(&["set-security-flags", &id, "0x0300"])
        .fails(2, "0x80004001");
    env.run(&["set-security-flags", &id, "0x10000"])
        .fails(2, "0x80004001");
    env.run(&["set-min-retry-delay", &id, "soon"])
        .fails(2, "0x80070057");
    env.run(&["set-no-progress-timeout", &id, "99999999999"])
        .fails(2, "0x80070057");
    env.run(&["set-priority", &id, "urgent"]).fails(2, "0x80070057");
    env.run(&["--backend", "gnutls", "create", "x"])
        .fails(2, "0x80070057");
    env.run(&["create", ""]).fails(2, "0x80070057");
    env.run(&["frobnicate"]).fails(2, "0x80070057");
    env.run(&[]).fails(2, "0x80070057");
    env.run(&["info"]).fails(2, "0x80070057");
    env.run(&[
        "transfer",
        "--security-flags",
        "0x0400",
        "http://127.0.0.1/x",
        "/tmp/x",
    ])
    .fails(2, "0x80004001");
    assert_eq!(env.info(&id), before);
}

#[cfg(feature = "native")]
#[test]
fn flags_the_native_backend_cannot_honour_are_refused() {
    let env = Env::new();
    let id = env
        .run(&["create", "--backend", "native", "n"])
        .ok()
        .stdout
        .trim()
        .to_string();
    env.run(&["set-security-flags", &id, "0x0002"]).ok();
    let before = env.info(&id);
    assert_eq!(before["backend"], "native");
    for flags in ["0x0004", "0x0008", "0x0001", "0x0010", "0x000E"] {
        env.run(&["set-security-flags", &id, flags])
            .fails(2, "0x80004001");
    }
    assert_eq!(env.info(&id), before);
    assert_eq!(env.run(&["get-security-flags", &id]).ok().stdout.trim(), "0x0002");
    env.run(&[
        "transfer",
        "--backend",
        "native",
        "--security-flags",
        "4",
        "https://127.0.0.1/x",
        env.path("x").to_str().unwrap(),
    ])
    .fails(2, "0x80004001");
    // `bits backends` says so before any transfer.
    let list = env.run(&["backends", "--json"]).ok().json();
    let native = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "native")
        .unwrap();
    let flags: Vec<u64> = native["supported_cert_flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        flags.contains(&0) && flags.contains(&2) && !flags.contains(&4),
        "{flags:?}"
    );
}

#[test]
fn wrong_states() {
    let env = Env::new();
    let id = env.create("empty");
    env.run(&["resume", &id]).fails(2, "0x80200003");
    assert_eq!(env.info(&id)["state"], "SUSPENDED");
    env.run(&["wait", &id]).fails(2, "0x80200002");
    env.run(&["cancel", &id]).ok();
    for args in [
        vec!["resume", id.as_str()],
        vec!["suspend", id.as_str()],
        vec!["cancel", id.as_str()],
        vec!["complete", id.as_str()],
        vec!["set-priority", id.as_str(), "low"],
        vec!["set-security-flags", id.as_str(), "0"],
        vec!["add-file", id.as_str(), "http://127.0.0.1/x", "/tmp/x"],
    ] {
        env.run(&args).fails(2, "0x80200002");
    }
    let upload = env
        .run(&["create", "--upload", "up"])
        .ok()
        .stdout
        .trim()
        .to_string();
    // An upload's LOCAL is the file to send: it must exist.
    std::fs::write(env.path("u"), b"to send").unwrap();
    env.run(&[
        "add-file",
        &upload,
        "http://127.0.0.1/u",
        env.path("u").to_str().unwrap(),
    ])
    .ok();
    env.run(&[
        "add-file",
        &upload,
        "http://127.0.0.1/v",
        env.path("v").to_str().unwrap(),
    ])
    .fails(2, "0x8020001C");
    env.run(&["complete", &upload]).fails(2, "0x80200002");
}

#[test]
fn a_store_from_a_newer_bits_is_refused_and_kept() {
    let env = Env::new();
    env.create("x");
    let db = env.store.join("jobs.db");
    set_user_version(&db, 7);
    let before = std::fs::read(&db).unwrap();
    let r = env.run(&["list"]).fails(2, "0x8007051A");
    assert!(r.stderr.contains("newer"), "{r:?}");
    env.run(&["create", "y"]).fails(2, "0x8007051A");
    env.run(&["daemon", "--foreground"]).fails(2, "0x8007051A");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

#[test]
fn a_damaged_store_is_refused_and_kept() {
    let env = Env::new();
    for i in 0..20 {
        env.create(&format!("job{i}"));
    }
    let db = env.store.join("jobs.db");
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 4096, "{len}");
    // Truncate in the middle of the file.
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(len / 2 + 100).unwrap();
    drop(f);
    let _ = std::fs::remove_file(env.store.join("jobs.db-wal"));
    let _ = std::fs::remove_file(env.store.join("jobs.db-shm"));
    let before = std::fs::read(&db).unwrap();
    let r = env.run(&["list"]).fails(2, "0x80070570");
    assert!(r.stderr.contains("damaged"), "{r:?}");
    env.run(&["info", "job3"]).fails(2, "0x80070570");
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // Not a database at all.
    std::fs::write(
        &db,
        b"this is not a database, but some text that is long enough to be a header",
    )
    .unwrap();
    env.run(&["list"]).fails(2, "0x80070570");
    assert!(db.exists());
}

/// Sets `PRAGMA user_version` by patching the header (bytes 60..64, big
/// endian), so this test needs no SQLite of its own.
fn set_user_version(db: &std::path::Path, v: u32) {
    // Checkpoint the WAL into the main file first: a daemon-less `list`
    // opens and closes the store, which checkpoints.
    let mut bytes = std::fs::read(db).unwrap();
    bytes[60..64].copy_from_slice(&v.to_be_bytes());
    std::fs::write(db, bytes).unwrap();
}

#[cfg(not(all(feature = "openssl", feature = "native")))]
#[test]
fn a_backend_left_out_of_this_build_is_refused_by_name() {
    let env = Env::new();
    let missing = if cfg!(feature = "openssl") {
        "native"
    } else {
        "openssl"
    };
    let r = env
        .run(&["--backend", missing, "create", "x"])
        .fails(2, "0x80004001");
    assert!(r.stderr.contains("built without"), "{r:?}");
    env.run(&["transfer", "--backend", missing, "http://127.0.0.1/x", "/tmp/x"])
        .fails(2, "0x80004001");
    assert_eq!(
        env.run(&["list", "--all", "--json"]).ok().json(),
        serde_json::json!([])
    );
}

#[test]
fn max_rates_that_are_no_rate() {
    let env = Env::new();
    let (id, before) = job(&env);
    for bad in ["lots", "0", "1.5X", "-1M", ""] {
        env.run(&["set-max-rate", &id, bad]).fails(2, "0x80070057");
    }
    assert_eq!(env.info(&id), before, "nothing changed");
    env.run(&["transfer", "--max-rate", "0", "http://127.0.0.1:9/a", "x"])
        .fails(2, "0x80070057");
    // Good ones: bytes per second in info, null when off.
    env.run(&["set-max-rate", &id, "1.5M"]).ok();
    assert_eq!(env.info(&id)["max_rate"], 1_572_864);
    let text = env.run(&["info", &id]).ok().stdout;
    assert!(text.contains("max rate:            1536K/s"), "{text}");
    env.run(&["set-max-rate", &id, "off"]).ok();
    assert_eq!(env.info(&id)["max_rate"], serde_json::Value::Null);
}
