//! `bits agent`'s NATS side: consumes specs, stores them as local jobs
//! through its [`Host`], and writes the states the [`StateFeed`] gives it
//! to `BITS_STATE`.
//!
//! - **Intake**: one durable pull consumer per subject (the agent's own
//!   and each group's; nats-server 2.9 has one filter per consumer). A
//!   spec is parsed, checked ([`Spec::to_job`]), recorded in the registry
//!   (`<store>/fleet/<spec id>.json`, synced), stored by the host (a job
//!   with that id already there: nothing new), handed to the daemon, and
//!   only then acked. A malformed spec is acked and reported on
//!   `bits.rejected.<agent>`.
//! - **Cancel**: `bits.cancel.<spec id>` cancels the local job; the
//!   cancel is kept in the stream, so a spec whose cancel came first, or
//!   a job whose cancel came while NATS or the agent was down, is
//!   cancelled when seen.
//! - **States**: the latest state per job waits in a map until written;
//!   a new state is written at once, progress at most once a second per
//!   job; while NATS is away nothing is lost but intermediate values, and
//!   when it returns every pending state is written, latest first.
//! - **Restart**: the registry names the fleet jobs; each one's state is
//!   written again, and the daemon asked again to complete it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer::pull, AckKind};
use bits_core::{BitsError, ConnectionPolicy, Job, JobState};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::nats::{self, Connect, Fleet, NatsError};
use crate::spec::{make_folders, Policy, Spec};

/// How often an agent rewrites its record in `BITS_AGENTS`.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Progress of one job is written at most this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the agent needs from the daemon it runs in; implemented by the
/// `bits` command over its store and the daemon's request channel.
#[async_trait::async_trait]
pub trait Host: Send + Sync + 'static {
    /// Stores `job` unless the store has a job with its id: `true` when
    /// stored now.
    fn store(&self, job: &Job) -> Result<bool, String>;
    /// Job `id` as stored.
    fn load(&self, id: Uuid) -> Result<Option<Job>, String>;
    /// The agent's backend's `check_policy`.
    fn check(&self, policy: &ConnectionPolicy) -> Result<(), BitsError>;
    /// The job as `info --json` shows it.
    fn view(&self, job: &Job) -> Value;
    /// Has the daemon pick job `id` up; with `complete`, complete it as
    /// soon as it is TRANSFERRED.
    async fn run(&self, id: Uuid, complete: bool) -> Result<(), String>;
    /// Completes TRANSFERRED job `id`.
    async fn complete(&self, id: Uuid) -> Result<(), String>;
    /// Cancels job `id`.
    async fn cancel(&self, id: Uuid) -> Result<(), String>;
}

/// The daemon's side of the states: which jobs are fleet jobs, and a
/// channel for their views. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct StateFeed {
    ids: Arc<RwLock<HashSet<Uuid>>>,
    tx: mpsc::UnboundedSender<(Uuid, Value)>,
}

impl StateFeed {
    /// A feed and the receiver [`run`] takes.
    pub fn new() -> (StateFeed, mpsc::UnboundedReceiver<(Uuid, Value)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            StateFeed {
                ids: Arc::default(),
                tx,
            },
            rx,
        )
    }

    /// Whether job `id` is a fleet job (its saves are wanted).
    pub fn wants(&self, id: Uuid) -> bool {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).contains(&id)
    }

    /// Job `id` was saved as `view`.
    pub fn send(&self, id: Uuid, view: Value) {
        let _ = self.tx.send((id, view));
    }

    fn add(&self, id: Uuid) {
        self.ids.write().unwrap_or_else(|p| p.into_inner()).insert(id);
    }
}

/// An agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where NATS is.
    pub connect: Connect,
    /// The agent's name.
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// What specs may do.
    pub policy: Policy,
    /// The registry folder (`<store>/fleet`).
    pub registry: PathBuf,
    /// `bits`'s version, for `BITS_AGENTS`.
    pub version: String,
    /// The compiled-in backends, for `BITS_AGENTS`.
    pub backends: Vec<String>,
}

