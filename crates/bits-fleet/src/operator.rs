//! The operator's side (`bits fleet …`): publish a spec or a cancel, read
//! the states of a spec and the agents' records.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::push};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use serde_json::Value;
use uuid::Uuid;

use crate::nats::{self, Connect, Fleet, NatsError};
use crate::spec::{Rejection, Spec};

/// Where a spec goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every agent of a group.
    Group(String),
    /// One agent.
    Agent(String),
}

impl Target {
    fn subject(&self) -> String {
        match self {
            Target::Group(g) => nats::group_subject(g),
            Target::Agent(a) => nats::agent_subject(a),
        }
    }
}

/// Checks a spec document as an agent would parse it, giving it a fresh
/// id when it has none. Returns the document to publish and its spec.
pub fn prepare(bytes: &[u8]) -> Result<(Vec<u8>, Spec), Rejection> {
    let mut doc: Value =
        serde_json::from_slice(bytes).map_err(|e| Rejection(format!("not a job spec: {e}")))?;
    if let Some(obj) = doc.as_object_mut() {
        if !obj.contains_key("id") {
            obj.insert("id".into(), Value::String(Uuid::new_v4().to_string()));
        }
    }
    let bytes = serde_json::to_vec(&doc).map_err(|e| Rejection(e.to_string()))?;
    let spec = Spec::parse(&bytes)?;
    Ok((bytes, spec))
}

async fn open(connect: &Connect) -> Result<Fleet, NatsError> {
    let client = connect.connect().await?;
    tokio::time::timeout(Duration::from_secs(10), Fleet::open(client))
        .await
        .map_err(|_| NatsError::Unavailable("JetStream did not answer within 10 s".into()))?
}

/// Publishes a prepared spec to `target`; the stream has it when this
/// returns. Publishing the same spec to the same target again within the
/// stream's duplicate window (2 min) is stored once.
pub async fn submit(connect: &Connect, target: &Target, doc: Vec<u8>, id: Uuid) -> Result<(), NatsError> {
    let fleet = open(connect).await?;
    let subject = target.subject();
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{id}:{subject}").as_str());
    publish(&fleet.js, subject, headers, doc).await
}

/// Withdraws spec `id` from every agent that has it or gets it.
pub async fn cancel(connect: &Connect, id: Uuid) -> Result<(), NatsError> {
    let fleet = open(connect).await?;
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("cancel:{id}").as_str());
    publish(&fleet.js, nats::cancel_subject(id), headers, b"{}".to_vec()).await
}

async fn publish(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<(), NatsError> {
    js.publish_with_headers(subject, headers, body.into())
        .await
        .map_err(|e| NatsError::from("cannot publish", e))?
        .await
        .map_err(|e| NatsError::from("the stream did not store it", e))?;
    Ok(())
}

/// The latest state of spec `id` on every agent that reported one, by
/// agent name.
pub async fn status(connect: &Connect, id: Uuid) -> Result<Vec<Value>, NatsError> {
    let fleet = open(connect).await?;
    latest(&fleet, &fleet.states, &format!("{id}.*")).await
}

/// Every agent's record, by name.
pub async fn agents(connect: &Connect) -> Result<Vec<Value>, NatsError> {
    let fleet = open(connect).await?;
    latest(&fleet, &fleet.agents, ">").await
}

/// The latest value of each key of `bucket` matching `keys`, sorted by
/// key.
async fn latest(
    fleet: &Fleet,
    bucket: &async_nats::jetstream::kv::Store,
    keys: &str,
) -> Result<Vec<Value>, NatsError> {
    let filter = format!("$KV.{}.{keys}", bucket.name);
    let consumer = bucket
        .stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: fleet.js.client().new_inbox(),
            filter_subject: filter,
            deliver_policy: jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::from("cannot read the bucket", e))?;
    let mut out: Vec<(String, Value)> = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| NatsError::from("cannot read the bucket", e))?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let Ok(Some(Ok(m))) = next else {
            return Err(NatsError::Unavailable(
                "reading the bucket stopped before its end".into(),
            ));
        };
        let deleted = m
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| op.as_str() != "PUT");
        let pending = m.info().map(|i| i.pending).unwrap_or(0);
        if !deleted {
            let key = m
                .subject
                .as_str()
                .rsplit_once(&format!("$KV.{}.", bucket.name))
                .map(|(_, k)| k.to_string());
            if let (Some(key), Ok(v)) = (key, serde_json::from_slice::<Value>(&m.payload)) {
                out.push((key, v));
            }
        }
        if pending == 0 {
            break;
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out.into_iter().map(|(_, v)| v).collect())
}
