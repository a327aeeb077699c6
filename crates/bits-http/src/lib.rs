//! Shared HTTP plumbing for bits transports: hyper-util client, pooling per policy, streaming bodies
#![deny(missing_docs)]
