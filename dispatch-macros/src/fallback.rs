//! What `#[library_service]` emits when the impl block has mistakes: the errors, plus the user's
//! code as written (thiserror's `fallback.rs`), so each mistake gives one message and nothing
//! else breaks because the attribute failed.

use crate::attr::is_blocking;
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{ImplItem, Item, ItemImpl};

/// The errors, then `item` with only the `#[blocking]` helper attributes removed (rustc would
/// report them as unknown attributes otherwise).
pub(crate) fn expand(item: &Item, errors: &syn::Error) -> TokenStream {
    let mut out = errors.to_compile_error();
    match item {
        Item::Impl(imp) => strip_helpers(imp).to_tokens(&mut out),
        other => other.to_tokens(&mut out),
    }
    out
}

/// `imp` without the `#[blocking]` and `#[oneway]` attributes of its methods.
pub(crate) fn strip_helpers(imp: &ItemImpl) -> ItemImpl {
    let mut imp = imp.clone();
    for item in &mut imp.items {
        if let ImplItem::Fn(f) = item {
            f.attrs.retain(|a| {
                !is_blocking(a)
                    && !crate::stream_attr::is_stream_helper(a)
                    && !crate::oneway::is_oneway(a)
            });
        }
    }
    imp
}
