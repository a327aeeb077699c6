//! [`ConnectionPolicy`]: everything a connection is made under, so that a
//! pooled connection or TLS session serves only requests of the same policy.

use std::fmt;

use crate::flags::SecurityFlags;

/// What a connection is made under: today the certificate part of the
/// job's security flags; client certificates, pins, a proxy route and
/// credentials join it as they come.
///
/// A transport keys its connection pools (and any TLS session cache) by
/// the whole value, hands it to its TLS handshake, and refuses, in
/// [`crate::Transport::check_policy`], every value it cannot honour exactly.
/// Two requests under equal policies may share a connection; under
/// different ones, never.
///
/// # Security
/// The redirect bits of the flags are not part of it: redirects are the
/// engine's, and no connection depends on them.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnectionPolicy {
    flags: SecurityFlags,
}

impl ConnectionPolicy {
    /// The policy of `flags`: their certificate part
    /// ([`SecurityFlags::cert_part`]).
    pub const fn new(flags: SecurityFlags) -> ConnectionPolicy {
        ConnectionPolicy {
            flags: flags.cert_part(),
        }
    }

    /// This policy with the certificate part of `flags` instead of its own.
    #[must_use]
    pub const fn with_flags(mut self, flags: SecurityFlags) -> ConnectionPolicy {
        self.flags = flags.cert_part();
        self
    }

    /// The certificate flags the server is verified under (CRL check and
    /// the four ignores; never a redirect bit).
    pub const fn flags(&self) -> SecurityFlags {
        self.flags
    }
}

/// Displays as `flags 0x0004`.
impl fmt::Display for ConnectionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flags {}", self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_certificate_part_of_the_flags_counts() {
        let report = SecurityFlags::new(0x0104).unwrap();
        let silent = SecurityFlags::new(0x0004).unwrap();
        assert_eq!(ConnectionPolicy::new(report), ConnectionPolicy::new(silent));
        assert_eq!(ConnectionPolicy::new(report).flags().bits(), 0x0004);
        assert_ne!(
            ConnectionPolicy::new(silent),
            ConnectionPolicy::new(SecurityFlags::DEFAULT)
        );
        let changed = ConnectionPolicy::default().with_flags(SecurityFlags::new(0x0A01).unwrap());
        assert_eq!(changed.flags().bits(), 0x0001);
        assert_eq!(changed.to_string(), "flags 0x0001");
    }
}
