//! Which certificate-flag values native-tls can honour exactly, and why it
//! refuses the rest (`docs/spec/tls.md` §1.5, §7, pitfalls 1 and 20).

use bits_core::{BitsError, ConnectionPolicy, SecurityFlags};

/// The certificate-flag values (`SecurityFlags::cert_bits`, 0x00–0x1F) this
/// backend honours exactly: `0x00` (full verification) and `0x02`
/// (`IGNORE_CERT_CN_INVALID`, through native-tls's
/// `danger_accept_invalid_hostnames`). Every other value is refused with
/// `E_NOTIMPL`. Redirect bits (0x0100, 0x0200, 0x0800) are applied by
/// bits-core and accepted with either value.
pub const SUPPORTED_CERT_FLAGS: &[u32] = &[0x00, 0x02];

const CRL: &str = "native-tls has no CRL API on any platform \
                   (Windows only consults a cache and lets unknown status through)";
const ALL_FOUR: &str = "the four ignores together map only onto native-tls's \
                        danger_accept_invalid_certs, which also accepts bad signatures, \
                        CA misuse and unknown critical extensions: broader than the flags";
const DATE: &str = "native-tls can skip date checks only with danger_accept_invalid_certs, \
                    which also skips the host-name, chain and signature checks";
const CA: &str = "native-tls can accept an unknown CA only with danger_accept_invalid_certs, \
                  which also skips the date, host-name and signature checks";
const USAGE: &str = "native-tls can accept a wrong-usage certificate only with \
                     danger_accept_invalid_certs, which also skips every other check";

/// Why this backend refuses the certificate bits of `flags` (bits outside
/// 0x1F are ignored), in one line; `None` when it honours them.
///
/// For a single flag bit this names the reason for that bit; for a
/// combination, the reason of the first refused part (CRL first, then the
/// special all-four case, then DATE, CA, USAGE).
///
/// ```
/// use bits_transport_native::refusal_reason;
/// assert_eq!(refusal_reason(0x02), None);
/// assert!(refusal_reason(0x01).unwrap().contains("CRL"));
/// assert!(refusal_reason(0x04 | 0x02).unwrap().contains("date"));
/// ```
pub fn refusal_reason(flags: u32) -> Option<&'static str> {
    let cert = flags & SecurityFlags::CERT_MASK;
    if SUPPORTED_CERT_FLAGS.contains(&cert) {
        return None;
    }
    Some(if cert & SecurityFlags::ENABLE_CRL_CHECK != 0 {
        CRL
    } else if cert == SecurityFlags::IGNORE_MASK {
        ALL_FOUR
    } else if cert & SecurityFlags::IGNORE_CERT_DATE_INVALID != 0 {
        DATE
    } else if cert & SecurityFlags::IGNORE_UNKNOWN_CA != 0 {
        CA
    } else {
        // Only USAGE is left: every value without CRL, DATE or CA is 0x00,
        // 0x02, 0x10 or 0x12, and the first two are supported.
        USAGE
    })
}

/// The backend's [`bits_core::Transport::check_policy`], decided from the
/// policy alone (no transport needs building): `Ok` for certificate flags
/// in [`SUPPORTED_CERT_FLAGS`], `E_NOTIMPL` otherwise, and for pins or a
/// validator. A client certificate is accepted: only one the backend loads
/// (PEM with a PKCS#8 key) can have been set on a job, and the connection
/// reads it again (refusing any other form with `E_NOTIMPL` then too).
/// Yielding ([`ConnectionPolicy::yielding`]) is accepted: it is no TLS
/// property; bits-http's connector clamps the socket's window the same for
/// every backend.
pub fn check_policy(policy: &ConnectionPolicy) -> Result<(), BitsError> {
    if policy.checks_server() {
        return Err(BitsError::NotImplemented {
            what: "server certificate pins or a validator: native-tls shows only the leaf of the \
                   chain a server presents, and a pin may name any certificate of it; the openssl \
                   and rustls backends can"
                .into(),
        });
    }
    let flags = policy.flags();
    match refusal_reason(flags.bits()) {
        None => Ok(()),
        Some(why) => Err(BitsError::NotImplemented {
            what: format!(
                "the native backend cannot honour certificate flags 0x{:04X} exactly: {why}; \
                 the openssl backend can",
                flags.cert_bits()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_0x00_and_0x02_are_honoured() {
        let honoured: Vec<u32> = (0..=0x1F).filter(|b| refusal_reason(*b).is_none()).collect();
        assert_eq!(honoured, SUPPORTED_CERT_FLAGS);
    }

    #[test]
    fn each_refused_bit_has_its_own_reason() {
        assert_eq!(refusal_reason(0x01), Some(CRL));
        assert_eq!(refusal_reason(0x04), Some(DATE));
        assert_eq!(refusal_reason(0x08), Some(CA));
        assert_eq!(refusal_reason(0x10), Some(USAGE));
        assert_eq!(refusal_reason(0x1E), Some(ALL_FOUR));
        assert_eq!(refusal_reason(0x1F), Some(CRL));
        assert_eq!(refusal_reason(0x12), Some(USAGE));
        assert_eq!(refusal_reason(0x0C), Some(DATE));
        assert_eq!(refusal_reason(0x1A), Some(CA));
    }

    #[test]
    fn redirect_bits_do_not_matter() {
        for redirect in [0x000, 0x100, 0x200, 0x800, 0x900] {
            assert_eq!(refusal_reason(redirect), None);
            assert_eq!(refusal_reason(redirect | 0x02), None);
            assert_eq!(refusal_reason(redirect | 0x04), Some(DATE));
        }
    }

    #[test]
    fn refusal_is_e_notimpl_and_names_the_value_and_reason() {
        let policy = |bits| ConnectionPolicy::new(SecurityFlags::new(bits).unwrap());
        let e = check_policy(&policy(0x0904)).unwrap_err();
        assert_eq!(e.hresult().0, 0x8000_4001);
        let text = e.to_string();
        assert!(text.contains("0x0004"), "{text}");
        assert!(text.contains(DATE), "{text}");
        check_policy(&policy(0x0202)).unwrap();
    }
}
