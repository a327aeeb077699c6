//! Server-certificate pins and validators (bits-testkit `suites::pins`)
//! and `bits diagnose` (`suites::diagnose`) against real TLS servers of the
//! test PKI: native-tls shows only the leaf, so pins and validators are
//! refused with E_NOTIMPL; diagnose works within the values it honours.

use bits_transport_native::Native;

bits_testkit::pin_tests!(Native, refused);
bits_testkit::diagnose_tests!(Native);
