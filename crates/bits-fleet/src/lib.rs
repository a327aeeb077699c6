//! # bits-fleet
//!
//! A fleet of `bits` agents on NATS JetStream (`fleet.md`): an operator
//! publishes a job spec to a group of agents or to one, each agent stores
//! it as a local job and runs it as its daemon runs any job, and every
//! agent's state of it lands in one key-value bucket.
//!
//! - [`spec`]: the spec document and how an agent turns it into a local
//!   job under its root and allowed flags.
//! - [`nats`]: subjects, the `BITS_JOBS` stream and the `BITS_STATE` /
//!   `BITS_AGENTS` buckets (created when missing), connecting: credentials
//!   ([`Auth`]: a `.creds` file, an nkey seed or a token, each read from a
//!   file) and TLS ([`Tls`]: verified in full, with no option to skip a
//!   check; roots and a client certificate).
//! - [`agent`]: `bits agent`'s NATS side: durable consumers, intake,
//!   cancels, states written at most once a second per job, and again
//!   when NATS returns.
//! - [`operator`]: `bits fleet submit | status | cancel | agents`.
//!
//! The daemon does not learn NATS: the agent talks to it through a
//! [`Host`] (store a job, ask for operations) and is told of the jobs'
//! saves through a [`StateFeed`], both wired by the `bits` command.

#![deny(missing_docs)]

pub mod agent;
pub mod nats;
pub mod operator;
pub mod spec;

pub use agent::{AgentConfig, Host, StateFeed};
/// The NATS client, for tests and embedders that speak to the same server.
pub use async_nats;
pub use nats::{Auth, Connect, NatsError, Tls};
pub use spec::{Policy, Rejection, Spec, DEFAULT_ALLOW_FLAGS};
