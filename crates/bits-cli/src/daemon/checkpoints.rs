//! The thread that checkpoints the store's WAL.

use std::path::Path;

use bits_core::Hresult;

use crate::error::Failure;
use crate::store::{self, Store};

/// The thread that checkpoints the store's WAL ([`Store::checkpoint`],
/// on a connection of its own) after every job that ends and every
/// [`store::CHECKPOINT_EVERY`], so that neither a command's commit nor a
/// save of a running job pays for an automatic checkpoint.
#[derive(Debug)]
pub(super) struct Checkpoints(std::sync::mpsc::SyncSender<()>);

impl Checkpoints {
    pub(super) fn start(dir: &Path) -> Result<Checkpoints, Failure> {
        use std::sync::mpsc::RecvTimeoutError;
        let store = Store::open(dir)?;
        // One request waiting is enough: more would copy the same WAL.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || loop {
                match rx.recv_timeout(store::CHECKPOINT_EVERY) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {
                        if let Err(f) = store.checkpoint() {
                            tracing::warn!("cannot checkpoint the store: {f}");
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .map_err(|e| Failure::runtime(Hresult::E_FAIL, format!("cannot start a thread: {e}"), ""))?;
        Ok(Checkpoints(tx))
    }

    /// Asks for a checkpoint soon.
    pub(super) fn request(&self) {
        let _ = self.0.try_send(());
    }
}
