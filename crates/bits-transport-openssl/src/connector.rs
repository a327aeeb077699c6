//! The TLS handshake: tokio-openssl under the verify policy of `verify`,
//! with the fresh CRLs in a store of its own when the policy checks them.
//! The two-phase CRL flow around it is `bits_http::crl_cache::CrlConnector`.

use std::fmt;
use std::pin::Pin;

use bits_core::{BitsError, ClientCertificate, ConnectionPolicy};
use bits_http::crl_cache::{CrlConnector, CrlHandshake, CrlRequest, FailedHandshake};
use openssl::error::ErrorStack;
use openssl::ssl::{SslConnector, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode, SslVersion};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509CrlRef, X509};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::client_cert::{self, Identity};
use crate::crl::{CachedCrl, Issuer};
use crate::store;
use crate::verify::{self, CrlNeed, SharedRecord};

/// The ALPN protocols offered, in wire form (a length byte before each),
/// most preferred first: `h2`, `http/1.1`.
const ALPN_OFFER: &[u8] = b"\x02h2\x08http/1.1";

/// The offer under a policy that asks for HTTP/1.1 only
/// ([`ConnectionPolicy::http1_only`]).
const ALPN_HTTP1: &[u8] = b"\x08http/1.1";

/// The TLS side of [`crate::OpensslTransport`]: [`OpensslHandshake`] with
/// the CRL cache and the reconnect-after-download flow of bits-http.
pub type OpensslConnector = CrlConnector<OpensslHandshake>;

/// One OpenSSL handshake per connection, verifying the server under
/// exactly the certificate bits of the policy it is given.
pub struct OpensslHandshake {
    /// Context shared by every connection: roots, TLS 1.2+, ALPN `h2`
    /// then `http/1.1`, no session cache (so no resumption across
    /// policies).
    connector: SslConnector,
    /// The caller's roots, for per-connection CRL stores.
    roots: Vec<X509>,
    /// Whether OpenSSL's default verify paths are trusted too.
    system_roots: bool,
}

impl fmt::Debug for OpensslHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpensslHandshake")
            .field("roots", &self.roots.len())
            .field("system_roots", &self.system_roots)
            .finish_non_exhaustive()
    }
}

fn setup_error(e: impl fmt::Display) -> BitsError {
    BitsError::SecureFailure {
        reason: format!("TLS setup: {e}"),
    }
}

fn setup_failure(e: impl fmt::Display) -> FailedHandshake<CrlNeed> {
    FailedHandshake::other(format!("TLS setup: {e}"))
}

impl OpensslHandshake {
    pub(crate) fn new(roots: Vec<X509>, system_roots: bool) -> Result<Self, BitsError> {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(setup_error)?;
        builder.set_cert_store(trust_builder(&roots, system_roots).map_err(setup_error)?.build());
        builder
            .set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(setup_error)?;
        // HTTP/2 where the server chooses it, else HTTP/1.1. ALPN is only
        // the protocol: the verify callback is the same either way.
        builder.set_alpn_protos(ALPN_OFFER).map_err(setup_error)?;
        // No client session cache, no tickets: a resumed session skips
        // verification, so none may cross policies (`docs/spec/tls.md`, pitfall 9).
        builder.set_session_cache_mode(SslSessionCacheMode::OFF);
        builder.set_options(SslOptions::NO_TICKET);
        // Read what the socket holds into OpenSSL's buffer, not each
        // record's header and body with a syscall each.
        builder.set_read_ahead(true);
        Ok(OpensslHandshake {
            connector: builder.build(),
            roots,
            system_roots,
        })
    }

    /// The verify store of a CRL-checked connection: the roots and the
    /// fresh CRLs, CRL_CHECK | CRL_CHECK_ALL. A new store per connection,
    /// since a store can never drop a CRL (pitfall 10); loading the default
    /// verify paths reads files, so it is built off the worker.
    async fn crl_store(&self, crls: Vec<CachedCrl>) -> Result<X509Store, FailedHandshake<CrlNeed>> {
        let (roots, system_roots) = (self.roots.clone(), self.system_roots);
        match tokio::task::spawn_blocking(move || crl_store(&roots, system_roots, &crls)).await {
            Ok(Ok(store)) => Ok(store),
            Ok(Err(e)) => Err(setup_failure(e)),
            Err(e) => Err(setup_failure(e)),
        }
    }
}

impl CrlHandshake for OpensslHandshake {
    type Stream = SslStream<TcpStream>;
    type Crl = openssl::x509::X509Crl;
    type CrlNeed = CrlNeed;
    type Issuer<'a> = Issuer<'a>;

