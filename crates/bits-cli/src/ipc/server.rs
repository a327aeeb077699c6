//! The daemon's side of the socket: it accepts connections, answers
//! `ping` and `subscribe` itself, and hands every other request to the
//! daemon's loop as a [`Pending`], with the channel its reply goes back on.

use std::time::Duration;

use bits_core::Hresult;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use super::protocol::{Reply, Request, CHANGED_LINE};
use crate::error::Failure;

/// A request for the daemon's loop and where its reply goes.
pub type Pending = (Request, oneshot::Sender<Reply>);

/// Counts the saves that changed a job's state; `subscribe` connections
/// ([`Request::Subscribe`]) write a line each time it moves.
#[derive(Debug, Clone, Default)]
pub struct Changes(watch::Sender<u64>);

impl Changes {
    /// Wakes every subscriber.
    pub fn announce(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Accepts connections on `listener` until the daemon stops, each served
/// by a task of its own on the daemon's `LocalSet`.
pub async fn accept_loop(
    listener: tokio::net::UnixListener,
    requests: mpsc::UnboundedSender<Pending>,
    changes: Changes,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(serve_connection(stream, requests.clone(), changes.0.subscribe()));
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: tokio::net::UnixStream,
    requests: mpsc::UnboundedSender<Pending>,
    mut changes: watch::Receiver<u64>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Ping) => Reply {
                pid: Some(std::process::id()),
                ..Reply::ok(Hresult::S_OK)
            },
            Ok(Request::Subscribe) => {
                changes.mark_unchanged();
                let mut text = serde_json::to_string(&Reply::ok(Hresult::S_OK)).unwrap_or_default();
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
                // From now on the connection only carries wake-ups, until
                // the client goes away (or the daemon does).
                loop {
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() || write.write_all(CHANGED_LINE.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        line = lines.next_line() => {
                            if !matches!(line, Ok(Some(_))) {
                                return;
                            }
                        }
                    }
                }
            }
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if requests.send((request, tx)).is_err() {
                    break;
                }
                match rx.await {
                    Ok(reply) => reply,
                    Err(_) => break,
                }
            }
            Err(e) => Reply::failed(&Failure::bad_input(
                Hresult::E_INVALIDARG,
                format!("bad request to the daemon: {e}"),
                "",
            )),
        };
        let Ok(mut text) = serde_json::to_string(&reply) else {
            break;
        };
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            break;
        }
    }
}
