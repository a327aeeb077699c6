//! Real proxies on 127.0.0.1, as Debian packages them: tinyproxy (an HTTP
//! proxy: absolute-form requests and `CONNECT` tunnels) and microsocks
//! (SOCKS5). `.ci/run` installs both; a test that needs one panics with the
//! `apt-get` line when it is missing. Each proxy runs in the foreground as
//! a child of the test and is killed when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
