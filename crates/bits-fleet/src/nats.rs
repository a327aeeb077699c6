//! The NATS side shared by agents and operators: names of subjects,
//! stream and buckets, connecting, and creating what is missing.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use uuid::Uuid;

/// The stream of specs (and of cancels, so a cancel published while an
/// agent is down still reaches it).
pub const STREAM: &str = "BITS_JOBS";
/// Latest state per `<spec id>.<agent name>`.
pub const STATE_BUCKET: &str = "BITS_STATE";
/// Latest record per agent name.
pub const AGENTS_BUCKET: &str = "BITS_AGENTS";
/// How long the stream keeps a spec for agents that have not consumed it
/// yet (a new agent of a group gets the group's specs of this period).
pub const SPEC_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// The subject of a group's specs.
pub fn group_subject(group: &str) -> String {
    format!("bits.jobs.group.{group}")
}

/// The subject of one agent's specs.
pub fn agent_subject(agent: &str) -> String {
    format!("bits.jobs.agent.{agent}")
}

/// The subject that withdraws spec `id`.
pub fn cancel_subject(id: Uuid) -> String {
    format!("bits.cancel.{id}")
}

/// Where an agent reports the specs it could not parse.
pub fn rejected_subject(agent: &str) -> String {
    format!("bits.rejected.{agent}")
}

/// The `BITS_STATE` key of an agent's state of spec `id`.
pub fn state_key(id: Uuid, agent: &str) -> String {
    format!("{id}.{agent}")
}

/// Whether `name` can be an agent or group name: one NATS subject token
/// and a consumer name (letters, digits, `-`, `_`; at most 64).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// How to reach NATS.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// `nats://host:port` (or `tls://`), several separated by commas.
    pub url: String,
    /// A `.creds` file (JWT and nkey seed).
    pub creds: Option<PathBuf>,
}

/// Why NATS did not answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NatsError(pub String);

impl NatsError {
    pub(crate) fn from(what: &str, e: impl std::fmt::Display) -> NatsError {
        NatsError(format!("{what}: {e}"))
    }
}

impl Connect {
    /// The client options: credentials, and a quick retry when the server
    /// comes back (at most 2 s between attempts).
    pub(crate) async fn options(&self, name: &str) -> Result<async_nats::ConnectOptions, NatsError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64).saturating_mul(100).clamp(100, 2000))
            });
        if let Some(creds) = &self.creds {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| NatsError(format!("cannot read the credentials {}: {e}", creds.display())))?;
        }
        Ok(options)
    }

    /// The server addresses.
    ///
    /// # Errors
    /// A URL that is not one.
    pub fn addrs(&self) -> Result<Vec<async_nats::ServerAddr>, NatsError> {
        self.url
            .split(',')
            .map(|u| {
                u.trim()
                    .parse::<async_nats::ServerAddr>()
                    .map_err(|e| NatsError(format!("bad NATS URL {u:?}: {e}")))
            })
            .collect()
    }

    /// Connects once (an operator's command): fails when no server
    /// answers within 5 s.
    pub async fn connect(&self) -> Result<async_nats::Client, NatsError> {
        let addrs = self.addrs()?;
        let options = self.options("bits fleet").await?;
        options
            .connect(addrs)
            .await
            .map_err(|e| NatsError::from(&format!("cannot connect to NATS at {}", self.url), e))
    }
}

/// The stream and the buckets, created when missing (as found otherwise).
#[derive(Debug, Clone)]
pub struct Fleet {
    /// JetStream.
    pub js: jetstream::Context,
    /// `BITS_JOBS`.
    pub stream: stream::Stream,
    /// `BITS_STATE`.
    pub states: kv::Store,
    /// `BITS_AGENTS`.
    pub agents: kv::Store,
}

impl Fleet {
    /// Finds or creates the stream and the buckets.
    pub async fn open(client: async_nats::Client) -> Result<Fleet, NatsError> {
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec!["bits.jobs.>".into(), "bits.cancel.>".into()],
                max_age: SPEC_MAX_AGE,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::from("cannot open the stream BITS_JOBS", e))?;
        let states = bucket(&js, STATE_BUCKET).await?;
        let agents = bucket(&js, AGENTS_BUCKET).await?;
        Ok(Fleet {
            js,
            stream,
            states,
            agents,
        })
    }

    /// Whether spec `id` was withdrawn (`bits.cancel.<id>` is in the
    /// stream).
    pub async fn cancelled(&self, id: Uuid) -> Result<bool, NatsError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&cancel_subject(id))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(NatsError::from("cannot look for a cancel", e)),
        }
    }
}

async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, NatsError> {
    if let Ok(kv) = js.get_key_value(name).await {
        return Ok(kv);
    }
    // The bucket's stream as `create_key_value` makes it, made here: that
    // call first reads the account's info, which this client cannot parse
    // from nats-server 2.9.
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::from(&format!("cannot create the bucket {name}"), e))?;
    js.get_key_value(name)
        .await
        .map_err(|e| NatsError::from(&format!("cannot open the bucket {name}"), e))
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-12-03T05:42:28.123Z`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_names() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_796_276_548_123);
        assert_eq!(rfc3339(t), "2026-12-03T05:42:28.123Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert!(valid_name("web-01_a"));
        for bad in ["", "a.b", "a*", "a b", ">", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
