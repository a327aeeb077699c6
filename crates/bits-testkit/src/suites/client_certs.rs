//! Client certificates (`docs/spec/http-options.md`, "Client certificate")
//! through a backend's transport: loading the files as a job sets them
//! ([`TlsBackend::load_client_certificate`]), then GETs under a
//! [`ConnectionPolicy`] carrying the [`ClientCertificate`], against an
//! [`MtlsServer`] that verifies clients against the client root of
//! [`TestPki::shared`] (the client must send the intermediate).
//!
//! ```text
//! client_cert_tests!(Openssl);
//! ```
//!
//! The backend's [`TlsBackend::CLIENT_CERT_FORMATS`] says what it loads; a format it does not load must
//! be refused with `E_NOTIMPL` when it is set, never at connect time.
//! Tests that change a file work on a copy of the shared files
//! ([`ClientCertPaths::copy_to`]).

use std::fs;
use std::path::Path;
use std::time::Duration;

use bits_core::{
    BitsError, ClientCertificate, ClientCertificateFile, ConnectionPolicy, Password, Request, SecurityFlags,
    Transport,
};
use bits_http::{TlsBackend, TlsTransport};

use crate::backend;
use crate::pki::{ClientCertPaths, TestPki, CLIENT_CN, UNRELATED_CN};
use crate::temp::TempDir;
use crate::tls::{ClientAuth, MaxTls, MtlsServer, PresentedCert, TlsServer};

/// `ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED`.
pub const CERT_NEEDED: u32 = 0x8007_2F0C;
/// `ERROR_WINHTTP_SECURE_FAILURE`.
pub const SECURE_FAILURE: u32 = 0x8007_2F8F;
/// `CRYPT_E_NOT_FOUND`.
pub const NOT_FOUND: u32 = 0x8009_2004;
/// `E_ACCESSDENIED`.
pub const ACCESS_DENIED: u32 = 0x8007_0005;
/// `ERROR_INVALID_PASSWORD`.
pub const INVALID_PASSWORD: u32 = 0x8007_0056;
/// `ERROR_FILE_NOT_FOUND` as an HRESULT.
pub const FILE_NOT_FOUND: u32 = 0x8007_0002;
/// `E_NOTIMPL`.
pub const NOT_IMPLEMENTED: u32 = 0x8000_4001;

pub use bits_http::client_cert::Formats;

/// Both TLS versions a server may speak.
const VERSIONS: [MaxTls; 2] = [MaxTls::Tls13, MaxTls::Tls12];

/// A certificate file, no separate key, no password.
pub fn pem(path: &Path) -> ClientCertificateFile {
    ClientCertificateFile {
        path: path.to_owned(),
        key: None,
        password: None,
    }
}

/// A certificate file with its key in `key`.
pub fn pem_and_key(path: &Path, key: &Path) -> ClientCertificateFile {
    ClientCertificateFile {
        path: path.to_owned(),
        key: Some(key.to_owned()),
        password: None,
    }
}

/// A PKCS#12 file with `password`.
pub fn pkcs12(path: &Path, password: &str) -> ClientCertificateFile {
    ClientCertificateFile {
        path: path.to_owned(),
        key: None,
        password: Some(Password::new(password)),
    }
}

fn files() -> &'static ClientCertPaths {
    TestPki::shared().client_files()
}

fn transport<B: TlsBackend>() -> TlsTransport<B> {
    backend::with_pki::<B>(TestPki::shared())
}

/// The HRESULT of a load, or the thumbprint it chose.
fn load_code<B: TlsBackend>(file: &ClientCertificateFile) -> Result<ClientCertificate, u32> {
    B::load_client_certificate(file).map_err(|e| e.hresult().0)
}

/// Loads `file`, which must succeed and choose the shared client leaf.
fn load_ok<B: TlsBackend>(file: &ClientCertificateFile) -> ClientCertificate {
    let chosen = B::load_client_certificate(file)
        .unwrap_or_else(|e| panic!("{} loads {}: {e}", B::NAME, file.path.display()));
    assert_eq!(chosen.sha1, TestPki::shared().client_leaf_sha1(), "{chosen:?}");
    assert!(chosen.subject.contains(CLIENT_CN), "{chosen:?}");
    assert_eq!(&chosen.file, file);
    chosen
}

