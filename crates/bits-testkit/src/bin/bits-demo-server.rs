//! The servers behind `cargo xtask demo`: real HTTPS servers on 127.0.0.1
//! with the generated test PKI. Usage: `bits-demo-server DIR`. Writes the
//! trusted root to `DIR/root.pem`, prints `name value` lines (`root`, `good`,
//! `expired`, `redirect`) and then `ready`, and serves until killed or until
//! its standard input closes.

use std::io::Read;
use std::time::Duration;

use bits_testkit::http::Route;
use bits_testkit::pki::{LeafKind, TestPki};
use bits_testkit::tls::https_server;

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).expect("demo directory");
    let pki = TestPki::shared();
    let root = dir.join("root.pem");
    std::fs::write(&root, pki.root_pem()).expect("write root.pem");

    // 48 MiB of pseudo-random bytes, sent at a pace that makes the progress
    // bar visible (about 2 s).
    let mut body = vec![0u8; 48 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in body.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let file = Route::body(body).throttle(1 << 20, Duration::from_millis(40));

    let good = https_server(pki.leaf(LeafKind::Good))
        .with("/file.bin", file.clone())
        .with("/moved.bin", Route::redirect(302, "/file.bin"));
    let expired =
        https_server(pki.leaf(LeafKind::Expired)).with("/file.bin", Route::body(&b"expired but fine\n"[..]));

    println!("root {}", root.display());
    println!("good {}", good.url("/file.bin"));
    println!("expired {}", expired.url("/file.bin"));
    println!("redirect {}", good.url("/moved.bin"));
    println!("ready");

    // Serve until stdin closes (the demo's pipe) or the process is killed.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop((good, expired));
}
