//! Real proxies on 127.0.0.1, as Debian packages them: tinyproxy (an HTTP
//! proxy: absolute-form requests and `CONNECT` tunnels) and microsocks
//! (SOCKS5). `.ci/run` installs both; a test that needs one panics with the
//! `apt-get` line when it is missing. Each proxy runs in the foreground as
//! a child of the test and is killed when dropped.
//!
//! Beside them, [`DigestProxy`]: a small scripted `CONNECT` proxy that
//! challenges with Digest (SHA-256), which neither real proxy does
//! (tinyproxy knows Basic only).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::temp::TempDir;

/// A running proxy.
#[derive(Debug)]
pub struct RealProxy {
    child: Child,
    addr: SocketAddr,
    scheme: &'static str,
    log: Option<PathBuf>,
    _dir: TempDir,
}

impl RealProxy {
    /// tinyproxy on a free port of 127.0.0.1, logging every request
    /// (`CONNECT host:port` lines included) to [`RealProxy::log`].
    pub fn tinyproxy() -> RealProxy {
        RealProxy::tinyproxy_with("")
    }

    /// [`RealProxy::tinyproxy`] with `extra` lines appended to its
    /// configuration (`ConnectPort 443` makes it answer `CONNECT` to any
    /// other port with 403).
    pub fn tinyproxy_with(extra: &str) -> RealProxy {
        let dir = TempDir::new("tinyproxy");
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\n\
                 MaxClients 100\nAllow 127.0.0.1\nDisableViaHeader Yes\n{extra}\n",
                log.display()
            ),
        )
        .expect("write tinyproxy.conf");
        let child = spawn(
            "tinyproxy",
            Command::new("tinyproxy").arg("-d").arg("-c").arg(&conf),
        );
        RealProxy::ready(child, port, "http", Some(log), dir)
    }

    /// microsocks (SOCKS5, names resolved by the proxy) on a free port of
    /// 127.0.0.1.
    pub fn microsocks() -> RealProxy {
        RealProxy::microsocks_args(&[])
    }

    /// [`RealProxy::microsocks`] requiring RFC 1929 user name `user` and
    /// password `pass` (`-u USER -P PASS`; a test password, so on argv).
    pub fn microsocks_with_auth(user: &str, pass: &str) -> RealProxy {
        RealProxy::microsocks_args(&["-u", user, "-P", pass])
    }

    fn microsocks_args(extra: &[&str]) -> RealProxy {
        let dir = TempDir::new("microsocks");
        let port = free_port();
        let child = spawn(
            "microsocks",
            Command::new("microsocks")
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .args(extra),
        );
        RealProxy::ready(child, port, "socks5h", None, dir)
    }

    fn ready(
        mut child: Child,
        port: u16,
        scheme: &'static str,
        log: Option<PathBuf>,
        dir: TempDir,
    ) -> RealProxy {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the {scheme} proxy exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the {scheme} proxy did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RealProxy {
            child,
            addr,
            scheme,
            log,
            _dir: dir,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `socks5h://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// What the proxy logged so far (tinyproxy; empty for microsocks).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }

    /// The `CONNECT host:port` tunnels the proxy logged (tinyproxy).
    pub fn connects(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("): CONNECT ").map(|(_, rest)| rest.to_owned()))
            .collect()
    }

    /// The request lines the proxy logged (`GET http://… HTTP/1.1`,
    /// `CONNECT host:port HTTP/1.1`), in order (tinyproxy).
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("): ").map(|(_, rest)| rest.to_owned()))
            .filter(|r| r.contains(" HTTP/1."))
            .collect()
    }
}

impl Drop for RealProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(program: &str, command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {program} ({e}): install it with `apt-get install -y {program}` (.ci/run does)"
            )
        })
}

