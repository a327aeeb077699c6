//! Server-certificate pins and validators (bits-testkit `suites::pins`)
//! and `bits diagnose` (`suites::diagnose`) against real TLS servers of
//! the test PKI: this backend sees the whole presented chain, so it
//! honours pins and validators.

use bits_transport_rustls::Rustls;

bits_testkit::pin_tests!(Rustls);
bits_testkit::diagnose_tests!(Rustls);
