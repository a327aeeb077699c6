//! A TCP accept loop on 127.0.0.1 on its own thread with its own tokio
//! runtime, stopped (and joined) on drop.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// A running accept loop.
#[derive(Debug)]
pub(crate) struct ServerThread {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Binds 127.0.0.1:`port` (0: any free port), with `SO_REUSEPORT` when
    /// `reuse_port`, and runs `handle` for every accepted connection.
    pub(crate) fn spawn<F, Fut>(
        name: &str,
        port: u16,
        reuse_port: bool,
        handle: F,
    ) -> io::Result<ServerThread>
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<SocketAddr>>();
        let (shutdown_tx, mut shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("testkit-{name}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match bind(port, reuse_port) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(listener.local_addr());
                    loop {
                        tokio::select! {
                            _ = &mut shutdown_rx => break,
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    tokio::spawn(handle(stream));
                                }
                            }
                        }
                    }
                });
                // Dropping the runtime cancels the connection tasks.
                drop(rt);
            })?;
        match ready_rx.recv() {
            Ok(Ok(addr)) => Ok(ServerThread {
                addr,
                shutdown: Some(shutdown_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other("server thread died before binding"))
            }
        }
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn bind(port: u16, reuse_port: bool) -> io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(1024)
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("test server thread on {} panicked", self.addr);
            }
        }
    }
}
