//! Unit tests of the expansion, on token streams.

use crate::expand::library_service;
use proc_macro2::TokenStream;
use quote::quote;

fn expand(args: TokenStream, input: TokenStream) -> String {
    library_service(args, input).to_string()
}

#[test]
fn dump() {
    let out = expand(
        quote!(),
        quote! {
            impl Demo {
                /// Gets the name.
                pub async fn get_name(&self) -> String { "get name".into() }
                pub fn add(&self, a: i64, b: i64) -> i64 { a + b }
                #[blocking] pub fn hash(&self, data: Vec<u8>) -> u64 { 0 }
                pub async fn parse(&self, s: String) -> Result<u32, ParseErr> { todo!() }
                pub fn same(&self, (a, b): (u8, Self), _: Vec<Self>) {}
                fn helper(&self) {}
            }
        },
    );
    std::fs::write("/tmp/expansion.rs", out).unwrap();
}
