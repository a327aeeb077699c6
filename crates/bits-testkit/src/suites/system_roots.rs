//! `system_roots(true)` trusts the system's roots as the backend finds
//! them, where `SSL_CERT_FILE` / `SSL_CERT_DIR` replace the system's
//! locations as OpenSSL defines them; `system_roots(false)` trusts only the
//! builder's roots.
//!
//! The test runs itself again as a child process with the variables set, so
//! no environment is changed in a process that has threads:
//!
//! ```text
//! bits_testkit::system_roots_tests!(bits_transport_openssl::Openssl);
//! ```

use std::process::Command;

use bits_core::{ConnectionPolicy, Request, Transport};
use bits_http::{TlsBackend, TlsTransport};

use crate::backend;
use crate::pki::{LeafKind, TestPki};
use crate::temp::TempDir;
use crate::tls::TlsServer;

/// Set in the child process the test runs itself as.
pub const CHILD_ENV: &str = "BITS_TESTKIT_SYSTEM_ROOTS_CHILD";

/// The test's name as the test harness knows it: `module` (a
/// `module_path!()`, whose first part is the crate) without the crate, then
/// `name`.
pub fn test_path(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_, inner)) => format!("{inner}::{name}"),
        None => name.to_owned(),
    }
}

/// In the test process: runs the test `test` (its path, [`test_path`]) in a
/// child process with `SSL_CERT_FILE` naming a bundle of
/// [`TestPki::shared`]'s root and `SSL_CERT_DIR` naming a missing
/// directory, and fails when the child does. In the child: the checks.
///
/// # Panics
/// When the child fails, or runs no test.
pub fn ssl_cert_file_replaces_the_system_roots<B: TlsBackend>(test: &str) {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child::<B>();
    }
    let dir = TempDir::new("system-roots");
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, TestPki::shared().root_pem()).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("SSL_CERT_FILE", &bundle)
        .env("SSL_CERT_DIR", dir.path().join("no-such-dir"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}

async fn get<B: TlsBackend>(t: &TlsTransport<B>, server: &TlsServer) -> Result<u16, u32> {
    let req = Request::get(server.url("/file"), ConnectionPolicy::default());
    t.send(req).await.map(|r| r.status).map_err(|e| e.hresult().0)
}

fn child<B: TlsBackend>() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = TestPki::shared();
        let server = TlsServer::start(pki.leaf(LeafKind::Good));
        let rogue = TlsServer::start(pki.leaf(LeafKind::UnknownCa));
        let unused = backend::unused_crl_cache();

        let system = TlsTransport::<B>::builder()
            .crl_cache_dir(&unused)
            .build()
            .unwrap();
        assert_eq!(get(&system, &server).await, Ok(200));
        // The file adds its root and nothing else.
        assert_eq!(get(&system, &rogue).await, Err(0x8007_2F0D));

        let none = TlsTransport::<B>::builder()
            .system_roots(false)
            .crl_cache_dir(&unused)
            .build()
            .unwrap();
        assert_eq!(get(&none, &server).await, Err(0x8007_2F0D));

        let explicit = backend::with_roots::<B>(&backend::pki_roots());
        assert_eq!(get(&explicit, &server).await, Ok(200));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_paths_leave_out_the_crate() {
        assert_eq!(test_path("system_roots", "t"), "t");
        assert_eq!(test_path("system_roots::inner::deeper", "t"), "inner::deeper::t");
    }
}
