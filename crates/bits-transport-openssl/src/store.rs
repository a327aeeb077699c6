//! Adding a CRL to an `X509_STORE` from memory.
//!
//! rust-openssl 0.10 has no `X509StoreBuilder::add_crl` (rust-openssl#2354,
//! `docs/spec/tls.md`, pitfall 11); its documented workaround is to declare
//! `X509_STORE_add_crl` ourselves. libcrypto is already linked by
//! openssl-sys. The alternative (write the CRL to a file and load it with
//! `X509Lookup::file()`) would read back from disk a CRL we verified in
//! memory, which is both slower and weaker.

// Reason: one `extern "C"` call that rust-openssl does not bind; the
// function takes its own reference to the CRL and does not keep the pointers
// it is given beyond that.
#![allow(unsafe_code)]

use std::os::raw::c_int;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::x509::store::X509StoreBuilderRef;
use openssl::x509::X509CrlRef;

extern "C" {
    /// `int X509_STORE_add_crl(X509_STORE *xs, X509_CRL *x);` (OpenSSL 1.0+):
    /// adds `x` to the store, taking a new reference (`X509_CRL_up_ref`).
    fn X509_STORE_add_crl(xs: *mut openssl_sys::X509_STORE, x: *mut openssl_sys::X509_CRL) -> c_int;
}

/// Adds `crl` to the store being built.
pub(crate) fn add_crl(store: &mut X509StoreBuilderRef, crl: &X509CrlRef) -> Result<(), ErrorStack> {
    // SAFETY: both pointers come from live rust-openssl wrappers borrowed for
    // the duration of the call. X509_STORE_add_crl increments the CRL's
    // reference count for the copy it keeps (x509_lu.c, x509_store_add), so
    // the store never frees memory it does not own, and our `crl` stays
    // valid independently of the store.
    let ret = unsafe { X509_STORE_add_crl(store.as_ptr(), crl.as_ptr()) };
    if ret > 0 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}
