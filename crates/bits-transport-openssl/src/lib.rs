//! bits Transport on OpenSSL: every security flag honoured exactly, with CRL checking
#![deny(missing_docs)]