/// The policy of a job with `cert` (no other option).
pub fn policy(cert: Option<ClientCertificate>) -> ConnectionPolicy {
    ConnectionPolicy::new(SecurityFlags::new(0).expect("flags 0")).with_client_certificate(cert)
}

/// GETs `/file` from `server` under `policy` and reads the whole body: the
/// status, or the error.
pub async fn get<T: Transport + ?Sized>(
    t: &T,
    server: &MtlsServer,
    policy: ConnectionPolicy,
) -> Result<u16, BitsError> {
    let mut response = t.send(Request::get(server.url("/file"), policy)).await?;
    let mut body = Vec::new();
    while let Some(chunk) = response.body.next_chunk().await? {
        body.extend_from_slice(&chunk);
    }
    if response.status == 200 {
        assert_eq!(body, TlsServer::BODY);
    }
    Ok(response.status)
}

fn code<T>(r: Result<T, BitsError>) -> Result<T, u32> {
    r.map_err(|e| e.hresult().0)
}

fn client_leaf_presented() -> Option<PresentedCert> {
    Some(PresentedCert {
        cn: CLIENT_CN.to_owned(),
        sha1: TestPki::shared().client_leaf_sha1(),
    })
}

/// Waits until `server` has counted `n` refused handshakes.
fn wait_refused(server: &MtlsServer, n: usize) {
    assert!(
        server
            .http()
            .wait_until(Duration::from_secs(5), |s| s.handshake_failures() >= n),
        "the server refused {} handshakes, not {n}",
        server.handshakes_failed()
    );
}

/// The files of every format the backend loads, each loaded as a job sets
/// it, connect to a server that requires a certificate, over TLS 1.3 and
/// 1.2: 200, and the server saw the client leaf (verified through the
/// intermediate the client sent).
pub async fn required_and_given_succeeds_and_the_server_sees_it<B: TlsBackend>() {
    let formats = B::CLIENT_CERT_FORMATS;
    let f = files();
    let mut cases = vec![
        ("PEM, key in the same file", pem(&f.combined_pem)),
        ("PEM, key apart", pem_and_key(&f.cert_pem, &f.key_pem)),
    ];
    if formats.pkcs12 {
        cases.push(("PKCS#12", pkcs12(&f.pkcs12, f.pkcs12_password())));
    }
    if formats.non_pkcs8_keys {
        cases.push(("PEM, SEC1 key apart", pem_and_key(&f.cert_pem, &f.key_sec1_pem)));
        cases.push(("PEM, SEC1 key in the same file", pem(&f.combined_sec1_pem)));
    }
    for max in VERSIONS {
        let server = MtlsServer::start(ClientAuth::Required, max);
        let t = transport::<B>();
        for (what, file) in &cases {
            let chosen = load_ok::<B>(file);
            let got = code(get(&t, &server, policy(Some(chosen))).await);
            assert_eq!(got, Ok(200), "{what}, {max:?}");
        }
        assert_eq!(server.request_count(), cases.len(), "{max:?}");
        assert_eq!(
            server.presented(),
            vec![client_leaf_presented(); cases.len()],
            "{max:?}"
        );
    }
}

/// A server that requires a certificate, and a job without one:
/// `0x80072F0C` over TLS 1.3 (the alert arrives on the first read) and
/// TLS 1.2 (it fails the handshake), and no request reaches HTTP.
pub async fn required_and_absent_is_cert_needed_and_sends_no_request<B: TlsBackend>() {
    for max in VERSIONS {
        let server = MtlsServer::start(ClientAuth::Required, max);
        let t = transport::<B>();
        let e = get(&t, &server, policy(None)).await.unwrap_err();
        assert_eq!(e.hresult().0, CERT_NEEDED, "{max:?}: {e}");
        wait_refused(&server, 1);
        assert_eq!(server.request_count(), 0, "{max:?}");
        assert_eq!(server.handshakes_ok(), 0, "{max:?}");
    }
}

