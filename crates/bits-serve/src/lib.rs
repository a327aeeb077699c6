//! The server end of the BITS upload protocol ([MC-BUP], `docs/spec/upload.md`):
//! what `bits serve` is made of, usable by an embedder without the CLI.
//!
//! This first part is the protocol's state, with no HTTP in it:
//! - [`Root`]: maps a request's URL path to a file under the served folder,
//!   and refuses every path that would leave it (`..`, encoded or not,
//!   absolute paths, a symlink anywhere on the way, the server's own
//!   hidden files);
//! - [`Sessions`]: upload sessions kept on disk beside their destination
//!   (a hidden partial file and its metadata), so a crash or a restart
//!   loses no session and no acknowledged byte; fragments are contiguous,
//!   an overlap writes only its new bytes, `Close-Session` makes the file
//!   appear atomically;
//! - [`ServeError`]: every refusal as the status and HRESULT an Ack
//!   carries.
//!
//! - [`Server`]: the HTTP/1.1 side on hyper, over any stream (the caller
//!   adds TLS): each `BITS_POST` packet answered with its Ack, and
//!   `GET`/`HEAD` with `Range` of finished files.
//!
//! Next: the reply command of upload-reply jobs and the `bits serve`
//! command.

#![deny(missing_docs)]

mod error;
mod root;
mod server;
mod session;
mod tls;

pub use error::ServeError;
pub use root::Root;
pub use server::{ServeBody, Server, PROTOCOL, REPLY_TIMEOUT};
pub use session::{ContentRange, FragmentAck, FragmentWriter, Limits, Sessions};
pub use tls::{Acceptor, Stream};
