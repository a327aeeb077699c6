//! The handshake: one native-tls connector per honoured certificate-flag
//! value, errors classified.

use std::fmt;

use bits_core::{BitsError, ConnectionPolicy};
use bits_http::{BoxFuture, TlsConnect};
use tokio::net::TcpStream;

use crate::classify::classify;
use crate::client_cert;
use crate::policy::check_policy;

/// [`TlsConnect`] on native-tls: the platform's TLS stack (OpenSSL on
/// Linux, SChannel on Windows, Security.framework on macOS).
///
/// It holds one connector per honoured value, each with its own TLS
/// context, so nothing (session cache included) is shared between
/// policies:
/// - `0x00`: full verification;
/// - `0x02`: `danger_accept_invalid_hostnames(true)`, which skips the
///   host-name check and nothing else.
///
/// Any other certificate value is refused with `E_NOTIMPL` before a byte
/// is sent (the transport's `check_policy` refuses it earlier still).
///
/// With a client certificate (`docs/spec/http-options.md`, "Client
/// certificate") the connector is built for the one connection: the files
/// read again, the leaf checked against the job's thumbprint, the
/// identity added to a context of its own, so no TLS session or
/// connection made with one certificate (or none) serves another.
///
/// A policy that asks for HTTP/1.1 only ([`ConnectionPolicy::http1_only`])
/// gets a connector offering `http/1.1` alone by ALPN; the others offer
/// `h2` then `http/1.1`. The verification is the same either way.
#[derive(Clone)]
pub struct NativeConnector {
    /// Without a client certificate, by `[ignore_cn][http1_only]`.
    cached: [[tokio_native_tls::TlsConnector; 2]; 2],
    trust: TrustConfig,
}

impl fmt::Debug for NativeConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeConnector").finish_non_exhaustive()
    }
}

/// Roots and trust settings shared by both connectors.
#[derive(Clone, Default)]
pub(crate) struct TrustConfig {
    pub(crate) roots: Vec<native_tls::Certificate>,
    pub(crate) system_roots: bool,
}

impl TrustConfig {
    /// Applies `SSL_CERT_FILE` / `SSL_CERT_DIR` (read through `env`) the
    /// way OpenSSL defines them: when either is set, it *replaces* the
    /// system store. native-tls on OpenSSL platforms would instead add the
    /// probed system directories to them, trusting more than the user set,
    /// so the store is built here: built-in roots off, the file's and the
    /// directories' certificates added. Unreadable files are skipped, as
    /// OpenSSL skips them. On Windows and macOS native-tls ignores these
    /// variables, and so does this.
    pub(crate) fn resolve(mut self, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> TrustConfig {
        if !self.system_roots || cfg!(any(target_os = "macos", target_os = "windows")) {
            return self;
        }
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let (file, dirs) = (var("SSL_CERT_FILE"), var("SSL_CERT_DIR"));
        if file.is_none() && dirs.is_none() {
            return self;
        }
        self.system_roots = false;
        let mut load = |path: &std::path::Path| {
            if let Ok(bytes) = std::fs::read(path) {
                if let Ok(certs) = native_tls::Certificate::stack_from_pem(&bytes) {
                    self.roots.extend(certs);
                }
            }
        };
        if let Some(file) = file {
            load(std::path::Path::new(&file));
        }
        if let Some(dirs) = dirs {
            // OpenSSL separates several directories with ':' on Unix.
            for dir in std::env::split_paths(&dirs) {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                paths.sort();
                for path in paths {
                    load(&path);
                }
            }
        }
        self
    }
}

impl NativeConnector {
    pub(crate) fn new(trust: &TrustConfig) -> Result<Self, BitsError> {
        let pair = |ignore_cn| -> Result<_, BitsError> {
            Ok([
                make(trust, ignore_cn, false, None).map_err(setup_error)?,
                make(trust, ignore_cn, true, None).map_err(setup_error)?,
            ])
        };
        Ok(NativeConnector {
            cached: [pair(false)?, pair(true)?],
            trust: trust.clone(),
        })
    }

