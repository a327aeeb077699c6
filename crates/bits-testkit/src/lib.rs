//! Test support for bits: a generated test PKI, real HTTP/TLS servers on 127.0.0.1, the conformance matrix
#![deny(missing_docs)]

pub mod http;
pub mod nats;

pub mod backend;
pub mod conformance;
pub mod crl;
pub mod pki;
pub mod proxies;
pub mod suites;
mod temp;
pub mod tls;
