//! Connections through REAL proxies (tinyproxy: absolute-form http and
//! `CONNECT` tunnels; microsocks: SOCKS5), routed by bits-http for every
//! backend: the shared cases of [`bits_testkit::suites::proxies`], with
//! TLS end to end with the origin under the job's flags.

bits_testkit::proxy_tests!(bits_transport_native::Native, refuses_ignore_date);
