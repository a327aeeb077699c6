//! The few X.509 fields webpki does not expose, read with a minimal DER
//! reader: a certificate's http CRL distribution points, a CRL's
//! thisUpdate/nextUpdate and signed parts, and an SPKI's algorithm and key.
//!
//! Anything this reader does not understand is reported as `None` (or an
//! empty list), and the callers treat that as "cannot check", never as
//! "fine".

/// One TLV: its tag, its contents, and the whole encoding (tag, length,
/// contents).
#[derive(Clone, Copy, Debug)]
struct Tlv<'a> {
    tag: u8,
    contents: &'a [u8],
    whole: &'a [u8],
}

/// Splits the first TLV off `input`; `None` on malformed input (including
/// indefinite lengths and multi-byte tags, which DER certificates never use).
fn next(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let (contents, after) = rest.split_at(len);
    Some((
        Tlv {
            tag,
            contents,
            whole: &input[..header + len],
        },
        after,
    ))
}

/// Every TLV directly inside `input`; `None` if any is malformed.
fn children(mut input: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = next(input)?;
        out.push(tlv);
        input = rest;
    }
    Some(out)
}

/// The single TLV that is all of `input`, with tag `tag`.
fn only(input: &[u8], tag: u8) -> Option<Tlv<'_>> {
    let (tlv, rest) = next(input)?;
    (tlv.tag == tag && rest.is_empty()).then_some(tlv)
}

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// OID 2.5.29.15, id-ce-keyUsage.
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x0F];
/// OID 2.5.29.31, id-ce-cRLDistributionPoints.
const OID_CRL_DP: &[u8] = &[0x55, 0x1D, 0x1F];

/// The `http://` URIs of a certificate's CRL distribution points (full
/// names only; relative names, CRL issuers other than the certificate's
/// and other schemes are skipped). Empty when there are none or the
/// certificate cannot be read.
pub(crate) fn cdp_http_urls(cert_der: &[u8]) -> Vec<String> {
    cdp_urls(cert_der)
        .unwrap_or_default()
        .into_iter()
        .filter(|u| u.starts_with("http://"))
        .collect()
}

/// The extensions of a certificate as `(OID, value)` pairs (empty when it
/// has none); `None` when the certificate cannot be read.
fn extensions(cert_der: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let cert = only(cert_der, SEQUENCE)?;
    let tbs = *children(cert.contents)?.first()?;
    let fields = children(tbs.contents)?;
    // Extensions are [3] EXPLICIT, the last field when present.
    let Some(exts) = fields.iter().find(|t| t.tag == 0xA3) else {
        return Some(Vec::new());
    };
    let exts = only(exts.contents, SEQUENCE)?;
    let mut out = Vec::new();
    for ext in children(exts.contents)? {
        let parts = children(ext.contents)?;
        let (id, value) = match parts.as_slice() {
            [id, value] => (id, value),
            [id, critical, value] if critical.tag == BOOLEAN => (id, value),
            _ => return None,
        };
        if id.tag != OID || value.tag != OCTET_STRING {
            return None;
        }
        out.push((id.contents, value.contents));
    }
    Some(out)
}

/// Whether a leaf's keyUsage allows a TLS server (OpenSSL's sslserver
/// purpose: no keyUsage, or one with digitalSignature, keyEncipherment or
/// keyAgreement). `None` when the certificate cannot be read.
pub(crate) fn key_usage_allows_tls_server(cert_der: &[u8]) -> Option<bool> {
    let exts = extensions(cert_der)?;
    let Some((_, value)) = exts.iter().find(|(id, _)| *id == OID_KEY_USAGE) else {
        return Some(true);
    };
    let bits = only(value, BIT_STRING)?;
    let (_unused, bytes) = bits.contents.split_first()?;
    // Bit 0 digitalSignature (0x80), 2 keyEncipherment (0x20), 4
    // keyAgreement (0x08) of the first byte.
    Some(bytes.first().is_some_and(|b| b & (0x80 | 0x20 | 0x08) != 0))
}

/// Whether an issuing certificate's keyUsage allows signing certificates
/// (no keyUsage, or one with keyCertSign). `None` when it cannot be read.
pub(crate) fn key_usage_allows_cert_sign(cert_der: &[u8]) -> Option<bool> {
    let exts = extensions(cert_der)?;
    let Some((_, value)) = exts.iter().find(|(id, _)| *id == OID_KEY_USAGE) else {
        return Some(true);
    };
    let bits = only(value, BIT_STRING)?;
    let (_unused, bytes) = bits.contents.split_first()?;
    // Bit 5 keyCertSign (0x04) of the first byte.
    Some(bytes.first().is_some_and(|b| b & 0x04 != 0))
}

