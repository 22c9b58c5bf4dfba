//! Unit tests of the expansion, on token streams: what is generated, and which mistakes are found.
//!
//! Over 400 lines and still one concept: every test expands a token stream with
//! `library_service` and reads the result through the helpers at the top (`expand`, `errors`,
//! `client_method`…), which all of them share.

use crate::ast::snake_case;
use crate::expand::library_service;
use crate::signature::render;
use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{ImplItem, Item, ItemImpl, ItemStruct, ItemTrait, Type};

/// The expansion of `#[library_service(args)] input`, parsed back as items.
fn expand(args: TokenStream, input: TokenStream) -> Vec<Item> {
    let out = library_service(args, input);
    match syn::parse2::<syn::File>(out.clone()) {
        Ok(file) => file.items,
        Err(e) => panic!("the expansion does not parse ({e}):\n{out}"),
    }
}

/// The messages of the `compile_error!`s in an expansion.
fn errors(args: TokenStream, input: TokenStream) -> Vec<String> {
    expand(args, input)
        .iter()
        .filter_map(|item| match item {
            Item::Macro(m) if tokens(&m.mac.path).ends_with("compile_error") => {
                let lit: syn::LitStr = m.mac.parse_body().expect("a string literal");
                Some(lit.value())
            }
            _ => None,
        })
        .collect()
}

fn demo() -> TokenStream {
    quote! {
        impl Demo {
            /// Gets the name.
            pub async fn get_name(&self) -> String { "get name".into() }
            pub fn add(&self, a: i64, b: i64) -> i64 { a + b }
            #[blocking]
            pub fn hash(&self, data: Vec<u8>) -> u64 { data.len() as u64 }
            pub async fn parse(&self, s: String) -> Result<u32, ParseErr> { todo!() }
            pub fn same(&self, (a, b): (u8, Self), _: Vec<Self>) -> Option<Self> { None }
            fn helper(&self) {}
            fn new_thing() -> u32 { 1 }
            pub async fn shutdown(&self) {}
        }
    }
}

fn tokens(t: impl ToTokens) -> String {
    t.into_token_stream().to_string()
}

fn find_impl(items: &[Item], pred: impl Fn(&ItemImpl) -> bool) -> &ItemImpl {
    items
        .iter()
        .find_map(|i| match i {
            Item::Impl(imp) if pred(imp) => Some(imp),
            _ => None,
        })
        .expect("no such impl block")
}

fn is_trait_impl(imp: &ItemImpl, name: &str) -> bool {
    imp.trait_
        .as_ref()
        .is_some_and(|(_, path, _)| path.segments.last().is_some_and(|s| s.ident == name))
}

fn client_impl(items: &[Item]) -> &ItemImpl {
    find_impl(items, |imp| {
        imp.trait_.is_none() && tokens(&imp.self_ty).starts_with("DemoClient")
    })
}

