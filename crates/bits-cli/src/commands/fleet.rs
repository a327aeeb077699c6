//! `bits agent` (the daemon with one more source of jobs: bits-fleet's
//! NATS side, wired through [`crate::daemon::Hooks`]) and `bits fleet …`
//! (the operator's side).

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::daemon::NetworkView;
use bits_core::{BitsError, ConnectionPolicy, Hresult, Job, SecurityFlags};
use bits_fleet::nats::{Auth, Tls};
use bits_fleet::operator::{self, Target};
use bits_fleet::{nats, AgentConfig, Connect, Host, NatsError, Policy, StateFeed};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::Ctx;
use crate::backend::Backend;
use crate::cli::{AgentArgs, ConnectArgs, FleetCommand, NatsArgs};
use crate::daemon::{self, Hooks};
use crate::error::Failure;
use crate::ipc::{Pending, Request};
use crate::ops::JobOp;
use crate::store::{self, Store};
use crate::view;

/// An agent whose record is older than this is shown as silent.
const SILENT_AFTER: u64 = 60;

fn bad(message: impl Into<String>, hint: impl Into<String>) -> Failure {
    Failure::bad_input(Hresult::E_INVALIDARG, message, hint)
}

/// A NATS option that is not one (checked before anything is done): exit 2.
fn option_failure(e: NatsError) -> Failure {
    let hint = match &e {
        NatsError::BadOption(m) if m.contains("URL") => "e.g. --nats nats://127.0.0.1:4222",
        _ => e.hint(),
    };
    Failure::bad_input(e.hresult(), e.to_string(), hint)
}

/// NATS did not serve an operator's command: exit 2 for an option found
/// bad, else 1 with what to do.
fn nats_failure(e: NatsError) -> Failure {
    if matches!(e, NatsError::NoFile(_) | NatsError::BadOption(_)) {
        return option_failure(e);
    }
    Failure::runtime(e.hresult(), e.to_string(), e.hint())
}

/// `bits agent`.
pub(super) fn agent(ctx: &Ctx, args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => host_name(),
    };
    if !nats::valid_name(&name) {
        return Err(bad(
            format!("agent name {name:?} is not letters, digits, - and _ (at most 64)"),
            "give one with --name",
        )
        .into());
    }
    for g in &args.groups {
        if !nats::valid_name(g) {
            return Err(bad(
                format!("group {g:?} is not letters, digits, - and _ (at most 64)"),
                "",
            )
            .into());
        }
    }
    let root = args
        .root
        .canonicalize()
        .ok()
        .filter(|r| r.is_dir())
        .ok_or_else(|| {
            bad(
                format!("--root {} is not a folder", args.root.display()),
                "create it first",
            )
        })?;
    let allow_flags = parse_mask(&args.allow_flags)?;
    let connect = connect(&args.nats, &args.connect);
    connect.check().map_err(option_failure)?;
    let backend = ctx.backend()?;
    store::ensure_dir(&ctx.dir)?;
    let config = AgentConfig {
        connect,
        name,
        groups: args.groups.clone(),
        policy: Policy {
            root,
            allow_flags,
            backend: backend.name().to_string(),
        },
        registry: ctx.dir.join("fleet"),
        version: env!("CARGO_PKG_VERSION").to_string(),
        backends: Backend::compiled().iter().map(|b| b.name().to_string()).collect(),
    };
    let (feed, saves) = StateFeed::new();
    let listener_feed = feed.clone();
    let dir = ctx.dir.clone();
    let hooks = Hooks {
        on_save: Some(Arc::new(move |job: &Job| {
            if listener_feed.wants(job.id) {
                listener_feed.send(job.id, view::job_json(job, &NetworkView::of(job, None)));
            }
        })),
        intake: Some(Box::new(move |requests| {
            std::thread::Builder::new()
                .name("fleet".into())
                .spawn(move || run_agent(&dir, config, backend, requests, feed, saves))
                .expect("a thread for the fleet agent");
        })),
    };
    // The default config file (the bandwidth schedule) applies as it does to `bits daemon`.
    Ok(daemon::run_with(&ctx.dir, None, hooks)?)
}

/// The agent's thread: its own runtime and store connection, so NATS never
/// holds the daemon's loop.
fn run_agent(
    dir: &Path,
    config: AgentConfig,
    backend: Backend,
    requests: mpsc::UnboundedSender<Pending>,
    feed: StateFeed,
    saves: mpsc::UnboundedReceiver<(Uuid, Value)>,
) {
    let store = match Store::open(dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("the fleet agent cannot open the store: {e}");
            return;
        }
    };
    let host = Arc::new(AgentHost {
        store: Mutex::new(store),
        requests,
        backend,
    });
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("the fleet agent cannot start its runtime: {e}");
            return;
        }
    };
    runtime.block_on(bits_fleet::agent::run(config, host, feed, saves));
}

