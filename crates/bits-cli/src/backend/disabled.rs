//! The twin of the backend modules for names this build does not carry: a
//! backend left out at build time is refused by name with `E_NOTIMPL`
//! (exit 2), and the line says how to get it; an unknown name is
//! `E_INVALIDARG`.

use bits_core::Hresult;

use super::{compiled_names, KNOWN};
use crate::error::Failure;

/// The failure for `--backend NAME` when NAME is not compiled in.
pub fn refuse(name: &str) -> Failure {
    let wanted = name.trim().to_ascii_lowercase();
    if KNOWN.contains(&wanted.as_str()) {
        Failure::bad_input(
            Hresult::E_NOTIMPL,
            format!(
                "this bits was built without the {wanted} backend (it has: {})",
                compiled_names()
            ),
            format!(
                "nothing was changed; use --backend {} or rebuild with `--features {wanted}`",
                super::Backend::default_backend().name()
            ),
        )
    } else {
        Failure::bad_input(
            Hresult::E_INVALIDARG,
            format!("unknown backend {name:?}"),
            format!("use one of: {} (`bits backends` lists them)", compiled_names()),
        )
    }
}