    fn for_policy(&self, policy: &ConnectionPolicy) -> Result<tokio_native_tls::TlsConnector, BitsError> {
        check_policy(policy)?;
        let ignore_cn = match policy.flags().cert_bits() {
            0x00 => false,
            0x02 => true,
            // check_policy allows exactly SUPPORTED_CERT_FLAGS.
            other => {
                return Err(BitsError::Internal {
                    what: format!("native connector has no policy for 0x{other:04X}"),
                })
            }
        };
        if let Some(stored) = policy.client_certificate() {
            // Read at every connection: the files may be gone or changed
            // since the job chose the certificate.
            let identity = client_cert::load_for_connect(stored)?;
            // The TLS library refuses a key that is not the certificate's.
            return make(&self.trust, ignore_cn, policy.http1_only(), Some(identity))
                .map_err(|e| client_cert::mismatch(&stored.file, &e));
        }
        Ok(self.cached[usize::from(ignore_cn)][usize::from(policy.http1_only())].clone())
    }
}

fn make(
    trust: &TrustConfig,
    ignore_cn: bool,
    http1_only: bool,
    identity: Option<native_tls::Identity>,
) -> Result<tokio_native_tls::TlsConnector, native_tls::Error> {
    let mut b = native_tls::TlsConnector::builder();
    if let Some(identity) = identity {
        b.identity(identity);
    }
    b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    b.disable_built_in_roots(!trust.system_roots);
    for root in &trust.roots {
        b.add_root_certificate(root.clone());
    }
    // The only relaxation native-tls offers that is exactly one BITS flag.
    // danger_accept_invalid_certs is never used: it turns off every check
    // (`docs/spec/tls.md`, pitfall 1).
    b.danger_accept_invalid_hostnames(ignore_cn);
    // HTTP/2 where the server chooses it, else HTTP/1.1 (native-tls's
    // `alpn` feature, on every platform it supports); HTTP/1.1 alone when
    // the policy asks. ALPN is only the protocol: the verification set
    // above is the same either way.
    b.request_alpns(if http1_only {
        &["http/1.1"]
    } else {
        &["h2", "http/1.1"]
    });
    Ok(b.build()?.into())
}

fn setup_error(e: native_tls::Error) -> BitsError {
    BitsError::Internal {
        what: format!("cannot create a native-tls connector: {e}"),
    }
}

impl TlsConnect for NativeConnector {
    type Stream = tokio_native_tls::TlsStream<TcpStream>;

    fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
    ) -> BoxFuture<'static, Result<Self::Stream, BitsError>> {
        let connector = self.for_policy(policy);
        let offered = policy.client_certificate().is_some();
        let host = host.to_owned();
        Box::pin(async move {
            let connector = connector?;
            connector
                .connect(&host, tcp)
                .await
                .map_err(|e| classify(&e, offered))
        })
    }

    /// A server's alert about the client certificate after a TLS 1.3
    /// handshake, from OpenSSL's words (see the crate documentation,
    /// "Client certificates").
    fn classify_io(error: &std::io::Error) -> Option<BitsError> {
        client_cert::classify_io(error)
    }

    /// The protocol the server chose from the offer (`h2`, `http/1.1`);
    /// `None` when it chose none, or the platform cannot tell (an error),
    /// which is HTTP/1.1.
    fn negotiated_alpn(stream: &Self::Stream) -> Option<Vec<u8>> {
        stream.get_ref().negotiated_alpn().ok().flatten()
    }

    /// The leaf only: native-tls tells no more, so this backend refuses
    /// policies that check the server's chain (pins, validators).
    fn peer_chain(stream: &Self::Stream) -> Vec<Vec<u8>> {
        stream
            .get_ref()
            .peer_certificate()
            .ok()
            .flatten()
            .and_then(|c| c.to_der().ok())
            .into_iter()
            .collect()
    }
}

#[cfg(all(test, not(any(target_os = "macos", target_os = "windows"))))]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::*;

    fn pem() -> &'static [u8] {
        bits_testkit::pki::TestPki::shared().root_pem()
    }

    fn resolve(system: bool, env: &[(&str, &std::path::Path)]) -> TrustConfig {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        TrustConfig {
            roots: Vec::new(),
            system_roots: system,
        }
        .resolve(|name| env.get(name).cloned())
    }

    #[test]
    fn without_the_variables_the_system_store_stays() {
        let t = resolve(true, &[]);
        assert!(t.system_roots);
        assert!(t.roots.is_empty());
    }

    #[test]
    fn ssl_cert_file_and_dir_replace_the_system_store() {
        let dir = std::env::temp_dir().join(format!("bits-native-roots-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("file.pem"), pem()).unwrap();
        std::fs::write(dir.join("d/a.pem"), pem()).unwrap();
        std::fs::write(dir.join("d/junk"), "not a certificate").unwrap();

        let t = resolve(true, &[("SSL_CERT_FILE", &dir.join("file.pem"))]);
        assert!(!t.system_roots);
        assert_eq!(t.roots.len(), 1);

        let t = resolve(true, &[("SSL_CERT_DIR", &dir.join("d"))]);
        assert!(!t.system_roots);
        assert_eq!(t.roots.len(), 1);

        // A file that does not exist trusts nothing, rather than everything.
        let t = resolve(true, &[("SSL_CERT_FILE", &dir.join("missing.pem"))]);
        assert!(!t.system_roots);
        assert!(t.roots.is_empty());

        // system_roots(false) ignores the variables altogether.
        let t = resolve(false, &[("SSL_CERT_FILE", &dir.join("file.pem"))]);
        assert!(!t.system_roots);
        assert!(t.roots.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