/// Runs the agent until the process ends. NATS unreachable is waited out.
pub async fn run(
    config: AgentConfig,
    host: Arc<dyn Host>,
    feed: StateFeed,
    mut saves: mpsc::UnboundedReceiver<(Uuid, Value)>,
) {
    let config = Arc::new(config);
    let mut publisher = Publisher::new(&config.name);
    // Jobs of the registry: states again, and their completion asked again.
    let mut known: HashMap<Uuid, bool> = HashMap::new();
    for spec in registry_load(&config.registry) {
        match host.load(spec.id) {
            Ok(Some(job)) => {
                feed.add(job.id);
                known.insert(job.id, spec.completes());
                publisher.offer(job.id, host.view(&job), true);
                resume_completion(&*host, &job, spec.completes()).await;
            }
            Ok(None) => {
                // Pruned from the store: forget it.
                let _ = std::fs::remove_file(registry_path(&config.registry, spec.id));
            }
            Err(e) => tracing::warn!(spec = %spec.id, "cannot read the job: {e}"),
        }
    }
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let client = connect(&config, events_tx).await;
    let fleet = loop {
        match Fleet::open(client.clone()).await {
            Ok(f) => break f,
            Err(e) => {
                tracing::warn!("NATS: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tracing::info!(agent = %config.name, groups = ?config.groups, "fleet agent connected");
    let intake = Arc::new(Intake {
        config: config.clone(),
        host: host.clone(),
        feed: feed.clone(),
        fleet: fleet.clone(),
        client: client.clone(),
    });
    let mut subjects = vec![(
        format!("{}__agent", config.name),
        nats::agent_subject(&config.name),
    )];
    for g in &config.groups {
        subjects.push((format!("{}__group__{g}", config.name), nats::group_subject(g)));
    }
    for (durable, subject) in subjects {
        tokio::spawn(intake.clone().consume(durable, subject));
    }
    tokio::spawn(intake.clone().cancels(known.keys().copied().collect()));
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            Some((id, view)) = saves.recv() => {
                let now_final = view.get("state").and_then(Value::as_str).is_some_and(is_final_text);
                publisher.offer(id, view, now_final);
            }
            Some(event) = events.recv() => {
                if matches!(event, async_nats::Event::Connected) {
                    tracing::info!("NATS connected: writing every pending state");
                    publisher.all_due();
                    tokio::spawn(intake.clone().recheck_cancels());
                }
                match event {
                    async_nats::Event::ServerError(e) => tracing::warn!("NATS: {e}"),
                    async_nats::Event::ClientError(e) => tracing::debug!("NATS: {e}"),
                    _ => {}
                }
            }
            _ = heartbeat.tick() => {
                let record = json!({
                    "name": config.name,
                    "groups": config.groups,
                    "version": config.version,
                    "backends": config.backends,
                    "root": config.policy.root,
                    "allow_flags": format!("0x{:04X}", config.policy.allow_flags),
                    "last_seen": nats::rfc3339(SystemTime::now()),
                    "last_seen_unix": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs(),
                });
                if let Err(e) = fleet.agents.put(&config.name, record.to_string().into()).await {
                    tracing::debug!("cannot write BITS_AGENTS: {e}");
                }
            }
            _ = tick.tick() => {}
        }
        publisher.flush(&fleet).await;
    }
}

fn is_final_text(state: &str) -> bool {
    matches!(state, "ACKNOWLEDGED" | "CANCELLED" | "ERROR" | "TRANSFERRED")
}

/// After a restart: the daemon holds no job for completion, so ask again.
async fn resume_completion(host: &dyn Host, job: &Job, complete: bool) {
    let r = match job.state() {
        JobState::Transferred if complete => host.complete(job.id).await,
        s if s.is_active() && complete => host.run(job.id, true).await,
        _ => Ok(()),
    };
    if let Err(e) = r {
        tracing::warn!(job = %job.id, "cannot hand the job to the daemon again: {e}");
    }
}

/// Connects, trying again until a server answers: every 2 s while none
/// does, every 10 s while one refuses the credentials or its certificate
/// is not trusted (logged as an error once per distinct reason, since
/// only its owner can fix it). Once connected the client reconnects by
/// itself.
async fn connect(
    config: &AgentConfig,
    events: mpsc::UnboundedSender<async_nats::Event>,
) -> async_nats::Client {
    let mut last_fatal = String::new();
    loop {
        let events = events.clone();
        let attempt = match config.connect.options(&format!("bits agent {}", config.name)) {
            Ok(options) => {
                let options = options.event_callback(move |event| {
                    let events = events.clone();
                    async move {
                        let _ = events.send(event);
                    }
                });
                config.connect.connect_with(options).await
            }
            Err(e) => Err(e),
        };
        let e = match attempt {
            Ok(client) => return client,
            Err(e) => e,
        };
        if e.is_fatal() {
            let text = e.to_string();
            if text != last_fatal {
                tracing::error!(
                    "{text} ({}); the daemon goes on with local jobs, trying again every 10 s",
                    e.hint()
                );
                last_fatal = text;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        } else {
            tracing::warn!("{e}; trying again");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// The latest state of each job not yet written, with when each was
/// last written.
struct Publisher {
    agent: String,
    pending: HashMap<Uuid, (Value, SystemTime, bool)>,
    written: HashMap<Uuid, (Instant, String)>,
}

impl Publisher {
    fn new(agent: &str) -> Publisher {
        Publisher {
            agent: agent.to_string(),
            pending: HashMap::new(),
            written: HashMap::new(),
        }
    }

    /// A save of job `id`: written at once when its state changed (or
    /// `now`), else as progress at most once a second.
    fn offer(&mut self, id: Uuid, mut view: Value, now: bool) {
        let state = view
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let changed = self.written.get(&id).is_none_or(|(_, s)| *s != state);
        let at = SystemTime::now();
        if let Some(obj) = view.as_object_mut() {
            obj.insert("agent".into(), Value::String(self.agent.clone()));
            obj.insert("timestamp".into(), Value::String(nats::rfc3339(at)));
        }
        let urgent = now || changed || self.pending.get(&id).is_some_and(|p| p.2);
        self.pending.insert(id, (view, at, urgent));
    }

    /// Every pending state is due (NATS came back).
    fn all_due(&mut self) {
        for p in self.pending.values_mut() {
            p.2 = true;
        }
        // What was written before the outage may have been lost with it.
        self.written.clear();
    }

    /// The jobs whose pending state is due at `now`, latest first: a new
    /// state at once, progress a second after the last write.
    fn due(&self, now: Instant) -> Vec<Uuid> {
        let mut due: Vec<(Uuid, SystemTime)> = self
            .pending
            .iter()
            .filter(|(id, (_, _, urgent))| {
                *urgent
                    || self
                        .written
                        .get(id)
                        .is_none_or(|(t, _)| now.duration_since(*t) >= PROGRESS_EVERY)
            })
            .map(|(id, (_, at, _))| (*id, *at))
            .collect();
        due.sort_by_key(|d| std::cmp::Reverse(d.1));
        due.into_iter().map(|(id, _)| id).collect()
    }

    /// Writes what is due, latest first; what fails stays pending.
    async fn flush(&mut self, fleet: &Fleet) {
        let due = self.due(Instant::now());
        for id in due {
            let Some((view, at, urgent)) = self.pending.remove(&id) else {
                continue;
            };
            let state = view
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let key = nats::state_key(id, &self.agent);
            let put = tokio::time::timeout(
                Duration::from_secs(5),
                fleet.states.put(&key, view.to_string().into()),
            );
            match put.await {
                Ok(Ok(_)) => {
                    self.written.insert(id, (Instant::now(), state));
                }
                Ok(Err(e)) => {
                    tracing::debug!(job = %id, "cannot write the state: {e}");
                    self.pending.insert(id, (view, at, urgent));
                    return;
                }
                Err(_) => {
                    tracing::debug!(job = %id, "writing the state timed out");
                    self.pending.insert(id, (view, at, urgent));
                    return;
                }
            }
        }
    }
}

/// What the consumers share.
struct Intake {
    config: Arc<AgentConfig>,
    host: Arc<dyn Host>,
    feed: StateFeed,
    fleet: Fleet,
    client: async_nats::Client,
}

impl Intake {
    /// Consumes `subject` with durable consumer `durable`, for ever.
    async fn consume(self: Arc<Self>, durable: String, subject: String) {
        loop {
            if let Err(e) = self.consume_once(&durable, &subject).await {
                tracing::warn!(%subject, "consumer: {e}; again in 1 s");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn consume_once(&self, durable: &str, subject: &str) -> Result<(), NatsError> {
        let consumer = self
            .fleet
            .stream
            .get_or_create_consumer(
                durable,
                pull::Config {
                    durable_name: Some(durable.to_string()),
                    filter_subject: subject.to_string(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ack_wait: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| NatsError::from("cannot create the consumer", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| NatsError::from("cannot consume", e))?;
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(%subject, "consumer: {e}");
                    continue;
                }
            };
            match self.take(&message.payload).await {
                Ok(()) => {
                    if let Err(e) = message.ack().await {
                        tracing::debug!("ack: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!(%subject, "spec not stored, delivered again later: {e}");
                    let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
                }
            }
        }
        Err(NatsError::Unavailable("the consumer's messages ended".into()))
    }

    /// Takes one spec: `Ok` when it is in the store (or was rejected);
    /// `Err` when it must be delivered again.
    async fn take(&self, payload: &[u8]) -> Result<(), String> {
        let spec = match Spec::parse(payload) {
            Ok(s) => s,
            Err(r) => {
                self.reject(payload, &r.0).await;
                return Ok(());
            }
        };
        let id = spec.id;
        if self.host.load(id)?.is_some() {
            // Delivered again (or to two of our subjects): the job exists.
            self.feed.add(id);
            return Ok(());
        }
        let host = self.host.clone();
        let mut job = match spec.to_job(&self.config.policy, |p| host.check(p)) {
            Ok(j) => j,
            Err(r) => {
                self.reject(payload, &r.0).await;
                return Ok(());
            }
        };
        if job.state() == JobState::Queued {
            if let Err(e) = make_folders(&job, &self.config.policy.root) {
                job.fail(&e, None, SystemTime::now());
            }
        }
        let cancelled = self.fleet.cancelled(id).await.map_err(|e| e.to_string())?;
        registry_record(&self.config.registry, &spec).map_err(|e| format!("cannot record the spec: {e}"))?;
        self.feed.add(id);
        if self.host.store(&job)? {
            tracing::info!(spec = %id, state = job.state().as_str(), "fleet job stored");
        }
        self.feed.send(id, self.host.view(&job));
        if cancelled {
            self.host.cancel(id).await?;
        } else if job.state() == JobState::Queued {
            self.host.run(id, spec.completes()).await?;
        }
        Ok(())
    }

    async fn reject(&self, payload: &[u8], reason: &str) {
        tracing::warn!("spec rejected: {reason}");
        let id = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string));
        let body = json!({
            "agent": self.config.name,
            "spec_id": id,
            "reason": reason,
            "timestamp": nats::rfc3339(SystemTime::now()),
        });
        if let Err(e) = self
            .client
            .publish(nats::rejected_subject(&self.config.name), body.to_string().into())
            .await
        {
            tracing::warn!("cannot report the rejection: {e}");
        }
    }

    /// Cancels the jobs whose cancel is on `bits.cancel.*`; at start, and
    /// again on every reconnect, looks for the cancels of `ids` missed.
    async fn cancels(self: Arc<Self>, ids: Vec<Uuid>) {
        let mut sub = loop {
            match self.client.subscribe("bits.cancel.*").await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!("cannot subscribe to cancels: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        for id in ids {
            self.cancel_if_withdrawn(id).await;
        }
        while let Some(m) = sub.next().await {
            let Some(id) = m.subject.as_str().strip_prefix("bits.cancel.") else {
                continue;
            };
            let Ok(id) = id.parse::<Uuid>() else { continue };
            if self.feed.wants(id) {
                self.cancel(id).await;
            }
        }
    }

    async fn recheck_cancels(self: Arc<Self>) {
        let ids: Vec<Uuid> = self
            .feed
            .ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        for id in ids {
            self.cancel_if_withdrawn(id).await;
        }
    }

    async fn cancel_if_withdrawn(&self, id: Uuid) {
        let active = matches!(self.host.load(id), Ok(Some(j)) if !j.state().is_final());
        if active && matches!(self.fleet.cancelled(id).await, Ok(true)) {
            self.cancel(id).await;
        }
    }

    async fn cancel(&self, id: Uuid) {
        match self.host.cancel(id).await {
            Ok(()) => tracing::info!(spec = %id, "fleet job cancelled"),
            Err(e) => tracing::info!(spec = %id, "cancel: {e}"),
        }
    }
}

fn registry_path(dir: &Path, id: Uuid) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Records `spec` (synced) so a restarted agent knows its fleet jobs.
fn registry_record(dir: &Path, spec: &Spec) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = registry_path(dir, spec.id);
    let tmp = dir.join(format!(".{}.tmp", spec.id));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(spec).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The specs of the registry (unreadable files skipped).
fn registry_load(dir: &Path) -> Vec<Spec> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| Spec::parse(&b).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: &str, bytes: u64) -> Value {
        json!({ "state": state, "bytes_transferred": bytes })
    }

    #[test]
    fn a_new_state_is_due_at_once_and_progress_once_a_second() {
        let mut p = Publisher::new("a1");
        let id = Uuid::new_v4();
        let t0 = Instant::now();
        p.offer(id, view("TRANSFERRING", 1), false);
        assert_eq!(p.due(t0), [id], "a first state");
        let (v, ..) = p.pending.remove(&id).unwrap();
        assert_eq!(v["agent"], "a1");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        p.written.insert(id, (t0, "TRANSFERRING".into()));
        // Progress: the latest waits until a second after the last write.
        for bytes in 2..10 {
            p.offer(id, view("TRANSFERRING", bytes), false);
        }
        assert!(p.due(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(p.due(t0 + PROGRESS_EVERY), [id]);
        assert_eq!(
            p.pending[&id].0["bytes_transferred"], 9,
            "only the latest is kept"
        );
        // A new state does not wait.
        p.offer(id, view("TRANSFERRED", 10), false);
        assert_eq!(p.due(t0 + Duration::from_millis(1)), [id]);
        // After an outage every pending state is due, latest first.
        let other = Uuid::new_v4();
        p.written
            .insert(other, (t0 + Duration::from_secs(5), "QUEUED".into()));
        std::thread::sleep(Duration::from_millis(2));
        p.offer(other, view("QUEUED", 0), false);
        assert_eq!(
            p.due(t0 + Duration::from_secs(5)),
            [id],
            "the same state just written waits"
        );
        p.all_due();
        assert_eq!(p.due(t0 + Duration::from_secs(5)), [other, id]);
    }
}