/// The daemon as the agent sees it.
struct AgentHost {
    store: Mutex<Store>,
    requests: mpsc::UnboundedSender<Pending>,
    backend: Backend,
}

impl AgentHost {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn call(&self, request: Request) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((request, tx))
            .map_err(|_| "the daemon is stopping".to_string())?;
        let reply = rx.await.map_err(|_| "the daemon is stopping".to_string())?;
        reply.into_result().map(|_| ()).map_err(|f| f.to_string())
    }
}

#[async_trait::async_trait]
impl Host for AgentHost {
    fn store(&self, job: &Job) -> Result<bool, String> {
        let store = self.store();
        if store.get(job.id).map_err(|e| e.to_string())?.is_some() {
            return Ok(false);
        }
        match store.insert(job) {
            Ok(()) => Ok(true),
            // Stored meanwhile by another consumer of ours.
            Err(_) if matches!(store.get(job.id), Ok(Some(_))) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    fn load(&self, id: Uuid) -> Result<Option<Job>, String> {
        self.store().get(id).map_err(|e| e.to_string())
    }

    fn check(&self, policy: &ConnectionPolicy) -> Result<(), BitsError> {
        self.backend.check_policy(policy)
    }

    fn view(&self, job: &Job) -> Value {
        view::job_json(job, &NetworkView::of(job, None))
    }

    async fn run(&self, id: Uuid, complete: bool) -> Result<(), String> {
        if complete {
            self.call(Request::Transfer { id }).await
        } else {
            self.call(Request::Schedule).await
        }
    }

    async fn complete(&self, id: Uuid) -> Result<(), String> {
        self.call(Request::Job {
            id,
            op: JobOp::Complete,
        })
        .await
    }

    async fn cancel(&self, id: Uuid) -> Result<(), String> {
        self.call(Request::Job {
            id,
            op: JobOp::Cancel,
        })
        .await
    }
}

/// The host name up to its first dot, made a valid agent name.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let first = raw.trim().split('.').next().unwrap_or("");
    let name: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "agent".into()
    } else {
        name
    }
}

fn parse_mask(text: &str) -> Result<u32, Failure> {
    let t = text.trim();
    let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    };
    match n {
        Some(n) if n & !SecurityFlags::KNOWN_MASK == 0 => Ok(n),
        _ => Err(bad(
            format!(
                "--allow-flags {text:?} is not a mask of known security-flag bits (0x{:04X})",
                SecurityFlags::KNOWN_MASK
            ),
            "e.g. --allow-flags 0x0F01",
        )),
    }
}

/// `bits fleet …`.
pub(super) fn fleet(ctx: &Ctx, cmd: FleetCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(Hresult::E_FAIL, format!("cannot start the runtime: {e}"), ""))?;
    match cmd {
        FleetCommand::Submit {
            nats,
            group,
            agent,
            spec,
        } => {
            let target = match (group, agent) {
                (Some(g), _) => Target::Group(checked_name(g, "group")?),
                (None, Some(a)) => Target::Agent(checked_name(a, "agent")?),
                (None, None) => return Err(bad("give --group or --agent", "").into()),
            };
            let bytes = read_spec(&spec)?;
            let (doc, parsed) = operator::prepare(&bytes).map_err(|r| {
                bad(
                    format!("{}: {}", spec.display(), r.0),
                    "a spec has id, display_name, type, files [{remote_name, local_name}], security_flags, \
                     priority, min_retry_delay, no_progress_timeout, custom_headers, proxy, complete",
                )
            })?;
            let connect = checked(&nats)?;
            runtime
                .block_on(operator::submit(&connect, &target, doc, parsed.id))
                .map_err(nats_failure)?;
            if ctx.global.json {
                out!("{}", json!({ "id": parsed.id }));
            } else {
                out!("{}", parsed.id);
            }
        }
        FleetCommand::Status { nats, spec } => {
            let id = spec_id(&spec)?;
            let rows = runtime
                .block_on(operator::status(&checked(&nats)?, id))
                .map_err(nats_failure)?;
            print_status(ctx, id, &rows);
        }
        FleetCommand::Cancel { nats, spec } => {
            let id = spec_id(&spec)?;
            runtime
                .block_on(operator::cancel(&checked(&nats)?, id))
                .map_err(nats_failure)?;
            ctx.note(format!(
                "spec {id} withdrawn: every agent that has it cancels its job"
            ));
        }
        FleetCommand::Agents { nats } => {
            let rows = runtime
                .block_on(operator::agents(&checked(&nats)?))
                .map_err(nats_failure)?;
            print_agents(ctx, &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn connect(url: &str, args: &ConnectArgs) -> Connect {
    let auth = match (&args.creds, &args.nkey, &args.token_file) {
        (Some(f), _, _) => Auth::Creds(f.clone()),
        (None, Some(f), _) => Auth::Nkey(f.clone()),
        (None, None, Some(f)) => Auth::Token(f.clone()),
        (None, None, None) => Auth::None,
    };
    Connect {
        url: url.to_string(),
        auth,
        tls: Tls {
            ca: args.nats_ca.clone(),
            cert: args.nats_cert.clone(),
            key: args.nats_key.clone(),
        },
    }
}

/// The connection of a `bits fleet` command, its options checked.
fn checked(args: &NatsArgs) -> Result<Connect, Failure> {
    let c = connect(&args.nats, &args.connect);
    c.check().map_err(option_failure)?;
    Ok(c)
}

fn checked_name(name: String, what: &str) -> Result<String, Failure> {
    if nats::valid_name(&name) {
        Ok(name)
    } else {
        Err(bad(
            format!("{what} {name:?} is not letters, digits, - and _ (at most 64)"),
            "",
        ))
    }
}

fn read_spec(path: &Path) -> Result<Vec<u8>, Failure> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| bad(format!("cannot read the spec from standard input: {e}"), ""))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| {
        Failure::bad_input(
            Hresult(0x8007_0002),
            format!("cannot read the spec {}: {e}", path.display()),
            "",
        )
    })
}