/// A port of 127.0.0.1 nobody listens on now (a proxy is told to take it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A `CONNECT`-only http proxy on 127.0.0.1 that wants Digest credentials
/// (RFC 7616, SHA-256, qop `auth`): a `CONNECT` without a valid
/// `Proxy-Authorization` gets a 407 challenge (and the connection is
/// closed); one with a valid answer gets its tunnel. Every `CONNECT` is
/// recorded ([`DigestProxy::connects`]).
#[derive(Debug)]
pub struct DigestProxy {
    addr: SocketAddr,
    state: Arc<DigestState>,
}

#[derive(Debug)]
struct DigestState {
    user: String,
    password: String,
    stop: AtomicBool,
    connects: Mutex<Vec<DigestConnect>>,
}

/// One `CONNECT` a [`DigestProxy`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestConnect {
    /// `host:port`.
    pub target: String,
    /// The answer's `nc`, when the request carried an answer.
    pub nc: Option<String>,
    /// Whether the answer was valid (and the tunnel opened).
    pub accepted: bool,
}

/// The realm and nonce a [`DigestProxy`] challenges with.
const DIGEST_REALM: &str = "bits-testkit proxy";
const DIGEST_NONCE: &str = "5f1c2d3e4a5b6c7d8e9f";

impl DigestProxy {
    /// A Digest proxy taking `user` with `password`.
    pub fn start(user: &str, password: &str) -> DigestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(DigestState {
            user: user.to_owned(),
            password: password.to_owned(),
            stop: AtomicBool::new(false),
            connects: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve_digest(conn, &shared));
            }
        });
        DigestProxy { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `CONNECT`s received so far, in order.
    pub fn connects(&self) -> Vec<DigestConnect> {
        self.state
            .connects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for DigestProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn sha256_hex(text: &str) -> String {
    openssl::sha::sha256(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The parameters of a `Digest k=v, k="v"` header value.
fn digest_params(value: &str) -> Option<HashMap<String, String>> {
    let rest = value.strip_prefix("Digest ")?;
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            chars.by_ref().take_while(|c| *c != '"').collect()
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Some(params)
}

fn serve_digest(mut conn: TcpStream, state: &DigestState) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        let _ = conn.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let authorization = lines.find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case("proxy-authorization"))
            .map(|(_, v)| v.trim().to_owned())
    });
    let params = authorization.as_deref().and_then(digest_params);
    let accepted = params.as_ref().is_some_and(|p| {
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
        let ha1 = sha256_hex(&format!("{}:{DIGEST_REALM}:{}", state.user, state.password));
        let ha2 = sha256_hex(&format!("CONNECT:{}", get("uri")));
        let expected = sha256_hex(&format!(
            "{ha1}:{}:{}:{}:{}:{ha2}",
            get("nonce"),
            get("nc"),
            get("cnonce"),
            get("qop")
        ));
        get("username") == state.user
            && get("realm") == DIGEST_REALM
            && get("nonce") == DIGEST_NONCE
            && get("uri") == target
            && get("qop") == "auth"
            && get("algorithm").eq_ignore_ascii_case("SHA-256")
            && get("response") == expected
    });
    state
        .connects
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(DigestConnect {
            target: target.to_owned(),
            nc: params.as_ref().and_then(|p| p.get("nc").cloned()),
            accepted,
        });
    if !accepted {
        let _ = conn.write_all(
            format!(
                "HTTP/1.1 407 Proxy Authentication Required\r\n\
                 Proxy-Authenticate: Digest realm=\"{DIGEST_REALM}\", qop=\"auth\", \
                 algorithm=SHA-256, nonce=\"{DIGEST_NONCE}\", opaque=\"bits\"\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        return;
    }
    let Ok(origin) = TcpStream::connect(target) else {
        let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = conn.set_read_timeout(None);
    if conn
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (Ok(mut up_r), Ok(mut down_w)) = (conn.try_clone(), origin.try_clone()) else {
        return;
    };
    let (mut down_r, mut up_w) = (origin, conn);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_r, &mut down_w);
        let _ = down_w.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut down_r, &mut up_w);
    let _ = up_w.shutdown(Shutdown::Write);
}
