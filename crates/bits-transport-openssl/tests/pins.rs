//! Server-certificate pins and validators (bits-testkit `suites::pins`)
//! and `bits diagnose` (`suites::diagnose`) against real TLS servers of
//! the test PKI: this backend sees the whole presented chain, so it
//! honours pins and validators.

use bits_transport_openssl::Openssl;

bits_testkit::pin_tests!(Openssl);
bits_testkit::diagnose_tests!(Openssl);
