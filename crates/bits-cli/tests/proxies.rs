//! Proxy settings through the real binary (`docs/spec/http-options.md`,
//! "Proxies"; `docs/spec/cli.md`, `set-proxy-settings`): set, read back and
//! shown by `info`; bad input refused with the job unchanged.

mod support;

use serde_json::json;
use support::Env;

/// A job with one file, SUSPENDED.
fn job_with_file(env: &Env, name: &str) -> String {
    let id = env.create(name);
    env.run(&[
        "add-file",
        &id,
        "https://127.0.0.1:9/file",
        env.path(name).to_str().unwrap(),
    ])
    .ok();
    id
}

fn get(env: &Env, id: &str) -> Vec<String> {
    env.run(&["get-proxy-settings", id])
        .ok()
        .stdout
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn set_get_and_info_round_trip() {
    let env = Env::new();
    let id = job_with_file(&env, "px");
    // The default: the daemon's environment.
    assert_eq!(get(&env, &id), ["preconfig"]);
    assert_eq!(
        env.info(&id)["proxy"],
        json!({"usage": "preconfig", "list": [], "bypass": []})
    );

    env.run(&[
        "set-proxy-settings",
        &id,
        "override",
        "http://127.0.0.1:3128;socks5h://[::1]:1080 proxy.example",
        "<local>;.example.org 10.0.0.0/8",
    ])
    .ok();
    let lines = get(&env, &id);
    assert_eq!(
        lines,
        [
            "override",
            "http://127.0.0.1:3128;socks5h://[::1]:1080;http://proxy.example:1080",
            "<local>;.example.org;10.0.0.0/8",
        ]
    );
    let expected = json!({
        "usage": "override",
        "list": ["http://127.0.0.1:3128", "socks5h://[::1]:1080", "http://proxy.example:1080"],
        "bypass": ["<local>", ".example.org", "10.0.0.0/8"],
    });
    assert_eq!(env.info(&id)["proxy"], expected);
    let text = env.run(&["info", &id]).ok().stdout;
    assert!(
        text.contains(
            "proxy:               override http://127.0.0.1:3128;socks5h://[::1]:1080;http://proxy.example:1080 bypass <local>;.example.org;10.0.0.0/8\n"
        ),
        "{text}"
    );

    // What get prints, set takes back: the same settings.
    let other = job_with_file(&env, "px2");
    env.run(&["set-proxy-settings", &other, &lines[0], &lines[1], &lines[2]])
        .ok();
    assert_eq!(env.info(&other)["proxy"], expected);

    // No bypass list: an empty third line.
    env.run(&["set-proxy-settings", &id, "override", "127.0.0.1:3128"])
        .ok();
    assert_eq!(get(&env, &id), ["override", "http://127.0.0.1:3128", ""]);

    env.run(&["set-proxy-settings", &id, "NO_PROXY"]).ok();
    assert_eq!(get(&env, &id), ["no_proxy"]);
    assert_eq!(
        env.info(&id)["proxy"],
        json!({"usage": "no_proxy", "list": [], "bypass": []})
    );
    assert!(env
        .run(&["info", &id])
        .ok()
        .stdout
        .contains("proxy:               no_proxy\n"));
    env.run(&["set-proxy-settings", &id, "preconfig"]).ok();
    assert_eq!(get(&env, &id), ["preconfig"]);

    // In every state but the final ones: a job in ERROR takes it.
    let r = env.run(&[
        "transfer",
        "--no-progress-timeout",
        "0",
        "--name",
        "failed",
        "http://127.0.0.1:9/nothing-listens",
        env.path("failed").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(env.info("failed")["state"], "ERROR");
    env.run(&["set-proxy-settings", "failed", "no_proxy"]).ok();
    assert_eq!(get(&env, "failed"), ["no_proxy"]);
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    let env = Env::new();
    let id = job_with_file(&env, "bad");
    env.run(&[
        "set-proxy-settings",
        &id,
        "override",
        "http://127.0.0.1:3128",
        "<local>",
    ])
    .ok();
    let before = env.info(&id)["proxy"].clone();
    for (args, code) in [
        (vec!["auto"], "0x80070057"),
        (vec!["override"], "0x80070057"),
        (vec!["override", " ; "], "0x80070057"),
        (vec!["preconfig", "http://127.0.0.1:3128"], "0x80070057"),
        (vec!["no_proxy", "", "<local>"], "0x80070057"),
        (vec!["override", "http://user:pw@127.0.0.1:3128"], "0x80070057"),
        (vec!["override", "http://127.0.0.1:3128/path"], "0x80070057"),
        (vec!["override", "127.0.0.1:0"], "0x80070057"),
        (vec!["override", "127.0.0.1:3128", "bad host!"], "0x80070057"),
        (vec!["override", "https://127.0.0.1:3128"], "0x80004001"),
        (vec!["override", "socks5://127.0.0.1:1080"], "0x80004001"),
        (
            vec!["override", "127.0.0.1:3128;socks4://127.0.0.1:1080"],
            "0x80004001",
        ),
    ] {
        let mut full = vec!["set-proxy-settings", id.as_str()];
        full.extend(args.iter().copied());
        env.run(&full).fails(2, code);
        assert_eq!(env.info(&id)["proxy"], before, "{args:?}");
    }
    // Too many arguments is clap's refusal, the same exit.
    env.run(&["set-proxy-settings", &id, "override", "a:1", "b", "c"])
        .fails(2, "0x80070057");
    env.run(&["set-proxy-settings", "no-such-job", "no_proxy"])
        .fails(2, "0x80200001");

    // A final job refuses it: BG_E_INVALID_STATE.
    env.run(&["cancel", &id]).ok();
    env.run(&["set-proxy-settings", &id, "no_proxy"])
        .fails(2, "0x80200002");
    assert_eq!(env.info(&id)["proxy"], before);

    // transfer refuses a bad --proxy before creating any job.
    for (args, code) in [
        (vec!["--proxy", "https://127.0.0.1:3128"], "0x80004001"),
        (vec!["--proxy", "http://127.0.0.1:99999"], "0x80070057"),
        (vec!["--proxy", "none", "--noproxy", "<local>"], "0x80070057"),
        (
            vec!["--proxy", "127.0.0.1:3128", "--noproxy", "bad host!"],
            "0x80070057",
        ),
        // --noproxy is the bypass list of --proxy.
        (vec!["--noproxy", "<local>"], "0x80070057"),
    ] {
        let mut full = vec!["transfer", "--name", "refused"];
        full.extend(args.iter().copied());
        let local = env.path("refused");
        full.extend(["https://127.0.0.1:9/x", local.to_str().unwrap()]);
        env.run(&full).fails(2, code);
        assert!(!local.exists());
    }
    let all = env.run(&["list", "--all", "--json"]).ok().json();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|j| j["display_name"] != "refused"),
        "{all:#}"
    );
}
