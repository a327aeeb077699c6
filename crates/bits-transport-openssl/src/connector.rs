//! The TLS handshake: tokio-openssl under the verify policy of `verify`, and
//! the two-phase CRL flow of tls-mapping §2.5.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bits_core::{BitsError, ConnectionPolicy, SecurityFlags};
use bits_http::crl_cache::{crl_rounds, CrlRound, HandshakeFailure};
use bits_http::{BoxFuture, TlsConnect};
use openssl::ssl::{SslConnector, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode, SslVersion};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509CrlRef, X509};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::crl::{CachedCrl, CrlCache};
use crate::store;
use crate::verify::{self, Rejection, SharedRecord};

/// The TLS side of [`crate::OpensslTransport`]: one handshake per
/// connection, verifying the server under exactly the certificate bits of
/// the flags it is given.
///
/// Cloning is cheap and shares the CRL cache.
#[derive(Clone)]
pub struct OpensslConnector {
    inner: Arc<Inner>,
}

struct Inner {
    /// Context shared by every connection: roots, TLS 1.2+, ALPN
    /// http/1.1, no session cache (so no resumption across policies).
    connector: SslConnector,
    /// The caller's roots, for per-connection CRL stores.
    roots: Vec<X509>,
    /// Whether OpenSSL's default verify paths are trusted too.
    system_roots: bool,
    crls: CrlCache,
    /// How long one reconnect (after a CRL download) may take.
    reconnect_timeout: Duration,
}

impl fmt::Debug for OpensslConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpensslConnector")
            .field("roots", &self.inner.roots.len())
            .field("system_roots", &self.inner.system_roots)
            .field("crls", &self.inner.crls)
            .finish_non_exhaustive()
    }
}

/// Why one handshake failed.
struct Failure {
    record: Option<Rejection>,
    crl_needs: Vec<verify::CrlNeed>,
    /// OpenSSL's own words.
    ssl: String,
    /// The socket failed (an OS error such as a reset) rather than TLS or
    /// verification.
    io: bool,
}

impl HandshakeFailure for Failure {
    type CrlNeed = verify::CrlNeed;

    fn take_crl_needs(&mut self) -> Vec<verify::CrlNeed> {
        std::mem::take(&mut self.crl_needs)
    }

    /// The classification, from our own record (never from
    /// `verify_result`, which may name an error we ignored: pitfalls 3, 5).
    fn into_error(self) -> BitsError {
        match self.record {
            Some(rejection) => {
                tracing::debug!(
                    code = rejection.code,
                    depth = rejection.depth,
                    detail = %rejection.detail,
                    "certificate refused"
                );
                rejection.fault.to_error(&rejection.detail)
            }
            None if self.io => BitsError::ConnectionReset {
                reason: format!("during the TLS handshake: {}", self.ssl),
            },
            None => BitsError::SecureFailure { reason: self.ssl },
        }
    }
}

fn setup_error(e: impl fmt::Display) -> BitsError {
    BitsError::SecureFailure {
        reason: format!("TLS setup: {e}"),
    }
}

impl OpensslConnector {
    pub(crate) fn new(
        roots: Vec<X509>,
        system_roots: bool,
        crls: CrlCache,
        reconnect_timeout: Duration,
    ) -> Result<Self, BitsError> {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(setup_error)?;
        builder.set_cert_store(trust_store(&roots, system_roots)?);
        builder
            .set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(setup_error)?;
        builder.set_alpn_protos(b"\x08http/1.1").map_err(setup_error)?;
        // No client session cache, no tickets: a resumed session skips
        // verification, so none may cross policies (pitfall 9).
        builder.set_session_cache_mode(SslSessionCacheMode::OFF);
        builder.set_options(SslOptions::NO_TICKET);
        // Read what the socket holds into OpenSSL's buffer, not each
        // record's header and body with a syscall each.
        builder.set_read_ahead(true);
        Ok(OpensslConnector {
            inner: Arc::new(Inner {
                connector: builder.build(),
                roots,
                system_roots,
                crls,
                reconnect_timeout,
            }),
        })
    }

    /// The handshake under `flags`, with the CRL flow when 0x1 is set.
    async fn connect_tls(
        self,
        host: String,
        tcp: TcpStream,
        flags: SecurityFlags,
    ) -> Result<SslStream<TcpStream>, BitsError> {
        if !flags.crl_check() {
            return self
                .handshake(&host, tcp, flags, None)
                .await
                .map_err(Failure::into_error);
        }
        crl_rounds(tcp, self.inner.reconnect_timeout, |tcp, round| {
            self.crl_round(&host, tcp, flags, round)
        })
        .await
    }

