//! Collects every mistake of one `#[library_service]` so they are all reported in one compile
//! (serde_derive's `internals/ctxt.rs`, without the shared borrow).

use quote::ToTokens;
use std::fmt::Display;

/// The errors found so far, each spanned on the token it is about.
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    /// An error spanned on `tokens` (the whole range of them).
    pub(crate) fn error(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.errors
            .push(syn::Error::new_spanned(tokens.into_token_stream(), message));
    }

    /// An error already built, such as one of syn's parse errors.
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// Every error combined into one, or `Ok` if there was none.
    pub(crate) fn check(self) -> syn::Result<()> {
        let mut errors = self.errors.into_iter();
        let Some(mut combined) = errors.next() else {
            return Ok(());
        };
        for error in errors {
            combined.combine(error);
        }
        Err(combined)
    }
}