fn cdp_urls(cert_der: &[u8]) -> Option<Vec<String>> {
    let mut urls = Vec::new();
    for (id, value) in extensions(cert_der)? {
        if id != OID_CRL_DP {
            continue;
        }
        let points = only(value, SEQUENCE)?;
        for point in children(points.contents)? {
            for field in children(point.contents)? {
                // distributionPoint [0] → fullName [0] → GeneralNames.
                if field.tag != 0xA0 {
                    continue;
                }
                for name in children(field.contents)? {
                    if name.tag != 0xA0 {
                        continue;
                    }
                    for general in children(name.contents)? {
                        // uniformResourceIdentifier [6] IA5String.
                        if general.tag == 0x86 {
                            if let Ok(s) = std::str::from_utf8(general.contents) {
                                urls.push(s.to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    Some(urls)
}

/// A CRL's signed parts: the TBSCertList encoding, the signature
/// AlgorithmIdentifier's contents, and the signature bits.
pub(crate) struct CrlParts<'a> {
    pub(crate) tbs: &'a [u8],
    pub(crate) sig_alg: &'a [u8],
    pub(crate) signature: &'a [u8],
    /// thisUpdate, Unix seconds.
    pub(crate) this_update: i64,
    /// nextUpdate, Unix seconds, when present.
    pub(crate) next_update: Option<i64>,
}

/// Reads the parts of a DER CRL.
pub(crate) fn crl_parts(der: &[u8]) -> Option<CrlParts<'_>> {
    let crl = only(der, SEQUENCE)?;
    let parts = children(crl.contents)?;
    let [tbs, alg, sig] = parts.as_slice() else {
        return None;
    };
    if tbs.tag != SEQUENCE || alg.tag != SEQUENCE || sig.tag != BIT_STRING {
        return None;
    }
    let (&unused, signature) = sig.contents.split_first()?;
    if unused != 0 {
        return None;
    }
    let fields = children(tbs.contents)?;
    // version INTEGER OPTIONAL, signature, issuer, thisUpdate, nextUpdate?
    let skip = usize::from(fields.first()?.tag == 0x02);
    let this = fields.get(skip + 2)?;
    let this_update = time(this)?;
    let next_update = match fields.get(skip + 3) {
        Some(t) if t.tag == UTC_TIME || t.tag == GENERALIZED_TIME => Some(time(t)?),
        _ => None,
    };
    Some(CrlParts {
        tbs: tbs.whole,
        sig_alg: alg.contents,
        signature,
        this_update,
        next_update,
    })
}

/// An SPKI's AlgorithmIdentifier contents and its key bits. `spki` is the
/// whole SubjectPublicKeyInfo or, as webpki's `TrustAnchor` keeps it, only
/// its contents.
pub(crate) fn spki_parts(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let contents = match only(spki, SEQUENCE) {
        Some(seq) if children(seq.contents).is_some_and(|c| c.len() == 2) => seq.contents,
        _ => spki,
    };
    let parts = children(contents)?;
    let [alg, key] = parts.as_slice() else {
        return None;
    };
    if alg.tag != SEQUENCE || key.tag != BIT_STRING {
        return None;
    }
    let (&unused, bits) = key.contents.split_first()?;
    (unused == 0).then_some((alg.contents, bits))
}

/// A UTCTime or GeneralizedTime (`…Z` forms only, as RFC 5280 demands) as
/// Unix seconds.
fn time(t: &Tlv<'_>) -> Option<i64> {
    let s = std::str::from_utf8(t.contents).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match t.tag {
        UTC_TIME if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        GENERALIZED_TIME if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, min, sec) = (num(0)?, num(2)?, num(4)?, num(6)?, num(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, contents: &[u8]) -> Tlv<'_> {
        Tlv {
            tag,
            contents,
            whole: contents,
        }
    }

    #[test]
    fn times_are_unix_seconds() {
        assert_eq!(time(&tlv(UTC_TIME, b"700101000000Z")), Some(0));
        assert_eq!(time(&tlv(UTC_TIME, b"000301000000Z")), Some(951_868_800));
        assert_eq!(
            time(&tlv(GENERALIZED_TIME, b"20380119031408Z")),
            Some(2_147_483_648)
        );
        assert_eq!(time(&tlv(UTC_TIME, b"491231235959Z")), Some(2_524_607_999));
        assert_eq!(time(&tlv(UTC_TIME, b"700101000000+0100")), None);
        assert_eq!(time(&tlv(UTC_TIME, b"701301000000Z")), None);
    }

    #[test]
    fn garbage_has_no_parts() {
        assert!(crl_parts(b"hello").is_none());
        assert!(cdp_http_urls(b"\x30\x00").is_empty());
        assert!(spki_parts(b"\x30\x03\x02\x01\x00").is_none());
    }
}