fn client_method<'a>(items: &'a [Item], name: &str) -> &'a syn::ImplItemFn {
    client_impl(items)
        .items
        .iter()
        .find_map(|i| match i {
            ImplItem::Fn(f) if f.sig.ident == name => Some(f),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no client method `{name}`"))
}

#[test]
fn generates_the_client_struct_and_its_methods() {
    let items = expand(quote!(close = shutdown), demo());
    let client = items
        .iter()
        .find_map(|i| match i {
            Item::Struct(s) if s.ident == "DemoClient" => Some(s),
            _ => None,
        })
        .expect("DemoClient");
    assert!(matches!(client.vis, syn::Visibility::Public(_)));
    assert!(has_doc(client));
    let names: Vec<String> = client_impl(&items)
        .items
        .iter()
        .filter_map(|i| match i {
            ImplItem::Fn(f) => Some(f.sig.ident.to_string()),
            _ => None,
        })
        .collect();
    // Remote methods only: not the private helper, the associated fn or the close hook.
    let expected = [
        "with_timeout",
        "service_name",
        "get_name",
        "add",
        "hash",
        "parse",
        "same",
    ];
    assert_eq!(names, expected);
    let add = client_method(&items, "add");
    assert!(add.sig.asyncness.is_some());
    assert_eq!(tokens(&add.sig.inputs), "self , a : i64 , b : i64");
    assert_eq!(
        render(&add.sig.output),
        "-> ::core::result::Result<i64, ::dispatch::__private::Error>"
    );
    assert!(tokens(&add.block).contains(
        "Wire :: < ((i64 , i64 ,) , i64) > :: NEW) . call (& self . inner , \"add\" , & (a , b ,))"
    ));
}

fn has_doc(s: &ItemStruct) -> bool {
    s.attrs.iter().any(|a| a.path().is_ident("doc"))
}

#[test]
fn a_result_method_uses_call_fallible_and_a_typed_error() {
    let items = expand(quote!(), demo());
    let parse = client_method(&items, "parse");
    assert_eq!(
        render(&parse.sig.output),
        "-> ::core::result::Result<u32, ::dispatch::__private::Error<ParseErr>>"
    );
    assert!(tokens(&parse.block).contains(
        "Wire :: < ((String ,) , :: core :: result :: Result < u32 , ParseErr >) > :: NEW) \
         . call_fallible"
    ));
    let get_name = client_method(&items, "get_name");
    assert!(tokens(&get_name.block).contains(
        "Wire :: < (() , String) > :: NEW) . call (& self . inner , \"get_name\" , & ())"
    ));
}

#[test]
fn self_is_replaced_by_the_service_type_in_the_stub() {
    let items = expand(quote!(), demo());
    let same = client_method(&items, "same");
    assert_eq!(
        tokens(&same.sig.inputs),
        "self , arg0 : (u8 , Demo) , arg1 : Vec < Demo >"
    );
    assert_eq!(
        render(&same.sig.output),
        "-> ::core::result::Result<Option<Demo>, ::dispatch::__private::Error>"
    );
    assert!(!tokens(client_impl(&items)).contains("Self ,"));
}

#[test]
fn blocking_is_stripped_and_runs_on_the_blocking_pool() {
    let items = expand(quote!(), demo());
    let original = find_impl(&items, |imp| {
        imp.trait_.is_none() && tokens(&imp.self_ty) == "Demo"
    });
    let has_blocking = original.items.iter().any(|i| match i {
        ImplItem::Fn(f) => f.attrs.iter().any(|a| a.path().is_ident("blocking")),
        _ => false,
    });
    assert!(!has_blocking, "#[blocking] must be stripped");
    let erased = tokens(find_impl(&items, |imp| is_trait_impl(imp, "ErasedService")));
    assert!(
        erased.contains("run_blocking (move | | self . hash (data))"),
        "{erased}"
    );
    assert!(
        !erased.contains("run_blocking (move | | self . add"),
        "{erased}"
    );
}

#[test]
fn the_dispatcher_has_one_arm_per_remote_method() {
    let items = expand(quote!(close = shutdown), demo());
    let erased = find_impl(&items, |imp| is_trait_impl(imp, "ErasedService"));
    let text = tokens(erased);
    for method in ["get_name", "add", "hash", "parse", "same"] {
        assert!(
            text.contains(&format!("\"{method}\" =>")),
            "no arm for {method}"
        );
    }
    for local in ["helper", "new_thing", "\"shutdown\""] {
        assert!(!text.contains(local), "{local} must stay local");
    }
    // The arguments are decoded before the future is made (from the borrowed request bytes).
    assert!(text.contains("match (& :: dispatch :: __private :: Wire :: < (i64 , i64 ,) > :: NEW) . decode_args (\"demo\" , \"add\" , args)"), "{text}");
    assert!(text.contains("Err (error) => :: dispatch :: __private :: failed (error)"));
    assert!(text.contains("assert_send (self . get_name ()) . await"));
    assert!(text.contains("unknown_method (\"demo\" , method)"));
    // The close hook is forwarded, and awaited because it is async.
    assert!(text.contains("fn close"));
    assert!(text.contains("assert_send (self . shutdown ()) . await"));
}

#[test]
fn the_registration_lists_the_methods_and_their_signatures() {
    let items = expand(quote!(), demo());
    let submit = items
        .iter()
        .find_map(|i| match i {
            Item::Macro(m) if tokens(&m.mac.path).ends_with("submit") => {
                Some(tokens(&m.mac.tokens))
            }
            _ => None,
        })
        .expect("an inventory::submit!");
    assert!(submit.contains("name : \"demo\""));
    assert!(submit.contains("type_name : \"Demo\""));
    for signature in [
        "async fn get_name() -> String",
        "fn add(a: i64, b: i64) -> i64",
        "fn hash(data: Vec<u8>) -> u64",
        "async fn parse(s: String) -> Result<u32, ParseErr>",
        "fn same(arg0: (u8, Demo), arg1: Vec<Demo>) -> Option<Demo>",
    ] {
        assert!(
            submit.contains(&format!("{signature:?}")),
            "{signature} in {submit}"
        );
    }
    assert!(submit.contains("init_default :: < Demo > ()"));
}

#[test]
fn init_name_and_crate_arguments_are_used() {
    let items = expand(
        quote!(name = "other", init = Demo::connect, crate = crate::facade),
        demo(),
    );
    let all = tokens(quote!(#(#items)*));
    assert!(all.contains("init_with :: < Demo , _ , _ > (Demo :: connect ())"));
    assert!(all.contains("ServiceClient :: new (self , \"other\")"));
    assert!(all.contains("crate :: facade :: __private :: ErasedService"));
    assert!(!all.contains(":: dispatch :: __private"));
    let ext = items
        .iter()
        .find_map(|i| match i {
            Item::Trait(t) if t.ident == "DemoAgentExt" => Some(t),
            _ => None,
        })
        .expect("DemoAgentExt");
    assert_eq!(ext_method(ext), "other");
}

fn ext_method(t: &ItemTrait) -> String {
    match t.items.first() {
        Some(syn::TraitItem::Fn(f)) => f.sig.ident.to_string(),
        _ => panic!("the extension trait has one method"),
    }
}

#[test]
fn the_extension_trait_is_implemented_for_the_agent() {
    let items = expand(quote!(), demo());
    let imp = find_impl(&items, |imp| is_trait_impl(imp, "DemoAgentExt"));
    assert_eq!(tokens(&imp.self_ty), ":: dispatch :: __private :: Agent");
    assert!(tokens(imp).contains("fn demo (& self) -> DemoClient < '_ >"));
}

#[test]
fn checks_are_emitted_for_every_wire_type_and_the_service_type() {
    let items = expand(quote!(), demo());
    let checks = items
        .iter()
        .find(|i| matches!(i, Item::Const(c) if c.ident == "_"))
        .expect("a `const _` of checks");
    let all = tokens(checks);
    assert!(all.contains("assert_service_type :: < Demo >"));
    for ty in [
        "String",
        "i64",
        "Vec < u8 >",
        "u64",
        "u32",
        "ParseErr",
        "(u8 , Demo)",
    ] {
        assert!(
            all.contains(&format!("assert_wire_type :: < {ty} >")),
            "{ty}"
        );
    }
}

#[test]
fn every_mistake_is_reported_at_once() {
    let found = errors(
        quote!(),
        quote! {
            impl Demo {
                pub fn bump(&mut self) {}
                pub fn greet(&self, name: &str) -> String { name.into() }
                pub fn echo<T>(&self, value: T) -> T { value }
                pub fn with_timeout(&self) {}
            }
        },
    );
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].contains("instead of `&mut self`"));
    assert!(found[1].contains("take `String` instead of `&str`"));
    assert!(found[2].contains("cannot be generic"));
    assert!(found[3].contains("conflicts with the generated `DemoClient::with_timeout`"));
}

#[test]
fn on_error_the_impl_block_is_kept_without_helpers_and_nothing_else_is_generated() {
    let items = expand(
        quote!(),
        quote! {
            impl Demo {
                #[blocking]
                pub fn hash(&mut self) -> u64 { 0 }
            }
        },
    );
    assert_eq!(items.len(), 2, "one compile_error! and the impl block");
    let Item::Impl(imp) = &items[1] else {
        panic!("the impl block is kept")
    };
    assert!(!tokens(imp).contains("blocking"));
}

#[test]
fn attribute_mistakes_are_all_reported() {
    let found = errors(
        quote!(name = "Bad-Name", timeout = 5, close = "x", init),
        quote!(impl Demo {}),
    );
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].contains("unknown argument `timeout`"));
    assert!(found[1].contains("expected the name of a method"));
    assert!(found[2].contains("expected `init = …`"));
    assert!(found[3].contains("`Bad-Name` must be a snake_case identifier"));
}

