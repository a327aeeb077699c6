//! # bits-transport-native
//!
//! A bits [`Transport`](bits_core::Transport) whose TLS is
//! [native-tls](https://docs.rs/native-tls): the platform's own stack
//! (OpenSSL on Linux, SChannel on Windows, Security.framework on macOS).
//! It supplies only what is its own ([`Native`]: root parsing, the
//! handshake [`NativeConnector`] and its flag check); the builder and the
//! HTTP side (pooling per policy, timeouts, streaming, no redirects) are
//! `bits_http`'s, shared with the other backends.
//!
//! ```no_run
//! # fn main() -> Result<(), bits_core::BitsError> {
//! use bits_core::{ConnectionPolicy, SecurityFlags, Transport};
//! use bits_transport_native::NativeTransport;
//!
//! let transport = NativeTransport::builder().build()?; // system roots
//! assert_eq!(transport.name(), "native");
//! let policy = |bits| SecurityFlags::new(bits).map(ConnectionPolicy::new);
//! transport.check_policy(&policy(0x0002)?)?; // honoured
//! assert!(transport.check_policy(&policy(0x0004)?).is_err()); // E_NOTIMPL
//! # Ok(()) }
//! ```
//!
//! ## What it honours
//! Of the 32 certificate-flag values (bits 0x1F of `SetSecurityFlags`),
//! exactly two, listed as data in [`SUPPORTED_CERT_FLAGS`]:
//!
//! | value | meaning | native-tls |
//! | --- | --- | --- |
//! | `0x00` | full verification | default connector |
//! | `0x02` | `IGNORE_CERT_CN_INVALID` | `danger_accept_invalid_hostnames(true)`: the chain, dates and usage are still checked |
//!
//! With either, any redirect policy (`0x0100`, `0x0200`) and
//! `ALLOW_HTTPS_TO_HTTP` (`0x0800`) work: bits-core applies those.
//! Every other value is refused by [`check_policy`] with `E_NOTIMPL`
//! (`0x80004001`) before any connection; [`refusal_reason`] says why in one
//! line.
//!
//! ## Errors
//! A failed handshake is classified into the policy's certificate errors
//! (`0x80072F05` date, `0x80072F06` host name, `0x80072F0D` unknown CA,
//! `0x80072F93` usage). native-tls has no typed verification result, so on
//! Linux the OpenSSL verify code is parsed out of the error's `Debug` text
//! and mapped with the same table as the openssl backend. Anything that
//! cannot be classified is `ERROR_WINHTTP_SECURE_FAILURE` (`0x80072F8F`),
//! never a success. The Windows (HRESULT) and macOS (`OSStatus`) mappings
//! exist but are only unit-tested on sample text: this project's tests run
//! on Linux.
//!
//! ## Client certificates
//! (`docs/spec/http-options.md`, "Client certificate".) It loads **PEM with
//! a PKCS#8 key**: the certificate, optionally its chain after it, and an
//! unencrypted `PRIVATE KEY`, in the same file or a file of its own
//! (native-tls's `Identity::from_pkcs8`). The TLS library checks the key
//! against the certificate when the job sets it: a key that is not the
//! leaf's is `CRYPT_E_NOT_FOUND`. Refused with `E_NOTIMPL` when set, with
//! the command that converts them:
//! - other key forms (`RSA PRIVATE KEY`, `EC PRIVATE KEY`, encrypted):
//!   native-tls takes only PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`);
//! - **PKCS#12**: native-tls would open it, but never tells which
//!   certificate it holds, and the job must keep that certificate's
//!   thumbprint and check it at every connection. Reading it another way
//!   needs a second PKCS#12 reader: not OpenSSL (this crate uses the
//!   platform's TLS only), and the one pure-Rust reader (`p12-keystore`)
//!   depends on pre-release RustCrypto crates in its current version (its
//!   last release on stable ones adds 29 crates, a second x509-parser
//!   among them, for one thumbprint). Convert with `openssl pkcs12
//!   -nodes`, or use the openssl backend.
//!
//! With a client certificate, every connection reads the files again,
//! checks the leaf's SHA-1 against the job's (`0x80070002` when gone,
//! `CRYPT_E_NOT_FOUND` when changed, both fatal) and gets a connector
//! (TLS context) of its own with the identity; the pools are keyed by the
//! certificate. native-tls does not say whether the server asked for a
//! certificate, so its alerts classify the failure, from OpenSSL's text on
//! Linux: `certificate required`, or `handshake failure` when none was
//! offered, is `0x80072F0C`; a certificate alert (`unknown ca`,
//! `bad certificate`, …) against the one offered is `0x80072F8F`. With
//! TLS 1.3 the verdict arrives as an alert on the first read after the
//! handshake; `classify_io` maps it the same way.
//!
//! ## HTTP/2
//! Every handshake offers ALPN `h2` then `http/1.1` (native-tls's `alpn`
//! feature: OpenSSL on Linux, SChannel, Security.framework), or `http/1.1`
//! alone under a policy that asks for it (`ConnectionPolicy::http1_only`: a
//! job of one file); where the server chooses `h2` the connection speaks
//! HTTP/2, otherwise HTTP/1.1.
//! A platform that cannot report the choice counts as none: HTTP/1.1,
//! quietly (a protocol choice, not a policy change). ALPN touches no
//! verification: the two contexts above are the same either way.
//!
//! ## What it does not do
//! - CRL checking (refused, see below); [`NativeTransportBuilder::crl_cache_dir`]
//!   is accepted and ignored.
//! - PKCS#12 client certificates; HTTP/2 over plain http (h2c).
//!
//! ## Why the defaults are what they are
//! The system roots are trusted unless [`NativeTransportBuilder::system_roots`]
//! says otherwise, as every platform client does; TLS 1.2 is the minimum, as
//! native-tls's own default.
//!
//! # Security
//! A transport that cannot relax exactly the check a flag names must refuse
//! the flag: accepting it with a broader relaxation would silently accept
//! certificates the job's owner never agreed to. native-tls offers two
//! relaxations, `danger_accept_invalid_hostnames` (exactly
//! `IGNORE_CERT_CN_INVALID`) and `danger_accept_invalid_certs` (everything),
//! so:
//!
//! - **`BG_SSL_ENABLE_CRL_CHECK` (0x01)** is refused: native-tls has no CRL
//!   API on any platform. On Windows, SChannel consults only its local
//!   cache and lets an unknown status through, which is not what the flag
//!   promises.
//! - **`BG_SSL_IGNORE_CERT_DATE_INVALID` (0x04)**, **`BG_SSL_IGNORE_UNKNOWN_CA`
//!   (0x08)** and **`BG_SSL_IGNORE_CERT_WRONG_USAGE` (0x10)** are refused,
//!   alone or in any combination: the only way native-tls can skip any of
//!   them is `danger_accept_invalid_certs`, which on every platform also
//!   skips the host-name check, the chain and the signatures. With
//!   `IGNORE_CERT_DATE_INVALID` alone, an expired certificate from an
//!   unknown CA must still fail; with that knob it would not.
//! - **`0x1E`** (all four ignores) is refused too, by team decision
//!   (`docs/spec/tls.md`, pitfall 20): `danger_accept_invalid_certs` also accepts
//!   bad signatures, CA-constraint violations and unknown critical
//!   extensions, so it is broader than the four flags together.
//!
//! Use the openssl backend for these values: it honours all 32 exactly.
//! `danger_accept_invalid_certs` is never called by this crate.
//!
//! One platform difference is narrower, never broader: on Windows, SChannel
//! rejects a certificate whose revocation is already in the local CRL cache
//! even without `ENABLE_CRL_CHECK` (`docs/spec/tls.md` §1.2).
//!
//! Each honoured value has its own connector (and TLS context; with a
//! client certificate, each connection), and
//! `bits_http::HttpTransport` keeps one connection pool per value, so a
//! connection or TLS session made under `0x02` never serves a `0x00`
//! request.

#![deny(missing_docs)]

mod classify;
mod client_cert;
mod connector;
mod policy;
mod transport;

pub use connector::NativeConnector;
pub use policy::{check_policy, refusal_reason, SUPPORTED_CERT_FLAGS};
pub use transport::{Native, NativeTransport, NativeTransportBuilder, NAME};
