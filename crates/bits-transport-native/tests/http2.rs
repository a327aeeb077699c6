//! HTTP/2 by ALPN on this backend (a download over h2 lands whole and
//! says so; an HTTP/1.1 server gets HTTP/1.1; a connection is never shared
//! by two flag values, client certificates or routes): the shared cases
//! of [`bits_testkit::suites::http2`], against real TLS servers and a real
//! tinyproxy on 127.0.0.1.

bits_testkit::http2_tests!(bits_transport_native::Native);
