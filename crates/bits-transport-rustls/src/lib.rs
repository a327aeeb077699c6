//! # bits-transport-rustls
//!
//! A [`bits_core::Transport`] that does TLS with rustls 0.23 (the `ring`
//! provider: no cmake, no C toolchain beyond ring's) on top of the shared
//! HTTP plumbing of `bits-http`, verifying certificates with rustls-webpki
//! 0.103 driven directly rather than rustls' stock `WebPkiServerVerifier`,
//! because time, anchors, the EKU validator and CRLs must be explicit
//! inputs to honour the BITS security flags (`docs/spec/tls.md` §4).
//!
//! It supplies only what is rustls's own ([`Rustls`]: trust anchors, the
//! handshake [`RustlsHandshake`] with its verifier, CRL parsing and
//! signature checks, the policy check); the builder, the CRL cache and the
//! reconnect-after-download rounds, and the HTTP side are `bits_http`'s,
//! shared with the other backends.
//!
//! ```no_run
//! # async fn demo(pem: &[u8]) -> Result<(), bits_core::BitsError> {
//! use bits_core::{ConnectionPolicy, Request, SecurityFlags, Transport};
//! use bits_transport_rustls::RustlsTransport;
//!
//! let transport = RustlsTransport::builder().add_root_pem(pem)?.build()?;
//! let url = "https://127.0.0.1:8443/file".parse().unwrap();
//! let policy = ConnectionPolicy::new(SecurityFlags::new(SecurityFlags::ENABLE_CRL_CHECK)?);
//! let response = transport.send(Request::get(url, policy)).await?;
//! # let _ = response; Ok(()) }
//! ```
//!
//! ## How the flags are honoured
//! [`check_policy`] accepts all 32 certificate values. Each is honoured exactly,
//! except in the cases below, where the transfer **fails** with the fault's
//! error instead of succeeding (narrower than the OpenSSL backend, never
//! broader):
//! - `0x02` skips only the host-name check.
//! - `0x10` accepts any EKU, on every certificate of the path, and any
//!   keyUsage of the leaf (webpki checks no keyUsage; this backend checks
//!   the leaf's as OpenSSL's server purpose does: digitalSignature,
//!   keyEncipherment or keyAgreement, when the extension is present).
//! - `0x04` re-verifies at "now" clamped into the instants every
//!   certificate's validity allows. **Narrower:** a chain with no common
//!   instant (leaf 2025–2034 under an intermediate valid 2020–2021) fails
//!   with `0x80072F05`, where OpenSSL accepts it.
//! - `0x08` re-verifies with the presented certificates as extra anchors,
//!   then checks every presented certificate's own dates, constraints and
//!   EKU (webpki checks none of an anchor's). A leaf whose issuer is absent
//!   altogether gets those checks and the name check (its signature cannot
//!   be checked without the issuer, as with OpenSSL). **Narrower:** when a
//!   certificate named like the leaf's issuer is present yet no path forms
//!   (e.g. a bad signature), it fails with `0x80072F0D`.
//! - `0x01`: every certificate of the path to a trusted root but the root
//!   needs a fresh CRL from its http distribution point (webpki revocation
//!   options: whole chain, unknown status denied). Revoked → `0x80072F8A`;
//!   no usable CRL → `0x80072F19`. CRL freshness is judged against the real
//!   clock, even when `0x04` shifts the certificate-check time (pitfall 7).
//!   A path that needed `0x08` cannot have its CRLs verified → `0x80072F19`.
//! - Checks webpki leaves out and OpenSSL makes, covered by no flag, are
//!   made here and never ignored: every presented CA certificate's
//!   keyUsage must allow keyCertSign (`0x80072F8F` otherwise).
//! - Errors are classified from the verifier's own record, not from rustls'
//!   error, so the primary error of a multi-fault certificate is webpki's
//!   (dates, then EKU, then issuer, then signature/CRL, then name).
//!
//! ## Security
//! - A connection is pooled per certificate-flag value, and every handshake
//!   has its own `ClientConfig` with resumption disabled (a resumed session
//!   skips verification, pitfall 9), so a connection verified under a
//!   relaxed policy never serves a stricter request.
//! - A CRL is used only when parsed by webpki, issued by and signed with the
//!   key of the certificate's issuer, and fresh; one that is not is never
//!   cached. Without `0x01` no CRL is ever fetched.
//!
//! ## Client certificates
//! (`docs/spec/http-options.md`, "Client certificate".) It loads **PEM**: the
//! certificate, optionally its chain after it, and the private key in
//! PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
//! (`EC PRIVATE KEY`) form, in the same file or a file of its own; keys
//! ring signs with (RSA 2048–8192 bits, ECDSA P-256/P-384, Ed25519). The
//! key must be the leaf's (`CertifiedKey::keys_match`), else
//! `CRYPT_E_NOT_FOUND`. Refused with `E_NOTIMPL` when set on a job:
//! **PKCS#12** (rustls reads none, and no well-kept pure-Rust PKCS#12
//! reader is among this project's dependencies: convert with
//! `openssl pkcs12 -nodes`, or use the openssl backend), encrypted keys,
//! other key types.
//!
//! Every connection reads the files again and checks the leaf's SHA-1
//! against the job's (`0x80070002` when gone, `CRYPT_E_NOT_FOUND` when
//! changed, both fatal), and offers the certificate to any server that
//! asks. A server that asks and gets none: `0x80072F0C`; one that refuses
//! the certificate offered: `0x80072F8F`, naming its alert. With TLS 1.3
//! the server's verdict comes after the client's handshake is complete, as
//! an alert on the first read: `classify_io` maps it the same way (the
//! server has read no request by then). Each
//! handshake has its own `ClientConfig`, as for the flags, and the pools
//! are keyed by the certificate, so nothing made with one certificate (or
//! none) serves another.
//!
//! ## HTTP/2
//! Every handshake with an origin (direct, or inside a proxy's tunnel)
//! offers ALPN `h2` then `http/1.1` (`ClientConfig::alpn_protocols`), or
//! `http/1.1` alone under a policy that asks for it
//! (`ConnectionPolicy::http1_only`: a job of one file); where the server
//! chooses `h2` (`alpn_protocol`) the connection speaks HTTP/2, otherwise
//! HTTP/1.1. ALPN touches no verification: the
//! per-connection verifier and client-certificate resolver are the same
//! whichever protocol is chosen.
//!
//! ## What it does not do
//! - OCSP, OCSP stapling, delta CRLs, CRLs over https or ldap.
//! - PKCS#12 client certificates; HTTP/2 over plain http (h2c).
//!
//! ## Why the defaults are what they are
//! System roots on (`rustls-native-certs`, which honours `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` as OpenSSL does); the CRL cache where the OpenSSL backend
//! keeps it, in the same format; TLS 1.2 minimum.

#![deny(missing_docs)]

mod client_cert;
mod connector;
mod crl;
mod der;
mod transport;
mod verify;

pub use connector::{RustlsConnector, RustlsHandshake};
pub use transport::{check_policy, Rustls, RustlsTransport, RustlsTransportBuilder};