/// A spec id given as itself or as the spec file that holds it.
fn spec_id(text: &str) -> Result<Uuid, Failure> {
    if let Ok(id) = text.parse::<Uuid>() {
        return Ok(id);
    }
    let bytes =
        std::fs::read(text).map_err(|_| bad(format!("{text:?} is neither a spec id nor a spec file"), ""))?;
    let spec = bits_fleet::Spec::parse(&bytes).map_err(|r| bad(format!("{text}: {}", r.0), ""))?;
    Ok(spec.id)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn print_status(ctx: &Ctx, id: Uuid, rows: &[Value]) {
    let mut summary: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for r in rows {
        *summary.entry(s(r, "state").to_string()).or_default() += 1;
    }
    if ctx.global.json {
        out!("{}", json!({ "spec_id": id, "agents": rows, "summary": summary }));
        return;
    }
    if rows.is_empty() {
        out!("no agent has reported spec {id} yet");
        return;
    }
    out!(
        "{:<20} {:<15} {:>7} {:>21}  {:<24}  ERROR",
        "AGENT",
        "STATE",
        "FILES",
        "BYTES",
        "UPDATED"
    );
    for r in rows {
        let files = format!(
            "{}/{}",
            n(r, "files_transferred").unwrap_or(0),
            n(r, "files_total").unwrap_or(0)
        );
        let total = n(r, "bytes_total").map_or("?".to_string(), |t| t.to_string());
        let bytes = format!("{}/{}", n(r, "bytes_transferred").unwrap_or(0), total);
        let error = r
            .get("error")
            .filter(|e| !e.is_null())
            .map(|e| format!("{} {}", s(e, "code"), s(e, "message")))
            .unwrap_or_default();
        out!(
            "{:<20} {:<15} {:>7} {:>21}  {:<24}  {}",
            s(r, "agent"),
            s(r, "state"),
            files,
            bytes,
            s(r, "timestamp"),
            error
        );
    }
    let parts: Vec<String> = summary.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let agents = if rows.len() == 1 { "agent" } else { "agents" };
    out!("{} {agents}: {}", rows.len(), parts.join(", "));
}

fn print_agents(ctx: &Ctx, rows: &[Value]) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let age = |r: &Value| n(r, "last_seen_unix").map(|t| now.saturating_sub(t));
    if ctx.global.json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                let silent = age(r).is_none_or(|a| a > SILENT_AFTER);
                let mut r = r.clone();
                if let Some(o) = r.as_object_mut() {
                    o.insert("silent".into(), json!(silent));
                }
                r
            })
            .collect();
        out!("{}", Value::Array(rows));
        return;
    }
    out!(
        "{:<20} {:<24} {:<8} {:<22} LAST SEEN",
        "AGENT",
        "GROUPS",
        "VERSION",
        "BACKENDS"
    );
    for r in rows {
        let list = |k: &str| {
            r.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default()
        };
        let seen = match age(r) {
            Some(a) if a > SILENT_AFTER => format!("{} (silent for {a} s)", s(r, "last_seen")),
            Some(a) => format!("{a} s ago"),
            None => "?".into(),
        };
        out!(
            "{:<20} {:<24} {:<8} {:<22} {}",
            s(r, "name"),
            list("groups"),
            s(r, "version"),
            list("backends"),
            seen
        );
    }
    let silent = rows
        .iter()
        .filter(|r| age(r).is_none_or(|a| a > SILENT_AFTER))
        .count();
    out!("{} agents, {silent} silent", rows.len());
}
