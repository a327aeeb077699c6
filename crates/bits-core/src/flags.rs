//! Security flags of `IBackgroundCopyJobHttpOptions::SetSecurityFlags`, with
//! the exact values of `docs/spec/policy.md`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::BitsError;

/// The job's HTTP security flags: certificate checks to relax, CRL checking
/// and the redirect policy.
///
/// A value of this type is always valid: it holds no unknown bit and its
/// redirect-policy field is one of the three defined policies. Whether a
/// given transport honours it is a separate question
/// ([`crate::Transport::check_policy`]).
///
/// # Security
/// Every `IGNORE_*` bit relaxes exactly one certificate check and nothing
/// else; a transport that cannot relax exactly that check refuses the value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct SecurityFlags(u32);

impl SecurityFlags {
    /// `BG_SSL_ENABLE_CRL_CHECK`: check revocation of the server certificate.
    pub const ENABLE_CRL_CHECK: u32 = 0x0001;
    /// `BG_SSL_IGNORE_CERT_CN_INVALID`: accept a host-name mismatch.
    pub const IGNORE_CERT_CN_INVALID: u32 = 0x0002;
    /// `BG_SSL_IGNORE_CERT_DATE_INVALID`: accept an expired or not-yet-valid certificate.
    pub const IGNORE_CERT_DATE_INVALID: u32 = 0x0004;
    /// `BG_SSL_IGNORE_UNKNOWN_CA`: accept a chain that ends in an untrusted root.
    pub const IGNORE_UNKNOWN_CA: u32 = 0x0008;
    /// `BG_SSL_IGNORE_CERT_WRONG_USAGE`: accept a certificate without serverAuth.
    pub const IGNORE_CERT_WRONG_USAGE: u32 = 0x0010;
    /// `BG_HTTP_REDIRECT_POLICY_ALLOW_SILENT`: follow redirects, keep the remote name.
    pub const REDIRECT_POLICY_ALLOW_SILENT: u32 = 0x0000;
    /// `BG_HTTP_REDIRECT_POLICY_ALLOW_REPORT`: follow, the remote name becomes the final URL.
    pub const REDIRECT_POLICY_ALLOW_REPORT: u32 = 0x0100;
    /// `BG_HTTP_REDIRECT_POLICY_DISALLOW`: a redirect puts the job in ERROR.
    pub const REDIRECT_POLICY_DISALLOW: u32 = 0x0200;
    /// `BG_HTTP_REDIRECT_POLICY_MASK`: the bits that hold the redirect policy.
    pub const REDIRECT_POLICY_MASK: u32 = 0x0700;
    /// `BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP`: an https URL may redirect to http.
    pub const REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP: u32 = 0x0800;

    /// The bits that concern certificate verification (CRL and the four ignores).
    pub const CERT_MASK: u32 = 0x001F;
    /// The four `IGNORE_*` bits.
    pub const IGNORE_MASK: u32 = 0x001E;
    /// Every bit that may be set at all.
    pub const KNOWN_MASK: u32 =
        Self::CERT_MASK | Self::REDIRECT_POLICY_MASK | Self::REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP;

    /// The default: full verification, no CRL check, silent redirects, no https→http.
    pub const DEFAULT: SecurityFlags = SecurityFlags(0);

    /// Validates a raw value: unknown bits, or a redirect policy other than
    /// 0x000/0x100/0x200, are refused with `E_NOTIMPL` (0x80004001).
    pub fn new(bits: u32) -> Result<Self, BitsError> {
        if bits & !Self::KNOWN_MASK != 0 {
            return Err(BitsError::NotImplemented {
                what: format!(
                    "security flags 0x{bits:04X} set unknown bits 0x{:04X}",
                    bits & !Self::KNOWN_MASK
                ),
            });
        }
        match bits & Self::REDIRECT_POLICY_MASK {
            Self::REDIRECT_POLICY_ALLOW_SILENT
            | Self::REDIRECT_POLICY_ALLOW_REPORT
            | Self::REDIRECT_POLICY_DISALLOW => Ok(SecurityFlags(bits)),
            other => Err(BitsError::NotImplemented {
                what: format!("redirect policy 0x{other:04X} in security flags 0x{bits:04X} is not defined"),
            }),
        }
    }

    /// Parses decimal (`256`) or `0x` hex (`0x0100`, case-insensitive), then
    /// validates as [`SecurityFlags::new`]. Text that is not a number is
    /// `E_INVALIDARG`.
    pub fn parse(text: &str) -> Result<Self, BitsError> {
        let t = text.trim();
        let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            u32::from_str_radix(hex, 16)
        } else {
            t.parse::<u32>()
        };
        let bits = parsed.map_err(|_| BitsError::InvalidArg {
            what: format!("security flags {text:?} are not a decimal or 0x-hex number"),
        })?;
        Self::new(bits)
    }

    /// The raw value.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `mask` is set.
    pub const fn contains(self, mask: u32) -> bool {
        self.0 & mask == mask
    }

    /// `BG_SSL_ENABLE_CRL_CHECK` is set.
    pub const fn crl_check(self) -> bool {
        self.contains(Self::ENABLE_CRL_CHECK)
    }

    /// The certificate-verification part of the value (bits 0x001F).
    pub const fn cert_bits(self) -> u32 {
        self.0 & Self::CERT_MASK
    }

    /// The flags with only their certificate-verification part: what a
    /// connection's TLS depends on.
    pub const fn cert_part(self) -> SecurityFlags {
        SecurityFlags(self.cert_bits())
    }

    /// The redirect policy.
    pub const fn redirect_policy(self) -> RedirectPolicy {
        match self.0 & Self::REDIRECT_POLICY_MASK {
            Self::REDIRECT_POLICY_ALLOW_REPORT => RedirectPolicy::AllowReport,
            Self::REDIRECT_POLICY_DISALLOW => RedirectPolicy::Disallow,
            _ => RedirectPolicy::AllowSilent,
        }
    }

    /// `BG_HTTP_REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP` is set.
    pub const fn allow_https_to_http(self) -> bool {
        self.contains(Self::REDIRECT_POLICY_ALLOW_HTTPS_TO_HTTP)
    }
}

