//! What the native backend refuses of the client certificate forms
//! (`docs/spec/http-options.md`, "Client certificate"), and that it says
//! how to convert them.

use bits_core::{ClientCertificateFile, Password};
use bits_http::TlsBackend;
use bits_testkit::pki::TestPki;
use bits_transport_native::Native;

#[test]
fn a_key_that_is_not_pkcs8_names_the_conversion() {
    let files = TestPki::shared().client_files();
    for file in [
        ClientCertificateFile {
            path: files.combined_sec1_pem.clone(),
            key: None,
            password: None,
        },
        ClientCertificateFile {
            path: files.cert_pem.clone(),
            key: Some(files.key_sec1_pem.clone()),
            password: None,
        },
    ] {
        let e = Native::load_client_certificate(&file).unwrap_err();
        assert_eq!(e.hresult().0, 0x8000_4001, "{file:?}");
        let text = e.to_string();
        assert!(text.contains("openssl pkcs8 -topk8 -nocrypt"), "{text}");
        assert!(text.contains("EC PRIVATE KEY"), "{text}");
    }
}

#[test]
fn pkcs12_is_not_implemented_and_says_why() {
    let files = TestPki::shared().client_files();
    let p12 = ClientCertificateFile {
        path: files.pkcs12.clone(),
        key: None,
        password: Some(Password::new(files.pkcs12_password())),
    };
    let e = Native::load_client_certificate(&p12).unwrap_err();
    assert_eq!(e.hresult().0, 0x8000_4001);
    let text = e.to_string();
    assert!(text.contains("openssl pkcs12"), "{text}");
    assert!(text.contains("thumbprint"), "{text}");
}

#[test]
fn a_key_that_is_not_the_certificates_is_not_found() {
    let files = TestPki::shared().client_files();
    let mismatched = ClientCertificateFile {
        path: files.cert_pem.clone(),
        key: Some(files.unrelated_pem.clone()),
        password: None,
    };
    let e = Native::load_client_certificate(&mismatched).unwrap_err();
    assert_eq!(e.hresult().0, 0x8009_2004, "{e}");
}