/// A certificate the server's CA did not issue: `0x80072F8F`, no request.
pub async fn a_certificate_from_another_ca_is_a_secure_failure<B: TlsBackend>() {
    let chosen = B::load_client_certificate(&pem(&files().unrelated_pem)).expect("the unrelated leaf loads");
    assert_eq!(chosen.sha1, TestPki::shared().unrelated_client_sha1());
    assert!(chosen.subject.contains(UNRELATED_CN), "{chosen:?}");
    for max in VERSIONS {
        let server = MtlsServer::start(ClientAuth::Required, max);
        let t = transport::<B>();
        let e = get(&t, &server, policy(Some(chosen.clone()))).await.unwrap_err();
        assert_eq!(e.hresult().0, SECURE_FAILURE, "{max:?}: {e}");
        wait_refused(&server, 1);
        assert_eq!(server.request_count(), 0, "{max:?}");
    }
}

/// The file was replaced by another certificate after the job chose it:
/// the next connection fails `CRYPT_E_NOT_FOUND`, fatal, before any
/// handshake; a file that is gone fails `0x80070002`, fatal.
pub async fn a_certificate_file_replaced_after_it_was_set_is_not_found<B: TlsBackend>() {
    let dir = TempDir::new("client-cert-replaced");
    let f = files().copy_to(dir.path());
    let chosen = load_ok::<B>(&pem(&f.combined_pem));
    let server = MtlsServer::start(ClientAuth::Required, MaxTls::Tls13);
    let t = transport::<B>();
    assert_eq!(
        code(get(&t, &server, policy(Some(chosen.clone()))).await),
        Ok(200)
    );
    backend::clear_pools::<B>(&t);
    fs::copy(&f.unrelated_pem, &f.combined_pem).expect("replace the file");
    let e = get(&t, &server, policy(Some(chosen.clone()))).await.unwrap_err();
    assert_eq!(e.hresult().0, NOT_FOUND, "{e}");
    assert!(!e.is_transient(), "{e:?}");
    fs::remove_file(&f.combined_pem).expect("remove the file");
    let e = get(&t, &server, policy(Some(chosen))).await.unwrap_err();
    assert_eq!(e.hresult().0, FILE_NOT_FOUND, "{e}");
    assert!(!e.is_transient(), "{e:?}");
    assert_eq!(server.handshakes_ok(), 1);
    assert_eq!(server.request_count(), 1);
}

