//! # bits-transport-openssl
//!
//! A [`bits_core::Transport`] that does TLS with OpenSSL (through the
//! `openssl` and `tokio-openssl` crates) on top of the shared HTTP plumbing
//! of `bits-http`. It honours **every** value of the BITS security flags
//! exactly: all 32 combinations of `ENABLE_CRL_CHECK` (0x01) and the four
//! `IGNORE_*` bits, so [`check_policy`] refuses nothing.
//!
//! It supplies only what is OpenSSL's own ([`Openssl`]: root parsing, the
//! handshake [`OpensslHandshake`] with its verify callback, CRL parsing and
//! signature checks, client certificate parsing, the policy check); the builder, the CRL cache and the
//! reconnect-after-download rounds, and the HTTP side are `bits_http`'s,
//! shared with the other backends.
//!
//! ```no_run
//! # async fn demo(pem: &[u8]) -> Result<(), bits_core::BitsError> {
//! use bits_core::{ConnectionPolicy, Request, SecurityFlags, Transport};
//! use bits_transport_openssl::OpensslTransport;
//!
//! let transport = OpensslTransport::builder().add_root_pem(pem)?.build()?;
//! let url = "https://127.0.0.1:8443/file".parse().unwrap();
//! let policy = ConnectionPolicy::new(SecurityFlags::new(SecurityFlags::ENABLE_CRL_CHECK)?);
//! let response = transport.send(Request::get(url, policy)).await?;
//! # let _ = response; Ok(()) }
//! ```
//!
//! ## How the flags are honoured
//! - A verify callback, per connection, sees every `X509_V_ERR_*` OpenSSL
//!   finds, one at a time, and accepts an error only when its category is
//!   covered by the flags: host name (62, 64) by 0x02, dates (9, 10) by
//!   0x04, unknown CA (2, 18, 19, 20, 21) by 0x08, usage (26) by 0x10.
//!   Revocation errors and everything else are never accepted.
//! - Ignoring an unknown CA does not ignore the dates of the untrusted top
//!   certificate, which OpenSSL 3 itself skips in a partial chain: the
//!   callback checks them.
//! - A refused handshake is classified from the callback's own record into
//!   the policy's errors (`0x80072F05`, `0x80072F06`, `0x80072F0D`,
//!   `0x80072F93`, `0x80072F8A`, `0x80072F19`), and anything else is
//!   `0x80072F8F`.
//! - With 0x01, every certificate of the chain but the root is checked
//!   against a CRL (`CRL_CHECK | CRL_CHECK_ALL`). CRLs come from the
//!   certificates' http CRL distribution points, are verified against the
//!   issuer's key, and are used and cached on disk while fresh. The first
//!   handshake tells which CRLs are needed; after downloading them the
//!   transport reconnects once per missing level.
//!
//! ## Security
//! - Each `IGNORE_*` flag relaxes exactly its own check; every other check
//!   still applies (a bad signature, a CA misuse, a revoked certificate
//!   always fail).
//! - A connection is pooled per certificate-flag value and TLS sessions are
//!   never resumed (no session cache, no tickets), so a connection verified
//!   under a relaxed policy never serves a stricter request.
//! - A CRL is used only when issued and signed by the certificate's issuer
//!   and fresh; one that is not is never cached. An unreachable, stale,
//!   unparsable or badly signed CRL fails with "revocation check failed".
//!   Without 0x01 no CRL is ever fetched.
//!
//! ## Client certificates
//! A job's client certificate (`docs/spec/http-options.md`, "Client
//! certificate") is loaded when it is set ([`Openssl`]'s
//! `load_client_certificate`) and again at each new connection:
//! - PEM: the first `CERTIFICATE` block is the leaf, the following ones
//!   its chain, sent after it as they come; the private key in the same
//!   file or in a file of its own, PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1
//!   (`BEGIN RSA PRIVATE KEY`), SEC1 (`BEGIN EC PRIVATE KEY`), or encrypted
//!   (`BEGIN ENCRYPTED PRIVATE KEY`, legacy `Proc-Type: 4,ENCRYPTED`)
//!   opened with the job's password; any key type OpenSSL signs with.
//! - PKCS#12 (`.p12`/`.pfx`, told by content) opened with the job's
//!   password (none: the empty password), leaf, key and CA certificates,
//!   with what OpenSSL's default provider decrypts (PBES2 AES with PBKDF2,
//!   3DES, SHA-1 and SHA-2 MACs). One that needs the legacy provider
//!   (RC2-40, old Windows exports) is `E_NOTIMPL`: re-export it with AES.
//!
//! Refused when set, the job unchanged: a missing file `0x80070002`; no
//! certificate, no key, or a key that is not the leaf's `0x80092004`; a
//! password that does not open it `0x80070056`; a key file its group or
//! others can read `E_ACCESSDENIED` (`bits_http::client_cert::read`). At
//! each new connection the files are read and parsed again, off the async
//! workers, before any byte is sent: gone is `0x80070002`, a different leaf
//! (SHA-1 thumbprint) is `0x80092004`, both fatal.
//!
//! The certificate is offered only to a server that asks (a
//! CertificateRequest). A server that demands one from a job without one
//! is `0x80072F0C`: TLS 1.3 alert `certificate_required`, or, after a
//! TLS 1.2 CertificateRequest we answered with nothing, `handshake_failure`
//! (OpenSSL servers) or a certificate alert (`bad_certificate`: Go). A
//! server that refuses the one offered (`unknown_ca`, `bad_certificate`,
//! …, or `handshake_failure` after it asked) is `0x80072F8F`. With
//! TLS 1.3 the server judges the certificate after the client's handshake
//! is over, so its alert is read with the response: the request was
//! written, but no server handles it (its TLS layer refused the
//! connection), and the read error is classified the same way
//! (`bits_http::TlsConnect::classify_io`). Connections are pooled per
//! policy, the certificate included, and sessions are never resumed, so a
//! connection made with one certificate (or none) never serves a job with
//! another.
//!
//! ## HTTP/2
//! Every handshake with an origin (direct, or inside a proxy's tunnel)
//! offers ALPN `h2` then `http/1.1` (`SSL_CTX_set_alpn_protos`), or
//! `http/1.1` alone under a policy that asks for it
//! (`ConnectionPolicy::http1_only`: a job of one file; `SSL_set_alpn_protos`);
//! where the server chooses `h2` (`SSL_get0_alpn_selected`) the connection
//! speaks HTTP/2, otherwise HTTP/1.1. ALPN touches no verification: the verify
//! callback, the CRL store and the client certificate are the same
//! whichever protocol is chosen.
//!
//! ## What it does not do
//! - OCSP, OCSP stapling, delta CRLs, CRLs over https or ldap (only http
//!   distribution points are followed; an https or ldap CDP alone means
//!   "revocation check failed").
//! - HTTP/2 over plain http (h2c); client certificates from a hardware
//!   token or an OpenSSL engine/provider URI (files only).
//! - Read the Windows or macOS system stores: the roots are OpenSSL's
//!   default verify paths (which honour `SSL_CERT_FILE` and
//!   `SSL_CERT_DIR`) plus those given to the builder.
//!
//! ## Why the defaults are what they are
//! System roots on, as every HTTP client; the CRL cache under the user's
//! cache directory so that it survives restarts as BITS' does; TLS 1.2
//! minimum.

#![deny(missing_docs)]

mod client_cert;
mod connector;
mod crl;
mod store;
mod transport;
mod verify;

pub use connector::{OpensslConnector, OpensslHandshake};
pub use transport::{check_policy, Openssl, OpensslTransport, OpensslTransportBuilder};