    /// One handshake; with CRLs, its verify store is replaced by one of
    /// its own holding the roots and those CRLs, checking the whole chain.
    /// With a client certificate, its files are read and parsed again
    /// (gone: `0x80070002`; another leaf: `CRYPT_E_NOT_FOUND`; both fatal,
    /// before any byte is sent) and offered to a server that asks.
    async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
        policy: &ConnectionPolicy,
        crls: Option<Vec<CachedCrl>>,
    ) -> Result<SslStream<TcpStream>, FailedHandshake<CrlNeed>> {
        let identity = match policy.client_certificate() {
            Some(chosen) => Some(load_chosen(chosen.clone()).await?),
            None => None,
        };
        let crl_store = match crls {
            Some(crls) => Some(self.crl_store(crls).await?),
            None => None,
        };
        let record = SharedRecord::default();
        let mut cfg = self.connector.configure().map_err(setup_failure)?;
        // SNI for names only and host check through X509_VERIFY_PARAM
        // (set1_host, or set1_ip for an IP) are `into_ssl`'s defaults.
        cfg.set_verify_hostname(true);
        cfg.set_use_server_name_indication(true);
        cfg.set_verify_callback(
            SslVerifyMode::PEER,
            verify::callback(policy.flags(), record.clone()),
        );
        if let Some(store) = crl_store {
            cfg.param_mut()
                .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
                .map_err(setup_failure)?;
            cfg.set_verify_cert_store(store).map_err(setup_failure)?;
        }
        if let Some(id) = &identity {
            cfg.set_certificate(&id.leaf).map_err(setup_failure)?;
            for c in &id.chain {
                cfg.add_chain_cert(c.clone()).map_err(setup_failure)?;
            }
            cfg.set_private_key(&id.key).map_err(setup_failure)?;
        }
        if policy.http1_only() {
            cfg.set_alpn_protos(ALPN_HTTP1).map_err(setup_failure)?;
        }
        let ssl = cfg.into_ssl(host).map_err(setup_failure)?;
        let mut stream = SslStream::new(ssl, tcp).map_err(setup_failure)?;
        match Pin::new(&mut stream).connect().await {
            Ok(()) => Ok(stream),
            Err(e) => {
                let mut rec = record.lock();
                // The classification comes from our own record, never from
                // `verify_result`, which may name an error we ignored
                // (pitfall 5 and §2.4 item 3).
                let rejection = rec.rejection.take().map(|r| {
                    tracing::debug!(code = r.code, depth = r.depth, "OpenSSL verify error refused");
                    (r.fault, r.detail)
                });
                // A server refusing us rather than our verifier refusing it:
                // it demanded a certificate, or refused the one offered.
                let error = match (&rejection, e.ssl_error()) {
                    (None, Some(stack)) => {
                        client_cert::handshake_error(stream.ssl(), stack, identity.is_some())
                    }
                    _ => None,
                };
                Err(FailedHandshake {
                    rejection,
                    crl_needs: std::mem::take(&mut rec.crl_needs),
                    text: e.to_string(),
                    io: e.io_error().is_some(),
                    error,
                })
            }
        }
    }

    /// The certificate OpenSSL reported must get a usable CRL; the others
    /// of the chain are best effort (OpenSSL reports them on the next
    /// handshake).
    fn crl_request(need: &CrlNeed) -> CrlRequest<'_, Issuer<'_>> {
        CrlRequest {
            subject: &need.subject,
            urls: &need.urls,
            issuer: need.issuer.as_deref().map(Issuer),
            required: need.reported,
        }
    }

    /// A TLS 1.3 server's refusal of the client certificate, read after
    /// the handshake: `certificate_required` is `0x80072F0C`, a certificate
    /// alert (`unknown_ca`, …) `0x80072F8F` (crate docs, "Client certificates").
    fn classify_io(error: &std::io::Error) -> Option<BitsError> {
        client_cert::classify_io(error)
    }

    /// `SSL_get0_alpn_selected`: `h2` when the server chose HTTP/2.
    fn negotiated_alpn(stream: &SslStream<TcpStream>) -> Option<Vec<u8>> {
        stream.ssl().selected_alpn_protocol().map(<[u8]>::to_vec)
    }

    /// `SSL_get_peer_cert_chain`: on a client, the leaf and the rest as the
    /// server sent them.
    fn peer_chain(stream: &SslStream<TcpStream>) -> Vec<Vec<u8>> {
        stream
            .ssl()
            .peer_cert_chain()
            .map(|chain| chain.iter().filter_map(|c| c.to_der().ok()).collect())
            .unwrap_or_default()
    }
}

/// The job's client certificate, read and parsed again for a new
/// connection (off the worker: files, and PKCS#12 key derivation), and
/// still the leaf the job chose.
async fn load_chosen(chosen: ClientCertificate) -> Result<Identity, FailedHandshake<CrlNeed>> {
    let load = move || -> Result<Identity, BitsError> {
        let files = bits_http::client_cert::read(&chosen.file)?;
        let identity = client_cert::parse(&chosen.file, &files)?;
        let der = identity
            .leaf
            .to_der()
            .map_err(|e| BitsError::ClientCertNotFound {
                what: format!("{}: cannot encode the leaf ({e})", chosen.file.path.display()),
            })?;
        bits_http::client_cert::check_unchanged(&chosen, &der)?;
        Ok(identity)
    };
    match tokio::task::spawn_blocking(load).await {
        Ok(Ok(identity)) => Ok(identity),
        Ok(Err(e)) => Err(FailedHandshake::classified(e)),
        Err(e) => Err(setup_failure(e)),
    }
}

/// The trusted roots plus `crls`, checking the whole chain.
fn crl_store(roots: &[X509], system_roots: bool, crls: &[CachedCrl]) -> Result<X509Store, ErrorStack> {
    let mut builder = trust_builder(roots, system_roots)?;
    for crl in newest_per_issuer(crls) {
        store::add_crl(&mut builder, crl)?;
    }
    builder.set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)?;
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
fn trust_builder(roots: &[X509], system_roots: bool) -> Result<X509StoreBuilder, ErrorStack> {
    let mut builder = X509StoreBuilder::new()?;
    if system_roots {
        builder.set_default_paths()?;
    }
    for root in roots {
        builder.add_cert(root.clone())?;
    }
    Ok(builder)
}
