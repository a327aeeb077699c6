//! TLS for `bits serve --cert F --key F`: an [`Acceptor`] turns each
//! accepted TCP connection into a TLS stream, with the engine of the
//! features compiled in (`openssl`, `rustls`, `native`). The certificate file is PEM
//! (the leaf first, then its chain); the key a PEM private key.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A stream a connection is served over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

type Accept =
    dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = io::Result<Box<dyn Stream>>> + Send>> + Send + Sync;

/// Accepts TLS on a TCP connection.
#[derive(Clone)]
pub struct Acceptor {
    engine: &'static str,
    accept: Arc<Accept>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// The TLS engine's name (`openssl`, `rustls`).
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// The TLS handshake on `tcp`.
    ///
    /// # Errors
    /// When the handshake fails.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Box<dyn Stream>> {
        (self.accept)(tcp).await
    }

    /// An acceptor presenting `cert` (PEM chain, leaf first) with `key`,
    /// on the first engine compiled in (openssl, rustls, then native).
    ///
    /// # Errors
    /// When the files cannot be read or do not match, or no engine is
    /// compiled in.
    #[allow(unreachable_code, unused_variables)]
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<Acceptor> {
        #[cfg(feature = "openssl")]
        return Acceptor::openssl(cert, key);
        #[cfg(feature = "rustls")]
        return Acceptor::rustls(cert, key);
        #[cfg(feature = "native")]
        return Acceptor::native(cert, key);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this build of bits has no TLS engine to serve https with (features openssl, rustls, native)",
        ))
    }

    /// The OpenSSL acceptor (TLS 1.2 and 1.3, Mozilla's intermediate
    /// settings).
    ///
    /// # Errors
    /// As [`Acceptor::from_pem_files`].
    #[cfg(feature = "openssl")]
    pub fn openssl(cert: &Path, key: &Path) -> io::Result<Acceptor> {
        use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
        let mut builder =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(io::Error::other)?;
        builder
            .set_certificate_chain_file(cert)
            .map_err(io::Error::other)?;
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(io::Error::other)?;
        builder.check_private_key().map_err(io::Error::other)?;
        let acceptor = Arc::new(builder.build());
        Ok(Acceptor {
            engine: "openssl",
            accept: Arc::new(move |tcp| {
                let acceptor = Arc::clone(&acceptor);
                Box::pin(async move {
                    let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(io::Error::other)?;
                    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(io::Error::other)?;
                    Pin::new(&mut stream).accept().await.map_err(io::Error::other)?;
                    Ok(Box::new(stream) as Box<dyn Stream>)
                })
            }),
        })
    }

    /// The rustls acceptor (TLS 1.2 and 1.3).
    ///
    /// # Errors
    /// As [`Acceptor::from_pem_files`].
    #[cfg(feature = "rustls")]
    pub fn rustls(cert: &Path, key: &Path) -> io::Result<Acceptor> {
        let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
            rustls_pemfile::certs(&mut io::BufReader::new(std::fs::File::open(cert)?))
                .collect::<Result<_, _>>()?;
        let key = rustls_pemfile::private_key(&mut io::BufReader::new(std::fs::File::open(key)?))?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no private key in {}", key.display()),
                )
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Ok(Acceptor {
            engine: "rustls",
            accept: Arc::new(move |tcp| {
                let acceptor = acceptor.clone();
                Box::pin(async move { Ok(Box::new(acceptor.accept(tcp).await?) as Box<dyn Stream>) })
            }),
        })
    }

    /// The native-tls acceptor (the platform's TLS: OpenSSL on Linux); the
    /// key must be PKCS#8 PEM.
    ///
    /// # Errors
    /// As [`Acceptor::from_pem_files`].
    #[cfg(feature = "native")]
    pub fn native(cert: &Path, key: &Path) -> io::Result<Acceptor> {
        let identity = native_tls::Identity::from_pkcs8(&std::fs::read(cert)?, &std::fs::read(key)?)
            .map_err(io::Error::other)?;
        let acceptor = native_tls::TlsAcceptor::new(identity).map_err(io::Error::other)?;
        let acceptor = Arc::new(tokio_native_tls::TlsAcceptor::from(acceptor));
        Ok(Acceptor {
            engine: "native",
            accept: Arc::new(move |tcp| {
                let acceptor = Arc::clone(&acceptor);
                Box::pin(async move {
                    let stream = acceptor.accept(tcp).await.map_err(io::Error::other)?;
                    Ok(Box::new(stream) as Box<dyn Stream>)
                })
            }),
        })
    }
}
