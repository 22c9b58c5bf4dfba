//! The `#[library_service]` attribute of [`dispatch`](https://docs.rs/dispatch): use it through
//! `dispatch::prelude::*`, not from this crate.
//!
//! Parse → validate → expand, thiserror-impl's shape, each module using only those before it:
//! the leaves `ctxt` (every mistake, collected), `signature` (tokens as text) and `agent_methods`
//! (the names `Agent` takes); `attr` (the arguments and `#[blocking]`) and `ast` (the impl block,
//! borrowed so every message can point at the user's tokens); `valid` (the rules); `fallback` (on
//! a mistake, the errors and the impl block unchanged) and `expand` (the generated code).
//! Streaming methods (`Feed<T>`, `#[subscription]`) have their own `stream_attr` (parse),
//! `stream_valid` (rules) and `stream_expand` (generated code); `spans` is a leaf.

mod agent_methods;
mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod local_client;
mod oneway;
mod signature;
mod spans;
mod stream_attr;
mod stream_expand;
mod stream_valid;
mod valid;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

#[doc = include_str!("library_service.md")]
#[proc_macro_attribute]
pub fn library_service(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::library_service(args.into(), input.into()).into()
}
