//! What every backend's builder and transport share: roots that are not
//! certificates are refused as invalid arguments, and the transport is
//! named after the backend and checks a policy exactly as the backend's
//! own `check_policy` does.
//!
//! ```text
//! bits_testkit::builder_tests!(bits_transport_native::Native, &[0x00, 0x02]);
//! ```

use bits_core::{ConnectionPolicy, SecurityFlags, Transport};
use bits_http::{TlsBackend, TlsTransport};

use crate::pki::TestPki;

const E_INVALIDARG: u32 = 0x8007_0057;

/// A PEM bundle without a certificate, a DER that does not parse: both
/// `E_INVALIDARG`; the test root is taken in either form.
pub fn bad_roots_are_invalid_arguments<B: TlsBackend>() {
    let code = |r: Result<_, bits_core::BitsError>| r.map(|_| ()).map_err(|e| e.hresult().0);
    assert_eq!(
        code(TlsTransport::<B>::builder().add_root_pem(b"not pem")),
        Err(E_INVALIDARG)
    );
    assert_eq!(
        code(TlsTransport::<B>::builder().add_root_der(b"\x30\x03junk")),
        Err(E_INVALIDARG)
    );
    assert_eq!(
        code(TlsTransport::<B>::builder().add_root_der(b"\x30\x00")),
        Err(E_INVALIDARG)
    );
    let pki = TestPki::shared();
    assert_eq!(
        code(TlsTransport::<B>::builder().add_root_pem(pki.root_pem())),
        Ok(())
    );
    assert_eq!(
        code(TlsTransport::<B>::builder().add_root_der(pki.root_der())),
        Ok(())
    );
}

/// The transport (as a `dyn Transport`) is named [`TlsBackend::NAME`],
/// honours exactly the certificate values `supported`, and agrees with
/// [`TlsBackend::check_policy`] on every valid flag value, redirect bits
/// included; each refusal is `E_NOTIMPL`.
pub fn the_transport_checks_policies_as_its_backend<B: TlsBackend>(supported: &[u32]) {
    let t: Box<dyn Transport> = Box::new(
        TlsTransport::<B>::builder()
            .system_roots(false)
            .build()
            .expect("a transport"),
    );
    assert_eq!(t.name(), B::NAME);
    assert!(format!("{t:?}").contains(&format!("{:?}", B::NAME)), "{t:?}");
    assert_eq!(
        bits_core::transport::supported_cert_flags(|p| t.check_policy(p)),
        supported
    );
    for bits in 0..0x2000 {
        let Ok(flags) = SecurityFlags::new(bits) else {
            continue;
        };
        let policy = ConnectionPolicy::new(flags);
        let got = t.check_policy(&policy).map_err(|e| e.hresult().0);
        assert_eq!(
            got,
            B::check_policy(&policy).map_err(|e| e.hresult().0),
            "{flags}"
        );
        assert!(matches!(got, Ok(()) | Err(0x8000_4001)), "{flags}: {got:?}");
    }
}
