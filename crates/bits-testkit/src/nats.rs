//! A real `nats-server` with JetStream on 127.0.0.1 (Debian's package,
//! installed by `.ci/run`): a free port, a temporary store folder, run as
//! a child of the test and stopped by its PID. [`NatsServer::stop`] and
//! [`NatsServer::start_again`] take it away and bring it back on the same
//! port with the same store, for the tests of an outage.
//! [`NatsServer::start_with`] adds a configuration snippet (authorization,
//! TLS, operator mode) written to `nats.conf` in its folder.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::temp::TempDir;

/// A running (or stopped) nats-server.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    config: Option<PathBuf>,
}

impl NatsServer {
    /// `nats-server -js` on a free port of 127.0.0.1, ready for clients.
    pub fn start() -> NatsServer {
        NatsServer::start_with("")
    }

    /// [`NatsServer::start`] with `config` (nats-server's configuration
    /// syntax: `authorization { token: "…" }`, `tls { cert_file: … }`,
    /// `operator: …`) as its configuration file; the command line still
    /// sets the address, the port, JetStream and the store. Empty: no
    /// file. Files the snippet names are the test's to write first.
    pub fn start_with(config: &str) -> NatsServer {
        let dir = TempDir::new("nats");
        let config = (!config.is_empty()).then(|| {
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, config).unwrap();
            path
        });
        let mut server = NatsServer {
            child: None,
            port: crate::proxies::free_port(),
            dir,
            config,
        };
        // A free port can be taken by another test's server before this
        // one binds it: then another port.
        for _ in 0..5 {
            match server.launch() {
                Ok(()) => return server,
                Err(log) if log.contains("address already in use") => {
                    server.port = crate::proxies::free_port();
                }
                Err(log) => panic!("nats-server ended: {log}"),
            }
        }
        panic!("nats-server found no free port: {}", server.log());
    }

    /// The port it listens on (for `tls://localhost:PORT`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGTERM by PID, then SIGKILL after 5 s), keeping
    /// its store.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it (again) on the same port with the same store and
    /// configuration; returns once it accepts connections.
    pub fn start_again(&mut self) {
        if let Err(log) = self.launch() {
            panic!("nats-server ended: {log}");
        }
    }

    /// Runs nats-server and waits until it says it is ready (not merely
    /// until the port answers: another process may hold it); its log when
    /// it ends first.
    fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the server runs already");
        let store = self.dir.path().join("js");
        let log = std::fs::File::create(self.dir.path().join("nats.log")).unwrap();
        let mut command = Command::new("nats-server");
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}): install it with `apt-get install -y nats-server` (.ci/run does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains("Server is ready") || TcpStream::connect(("127.0.0.1", self.port)).is_err()
        {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("({status}) {}", self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// The server's folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
