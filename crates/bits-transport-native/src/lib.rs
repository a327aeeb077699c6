//! bits Transport on native-tls: the platform TLS stack, exact or refused
#![deny(missing_docs)]