#[test]
fn misplaced_attributes_are_reported() {
    let on_struct = errors(
        quote!(),
        quote!(
            pub struct Demo;
        ),
    );
    assert_eq!(on_struct.len(), 1);
    assert!(on_struct[0].starts_with("#[library_service] goes on an inherent `impl` block"));
    let on_trait_impl = errors(quote!(), quote!(impl Clone for Demo {}));
    assert!(on_trait_impl[0].contains("not on a trait impl"));
    let generic = errors(
        quote!(),
        quote!(
            impl<T> Demo<T> {}
        ),
    );
    assert!(generic[0].contains("remove the generic parameters"));
    let close = errors(quote!(close = stop), quote!(impl Demo {}));
    assert!(close[0].contains("no method `stop` in this impl block"));
}

#[test]
fn method_mistakes_say_how_to_fix_them() {
    let found = errors(
        quote!(),
        quote! {
            impl Demo {
                pub fn a(self) {}
                pub fn b(&self, v: &[u8], p: &std::path::Path) -> &Self { self }
                pub fn c(&self, v: impl Into<String>) {}
                #[blocking] pub async fn d(&self) {}
                #[blocking] fn e(&self) {}
                pub unsafe fn f(&self) {}
                pub fn g<'a>(&self) {}
            }
        },
    );
    let expected = [
        "cannot take it by value; write `&self`",
        "take `Vec<u8>` instead of `&[u8]`",
        "take `PathBuf` instead of `&std::path::Path`",
        "return `Self` instead of `&Self`",
        "`impl Trait` arguments cannot cross the wire",
        "an `async fn` already runs on it; remove `#[blocking]`",
        "cannot be `unsafe`",
        "cannot have lifetime parameters",
        "`#[blocking]` applies to remote methods only",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for text in expected {
        assert!(
            found.iter().any(|f| f.contains(text)),
            "{text} in {found:#?}"
        );
    }
}

#[test]
fn service_names() {
    assert_eq!(snake_case("Demo"), "demo");
    assert_eq!(snake_case("MyService"), "my_service");
    assert_eq!(snake_case("HTTPServer"), "http_server");
    assert_eq!(snake_case("ConfigV2"), "config_v2");
    let keyword = errors(quote!(), quote!(impl Type {}));
    assert!(keyword[0].contains("`type`, a Rust keyword"));
    let shadowed = errors(quote!(), quote!(impl Manifest {}));
    assert!(shadowed[0].contains("conflicts with the method `Agent::manifest`"));
}

#[test]
fn signatures_are_rendered_like_rustfmt() {
    let ty: Type = syn::parse_quote!(::std::collections::HashMap<String, Vec<(u8, [u8; 4])>>);
    assert_eq!(
        render(&ty),
        "::std::collections::HashMap<String, Vec<(u8, [u8; 4])>>"
    );
    let ty: Type = syn::parse_quote!(Box<dyn Fn(&'static str) -> u8 + Send>);
    assert_eq!(render(&ty), "Box<dyn Fn(&'static str) -> u8 + Send>");
}

#[test]
fn handover_forwards_the_hooks_and_is_off_by_default() {
    let items = expand(quote!(handover, close = shutdown), demo());
    let erased = find_impl(&items, |imp| is_trait_impl(imp, "ErasedService"));
    let text = tokens(erased);
    assert!(text.contains("fn has_handover"));
    assert!(text.contains("handover_snapshot (self)"));
    assert!(text.contains("handover_restore (self , state)"));
    let items = expand(quote!(), demo());
    let erased = find_impl(&items, |imp| is_trait_impl(imp, "ErasedService"));
    assert!(!tokens(erased).contains("has_handover"));
    let twice = errors(quote!(handover, handover), demo());
    assert!(twice[0].contains("`handover` is given twice"), "{twice:?}");
    let valued = errors(quote!(handover = yes), demo());
    assert!(
        valued[0].contains("`handover` takes no value"),
        "{valued:?}"
    );
}