    /// One handshake of the CRL flow with the fresh CRLs in its store, and
    /// the downloads of the CRLs it lacked.
    async fn crl_round(
        &self,
        host: &str,
        tcp: TcpStream,
        flags: SecurityFlags,
        round: usize,
    ) -> CrlRound<SslStream<TcpStream>> {
        let crls = self.inner.crls.fresh();
        let had: Vec<String> = crls.iter().map(|c| c.url.clone()).collect();
        // Loading the default verify paths reads files: off the worker.
        let (roots, system_roots) = (self.inner.roots.clone(), self.inner.system_roots);
        let store = match tokio::task::spawn_blocking(move || crl_store(&roots, system_roots, &crls)).await {
            Ok(Ok(store)) => store,
            Ok(Err(e)) => return CrlRound::Fail(e),
            Err(e) => return CrlRound::Fail(setup_error(e)),
        };
        let result = self.handshake(host, tcp, flags, Some(store)).await;
        CrlRound::after_handshake(result, host, round, async |needs| {
            self.inner.crls.obtain(needs, &had).await
        })
        .await
    }

    /// One handshake. `crl_store` replaces the verify store (roots + fresh
    /// CRLs, CRL_CHECK | CRL_CHECK_ALL) for CRL-checked connections: a new
    /// store per connection, since a store can never drop a CRL
    /// (pitfall 10).
    async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
        flags: SecurityFlags,
        crl_store: Option<X509Store>,
    ) -> Result<SslStream<TcpStream>, Failure> {
        let record = SharedRecord::default();
        let setup = |e: openssl::error::ErrorStack| Failure {
            record: None,
            crl_needs: Vec::new(),
            ssl: format!("TLS setup: {e}"),
            io: false,
        };
        let mut cfg = self.inner.connector.configure().map_err(setup)?;
        // SNI for names only and host check through X509_VERIFY_PARAM
        // (set1_host, or set1_ip for an IP) are `into_ssl`'s defaults.
        cfg.set_verify_hostname(true);
        cfg.set_use_server_name_indication(true);
        cfg.set_verify_callback(SslVerifyMode::PEER, verify::callback(flags, record.clone()));
        if let Some(store) = crl_store {
            cfg.param_mut()
                .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
                .map_err(setup)?;
            cfg.set_verify_cert_store(store).map_err(setup)?;
        }
        let ssl = cfg.into_ssl(host).map_err(setup)?;
        let mut stream = SslStream::new(ssl, tcp).map_err(setup)?;
        match Pin::new(&mut stream).connect().await {
            Ok(()) => Ok(stream),
            Err(e) => {
                let mut rec = record.lock();
                // A socket error (reset, broken pipe) is the network's
                // fault and transient, as a reset before TLS would be.
                let io = e.io_error().is_some();
                let crl_needs = std::mem::take(&mut rec.crl_needs);
                Err(Failure {
                    record: rec.rejection.take(),
                    crl_needs,
                    ssl: e.to_string(),
                    io,
                })
            }
        }
    }
}

impl TlsConnect for OpensslConnector {
    type Stream = SslStream<TcpStream>;

    fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
    ) -> BoxFuture<'static, Result<Self::Stream, BitsError>> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Box::pin(self.clone().connect_tls(host, tcp, policy.flags()))
    }
}

/// The trusted roots plus `crls`, checking the whole chain.
fn crl_store(roots: &[X509], system_roots: bool, crls: &[CachedCrl]) -> Result<X509Store, BitsError> {
    let mut builder = trust_builder(roots, system_roots)?;
    for crl in newest_per_issuer(crls) {
        store::add_crl(&mut builder, crl).map_err(setup_error)?;
    }
    builder
        .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
        .map_err(setup_error)?;
    Ok(builder.build())
}

/// One CRL per issuer, the most recent (latest lastUpdate): a store that
/// holds two CRLs of one issuer may use the older (openssl#17639).
fn newest_per_issuer(crls: &[CachedCrl]) -> Vec<&X509CrlRef> {
    let mut newest: Vec<(Vec<u8>, &X509CrlRef)> = Vec::new();
    for cached in crls {
        let crl: &X509CrlRef = &cached.crl;
        let Ok(issuer) = crl.issuer_name().to_der() else {
            continue;
        };
        match newest.iter_mut().find(|(name, _)| *name == issuer) {
            Some(slot) => {
                if crl.last_update() > slot.1.last_update() {
                    slot.1 = crl;
                }
            }
            None => newest.push((issuer, crl)),
        }
    }
    newest.into_iter().map(|(_, crl)| crl).collect()
}

/// A store builder with the trusted roots: the caller's, plus OpenSSL's
/// default verify paths (which honour `SSL_CERT_FILE` / `SSL_CERT_DIR`)
/// when `system_roots`.
fn trust_builder(roots: &[X509], system_roots: bool) -> Result<X509StoreBuilder, BitsError> {
    let mut builder = X509StoreBuilder::new().map_err(setup_error)?;
    if system_roots {
        builder.set_default_paths().map_err(setup_error)?;
    }
    for root in roots {
        builder.add_cert(root.clone()).map_err(setup_error)?;
    }
    Ok(builder)
}

fn trust_store(roots: &[X509], system_roots: bool) -> Result<X509Store, BitsError> {
    Ok(trust_builder(roots, system_roots)?.build())
}
