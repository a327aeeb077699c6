//! # bits-http
//!
//! The HTTP plumbing every bits transport shares, written once: hyper 1 and
//! hyper-util's pooling client, HTTP/1.1, and HTTP/2 where the TLS
//! handshake negotiates it by ALPN, with BITS error classification.
//! A TLS backend (`bits-transport-openssl`, `-rustls`, `-native`)
//! implements [`TlsBackend`]: it parses roots, builds its connector (a
//! [`TlsConnect`]: the handshake under a policy) and says which policies it
//! honours; [`TlsTransport`] and [`TlsTransportBuilder`] do the rest. A
//! backend that checks CRLs supplies one handshake ([`crl_cache::CrlHandshake`])
//! and its CRL parsing ([`crl_cache::CrlIssuer`]);
//! [`crl_cache::CrlConnector`] does the cache and the reconnect rounds.
//!
//! ## What it does
//! - [`HttpTransport`]: a [`bits_core::Transport`]. One connection pool per
//!   [`bits_core::ConnectionPolicy`] (a connection made under one policy
//!   never serves another); keep-alive with an idle timeout; connect,
//!   handshake, header and per-chunk idle timeouts ([`HttpOptions`]);
//!   streaming bodies both ways (a request body of known length is sent
//!   with `Content-Length`, one of unknown length chunked); `Host` and
//!   `User-Agent: bits/<version>` added.
//! - HTTP/2 by ALPN: every backend's handshake with an origin offers `h2`
//!   and `http/1.1` ([`TlsConnect::negotiated_alpn`]), or `http/1.1` alone
//!   under a policy that asks for it (`ConnectionPolicy::http1_only`, the
//!   engine's choice for a job of one file); where the server
//!   chooses `h2`, the connection speaks HTTP/2 and the requests of its
//!   pool share it as streams. A pool is still one policy's, so an h2
//!   connection never carries a request of another policy (flags, client
//!   certificate, pins, validator, route). ALPN changes no verification.
//!   Plain http is HTTP/1.1 (no h2c); a tunnel's `CONNECT` is HTTP/1.1,
//!   the TLS inside it offers h2 like a direct connection. Each
//!   [`bits_core::Response`] says which version carried it.
//! - [`TlsTransport`], [`TlsTransportBuilder`]: a backend's transport and
//!   builder (roots, system roots, CRL cache directory, [`HttpOptions`]),
//!   named after the backend and refusing what its `check_policy` refuses
//!   before any connection.
//! - Errors classified once, for every backend:
//!
//!   | failure | error | HRESULT |
//!   | --- | --- | --- |
//!   | the backend's handshake error | unchanged | its own |
//!   | a read/write error the backend classifies ([`TlsConnect::classify_io`]: a TLS 1.3 refusal of the client certificate; over HTTP/2 too, kept with the connection) | the backend's | its own |
//!   | the request body's error | unchanged | its own |
//!   | DNS | `NameNotResolved` | `0x80072EE7` |
//!   | TCP refused / unreachable | `CannotConnect` | `0x80072EFD` |
//!   | no proxy of the route accepts a connection (refused, unreachable, unresolvable, connect timeout), naming them | `CannotConnect` | `0x80072EFD` |
//!   | a proxy answers `CONNECT` with status S (not 2xx, not a 407 the job's proxy credentials answer) | `HttpStatus` S | `0x80190000` + S |
//!   | an http proxy's 407 without usable proxy credentials, or a refusal of the answer (a 407 to it; a 401 to `CONNECT`, as tinyproxy refuses); a 407 to a request whose body cannot be sent again | `AuthFailed` 407 | `0x80190197` |
//!   | a SOCKS5 proxy refusing the user name and password, or wanting them when the job has no basic proxy credentials | `AuthFailed` 407 | `0x80190197` |
//!   | a SOCKS5 proxy's failure reply (host unreachable, connection refused, …) | `CannotConnect` | `0x80072EFD` |
//!   | no answer from a proxy to `CONNECT` or SOCKS5 within the handshake timeout | `Timeout` | `0x80072EE2` |
//!   | `preconfig` with a proxy variable bits cannot use (`https://`, `socks5://`, user information) | `NotImplemented` (refused by `check_policy`) | `0x80004001` |
//!   | connect, header or idle timeout | `Timeout` | `0x80072EE2` |
//!   | reset; closed before the headers, or before Content-Length bytes | `ConnectionReset` | `0x80072EFE` |
//!   | unparsable response | `InvalidServerResponse` | `0x8020001B` |
//!
//! - Proxies (`docs/spec/http-options.md`, "Proxies"), the same for every
//!   backend: each connection goes the way [`proxy::route`] gives its URL
//!   under the policy's [`bits_core::ProxySettings`]: `preconfig`, the
//!   environment read as curl reads it ([`proxy::ProxyEnv`]: read once per
//!   process, when the first transport is built, so a daemon routes by
//!   the environment of the command that started it); `no_proxy`, direct;
//!   `override`, the job's proxies tried in order unless its bypass list
//!   matches. Through an http proxy, http URLs are absolute-form requests
//!   to it, https URLs a `CONNECT` tunnel; through SOCKS5 (`socks5h`), the
//!   proxy resolves the name; TLS then runs end to end with the origin,
//!   under the policy (flags, client certificate, pins, validator), the
//!   proxy itself being spoken to in plain TCP. A proxy that refuses the
//!   TCP connection (or does not accept it in time) makes way for the next;
//!   a proxy that answers is final. Pools are per policy, and the policy
//!   holds the proxy settings, so a connection through one proxy never
//!   serves a request routed another way. A proxy's 407 is answered with
//!   the policy's proxy credentials, once per challenge, and the answer is
//!   kept per proxy for the policy's later requests;
//!   SOCKS5 takes basic proxy credentials as its user name and password.
//!   CRL downloads ([`fetch_plain`])
//!   route by the process environment (`preconfig`), as the system's proxy
//!   serves them on Windows; a reconnect after a CRL download takes the
//!   route of the connection it replaces. `bits diagnose`'s handshakes
//!   ([`diagnose`]) connect direct.
//! - [`PlainHttp`]: http:// only, for tests and embedders without TLS.
//! - [`fetch_plain`]: one plain GET, for CRL downloads.
//! - [`crl_cache`]: the CRL cache (memory, disk, download) and the
//!   reconnect-after-download flow every CRL-checking backend shares.
//! - [`diagnose`]: `bits diagnose`: handshakes only, the presented chain,
//!   every certificate fault, the least flags a backend accepts.
//! - [`builder`]: the settings [`TlsTransportBuilder`] collects
//!   ([`builder::BuilderOptions`]) and the rules that follow from them.
//!
//! ## What it does not do
//! - Follow redirects: a 3xx is a [`bits_core::Response`]; the engine
//!   applies the job's redirect policy.
//! - Turn statuses into errors: a 404 is a response ([`fetch_plain`] is
//!   the exception: it wants a 200).
//! - TLS: that is the backend's [`TlsConnect`].
//! - HTTP/2 over plain http (h2c), cookies, decompression,
//!   `Expect: 100-continue`.
//!
//! ## Why the defaults are what they are
//! Connect and handshake 30 s, headers 60 s, body idle 60 s (WinHTTP's
//! own receive timeout is 30 s; BITS tolerates slow servers), idle pooled
//! connections kept 30 s (a job's requests come in quick succession, and a
//! long-idle connection is likely one the server is closing).

#![deny(missing_docs)]

mod backend;
mod body;
pub mod builder;
pub mod chain;
mod classify;
pub mod client_cert;
mod connector;
pub mod crl_cache;
mod crl_flow;
pub mod diagnose;
pub mod header_case;
pub mod ledbat;
mod plain;
pub mod proxy;
mod proxy_auth;
mod tls;
mod transport;
pub mod yielding;

pub use backend::{TlsBackend, TlsTransport, TlsTransportBuilder};
pub use ledbat::{supports_midstream_clamp, Gain, LedbatConfig, LedbatController, Pacer};
pub use plain::{fetch_plain, retry_after_secs, PlainHttp};
pub use tls::{BoxFuture, NoTls, TlsConnect};
pub use transport::{HttpOptions, HttpTransport, USER_AGENT_VALUE};
