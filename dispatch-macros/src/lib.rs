//! placeholder
mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod signature;
mod valid;

use proc_macro::TokenStream;

/// placeholder
#[proc_macro_attribute]
pub fn library_service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::library_service(args.into(), input.into()).into()
}
#[cfg(test)] mod tests;