impl TryFrom<u32> for SecurityFlags {
    type Error = BitsError;
    fn try_from(bits: u32) -> Result<Self, BitsError> {
        Self::new(bits)
    }
}

impl From<SecurityFlags> for u32 {
    fn from(f: SecurityFlags) -> u32 {
        f.0
    }
}

impl FromStr for SecurityFlags {
    type Err = BitsError;
    fn from_str(s: &str) -> Result<Self, BitsError> {
        Self::parse(s)
    }
}

/// Displays as `0x` and four upper-case hex digits, as `bitsadmin` does.
impl fmt::Display for SecurityFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.0)
    }
}

impl fmt::Debug for SecurityFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecurityFlags(0x{:04X})", self.0)
    }
}

/// What a download job does when a server redirects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedirectPolicy {
    /// Follow; the file's remote name stays (the default).
    AllowSilent,
    /// Follow; the remote name becomes the final URL.
    AllowReport,
    /// The job goes to ERROR with `HRESULT_FROM_WIN32(status)`; the remote
    /// name becomes the URL it was redirected to.
    Disallow,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<u32, u32>) {
        let got = SecurityFlags::parse(text)
            .map(|f| f.bits())
            .map_err(|e| e.hresult().0);
        assert_eq!(got, expected, "parsing {text:?}");
    }

    #[test]
    fn parse_valid_values() {
        check("0", Ok(0));
        check("0x0000", Ok(0));
        check("31", Ok(0x1F));
        check("0x001F", Ok(0x1F));
        check("0x1f", Ok(0x1F));
        check("0X1F", Ok(0x1F));
        check("256", Ok(0x100));
        check("0x0200", Ok(0x200));
        check("0x0900", Ok(0x900));
        check("0x0A1F", Ok(0xA1F));
        check(" 4 ", Ok(4));
    }

    #[test]
    fn parse_refuses_unknown_bits_and_bad_policies_with_e_notimpl() {
        for bad in [
            "0x0300",
            "0x0400",
            "0x0500",
            "0x0600",
            "0x0700",
            "0x0020",
            "0x1000",
            "0x80000000",
            "64",
        ] {
            check(bad, Err(0x8000_4001));
        }
    }

    #[test]
    fn parse_refuses_text_with_e_invalidarg() {
        for bad in [
            "",
            "x",
            "0x",
            "0xZZ",
            "-1",
            "1.5",
            "0b1",
            "4294967296",
            "0x100000000",
        ] {
            check(bad, Err(0x8007_0057));
        }
    }

    #[test]
    fn every_valid_value_round_trips() {
        let mut n = 0;
        for bits in 0..0x2000u32 {
            if let Ok(f) = SecurityFlags::new(bits) {
                n += 1;
                assert_eq!(SecurityFlags::parse(&f.to_string()).unwrap(), f);
                assert_eq!(SecurityFlags::parse(&bits.to_string()).unwrap(), f);
            }
        }
        // 32 certificate combinations × 3 policies × 2 (https→http).
        assert_eq!(n, 32 * 3 * 2);
    }

    #[test]
    fn display_is_0x_and_four_hex_digits() {
        assert_eq!(SecurityFlags::new(0).unwrap().to_string(), "0x0000");
        assert_eq!(SecurityFlags::new(0x1F).unwrap().to_string(), "0x001F");
        assert_eq!(SecurityFlags::new(0x900).unwrap().to_string(), "0x0900");
    }

    #[test]
    fn accessors() {
        let f = SecurityFlags::new(0x0905).unwrap();
        assert!(f.crl_check());
        assert!(f.contains(SecurityFlags::IGNORE_CERT_DATE_INVALID));
        assert!(!f.contains(SecurityFlags::IGNORE_UNKNOWN_CA));
        assert_eq!(f.cert_bits(), 0x5);
        assert_eq!(f.redirect_policy(), RedirectPolicy::AllowReport);
        assert!(f.allow_https_to_http());
        assert_eq!(
            SecurityFlags::DEFAULT.redirect_policy(),
            RedirectPolicy::AllowSilent
        );
        assert_eq!(
            SecurityFlags::new(0x200).unwrap().redirect_policy(),
            RedirectPolicy::Disallow
        );
    }

    #[test]
    fn serde_refuses_invalid_values() {
        assert!(serde_json::from_str::<SecurityFlags>("768").is_err());
        assert_eq!(serde_json::from_str::<SecurityFlags>("256").unwrap().bits(), 256);
        assert_eq!(
            serde_json::to_string(&SecurityFlags::new(0x200).unwrap()).unwrap(),
            "512"
        );
    }
}