fn chmod(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// A private key its owner's group or others can read is refused when it
/// is set (`E_ACCESSDENIED`), in a key file, a PEM holding its key, or a
/// PKCS#12; a certificate without its key may be world-readable.
pub async fn a_key_others_can_read_is_refused_at_load<B: TlsBackend>() {
    let formats = B::CLIENT_CERT_FORMATS;
    let dir = TempDir::new("client-cert-modes");
    let f = files().copy_to(dir.path());
    chmod(&f.cert_pem, 0o644);
    load_ok::<B>(&pem_and_key(&f.cert_pem, &f.key_pem));
    chmod(&f.key_pem, 0o640);
    assert_eq!(
        load_code::<B>(&pem_and_key(&f.cert_pem, &f.key_pem)).map(|_| ()),
        Err(ACCESS_DENIED)
    );
    chmod(&f.combined_pem, 0o604);
    assert_eq!(
        load_code::<B>(&pem(&f.combined_pem)).map(|_| ()),
        Err(ACCESS_DENIED)
    );
    if formats.pkcs12 {
        chmod(&f.pkcs12, 0o644);
        assert_eq!(
            load_code::<B>(&pkcs12(&f.pkcs12, f.pkcs12_password())).map(|_| ()),
            Err(ACCESS_DENIED)
        );
    }
}

/// PKCS#12: the right password loads (and connects), a wrong or missing
/// one is `0x80070056`; a backend without PKCS#12 refuses it at load
/// (`E_NOTIMPL`).
pub async fn pkcs12_needs_its_password<B: TlsBackend>() {
    let formats = B::CLIENT_CERT_FORMATS;
    let f = files();
    let right = pkcs12(&f.pkcs12, f.pkcs12_password());
    if !formats.pkcs12 {
        assert_eq!(load_code::<B>(&right).map(|_| ()), Err(NOT_IMPLEMENTED));
        return;
    }
    let chosen = load_ok::<B>(&right);
    assert_eq!(
        load_code::<B>(&pkcs12(&f.pkcs12, "not the password")).map(|_| ()),
        Err(INVALID_PASSWORD)
    );
    let server = MtlsServer::start(ClientAuth::Required, MaxTls::Tls13);
    let t = transport::<B>();
    assert_eq!(code(get(&t, &server, policy(Some(chosen))).await), Ok(200));
    assert_eq!(server.presented(), vec![client_leaf_presented()]);
}

/// PEM keys that are not PKCS#8: loaded by a backend that says so, else
/// refused at load with `E_NOTIMPL` (apart or in the certificate's file).
pub async fn non_pkcs8_keys_load_or_are_refused_at_load<B: TlsBackend>() {
    let formats = B::CLIENT_CERT_FORMATS;
    let f = files();
    let cases = [
        pem_and_key(&f.cert_pem, &f.key_sec1_pem),
        pem(&f.combined_sec1_pem),
    ];
    for file in &cases {
        if formats.non_pkcs8_keys {
            load_ok::<B>(file);
        } else {
            assert_eq!(load_code::<B>(file).map(|_| ()), Err(NOT_IMPLEMENTED), "{file:?}");
        }
    }
}

/// A missing certificate or key file is `0x80070002`; a file with no
/// certificate, no key, or a key that is not the certificate's is
/// `CRYPT_E_NOT_FOUND`.
pub async fn missing_or_mismatched_files_are_refused_at_load<B: TlsBackend>() {
    let f = files();
    let missing = f.dir.join("no-such-file.pem");
    assert_eq!(load_code::<B>(&pem(&missing)).map(|_| ()), Err(FILE_NOT_FOUND));
    assert_eq!(
        load_code::<B>(&pem_and_key(&f.cert_pem, &missing)).map(|_| ()),
        Err(FILE_NOT_FOUND)
    );
    // A certificate without a key, a key without a certificate.
    assert_eq!(load_code::<B>(&pem(&f.cert_pem)).map(|_| ()), Err(NOT_FOUND));
    assert_eq!(load_code::<B>(&pem(&f.key_pem)).map(|_| ()), Err(NOT_FOUND));
    // The unrelated leaf's key is not the client leaf's.
    assert_eq!(
        load_code::<B>(&pem_and_key(&f.cert_pem, &f.unrelated_pem)).map(|_| ()),
        Err(NOT_FOUND)
    );
}

/// A server that only asks: a job without a certificate is served (and
/// presented none).
pub async fn optional_and_absent_succeeds<B: TlsBackend>() {
    for max in VERSIONS {
        let server = MtlsServer::start(ClientAuth::Optional, max);
        let t = transport::<B>();
        assert_eq!(code(get(&t, &server, policy(None)).await), Ok(200), "{max:?}");
        assert_eq!(server.presented(), vec![None], "{max:?}");
    }
}

/// A job with a certificate never reuses a connection made without one,
/// nor the reverse; each keeps reusing its own.
pub async fn a_certificate_never_reuses_a_connection_made_without_one<B: TlsBackend>() {
    let chosen = load_ok::<B>(&pem(&files().combined_pem));
    let server = MtlsServer::start(ClientAuth::Optional, MaxTls::Tls13);
    let t = transport::<B>();
    let without = policy(None);
    let with = policy(Some(chosen));
    assert_eq!(code(get(&t, &server, without.clone()).await), Ok(200));
    assert_eq!(code(get(&t, &server, with.clone()).await), Ok(200));
    assert_eq!(code(get(&t, &server, without.clone()).await), Ok(200));
    assert_eq!(code(get(&t, &server, with.clone()).await), Ok(200));
    assert_eq!(server.handshakes_ok(), 2);
    assert_eq!(server.presented(), vec![None, client_leaf_presented()]);
    assert_eq!(t.http().connections_made(&without), 1);
    assert_eq!(t.http().connections_made(&with), 1);
    // Every request came on the connection of its own policy.
    let connections: Vec<usize> = server.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections[0], connections[2]);
    assert_eq!(connections[1], connections[3]);
    assert_ne!(connections[0], connections[1]);
}
