//! `serve --root DIR [--listen ADDR] [--cert F --key F] [--max-upload-size N]
//! [--allow-overwrite] [--reply-cmd PROG]`: the upload (and download)
//! server of `docs/spec/upload.md` (bits-serve), in the foreground until it
//! is killed. Prints `listening ADDR` once it accepts connections.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bits_core::Hresult;
use bits_serve::{Acceptor, Limits, Root, Server, Sessions};

use super::Ctx;
use crate::cli::ServeArgs;
use crate::error::Failure;

pub(super) fn serve(_ctx: &Ctx, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let root = Root::new(&args.root).map_err(|e| {
        Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("--root {}: {e}", args.root.display()),
            "give an existing folder",
        )
    })?;
    let listen: SocketAddr = args.listen.parse().map_err(|e| {
        Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("--listen {:?}: {e}", args.listen),
            "give an address and port, e.g. 127.0.0.1:8080 or [::]:443",
        )
    })?;
    let max_upload_size = match &args.max_upload_size {
        None => None,
        Some(text) => Some(parse_size(text).ok_or_else(|| {
            Failure::bad_input(
                Hresult::E_INVALIDARG,
                format!("--max-upload-size {text:?} is not a size"),
                "give bytes, or a number with K, M or G (1024-based)",
            )
        })?),
    };
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(Acceptor::from_pem_files(cert, key).map_err(|e| {
            Failure::bad_input(
                Hresult::E_INVALIDARG,
                format!("--cert {} --key {}: {e}", cert.display(), key.display()),
                "give a PEM certificate chain (leaf first) and its PEM private key",
            )
        })?),
        _ => None,
    };
    let sessions = Sessions::new(
        root,
        Limits {
            max_upload_size,
            allow_overwrite: args.allow_overwrite,
            ..Limits::default()
        },
    );
    if let Some(program) = &args.reply_cmd {
        if !program.is_file() {
            return Err(Failure::bad_input(
                Hresult::FILE_NOT_FOUND,
                format!("--reply-cmd {}: no such program", program.display()),
                "give the path of an executable",
            )
            .into());
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            Failure::runtime(
                bits_core::BitsError::local("bind", listen, e).hresult(),
                format!("cannot listen on {listen}"),
                "pick another address or port",
            )
        })?;
        let addr = listener.local_addr()?;
        out!("listening {addr}");
        tracing::info!(%addr, https = tls.is_some(), "bits serve ready");
        let mut server = Server::new(sessions);
        if let Some(program) = &args.reply_cmd {
            server = server.with_reply_command(program.clone());
        }
        Arc::new(server).run(listener, tls).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `123`, `64K`, `10M`, `2G` (1024-based).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1T"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("-1"), None);
    }
}
