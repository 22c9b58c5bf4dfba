//! The in-process client of one service, for the other services of the Library:
//! `Library::get().demo()` returns a `DemoLocal`, with the same methods and result types as the
//! worker's `DemoClient`, calling the hosted instance directly (no socket, no encoding), through
//! dispatch-core's `Library`, which counts, times and contains each call as a remote one.

use crate::ast::{Method, Output};
use crate::expand::ServiceGenerator;
use crate::oneway;
use crate::signature;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::Ident;

impl ServiceGenerator<'_> {
    /// `DemoLocal` and the `DemoLibraryExt` trait that gives `Library` its `demo()` method.
    pub(crate) fn local_client(&self) -> TokenStream {
        let p = &self.private;
        let service = self.service;
        let local = format_ident!("{}Local", service.ident);
        let ext = format_ident!("{}LibraryExt", service.ident);
        let accessor = &self.accessor;
        let name = &service.name;
        let type_name = signature::render(service.self_path);
        let doc = format!(
            " The Library's in-process client of its `{name}` service (`{type_name}`), for the \
             other services: `Library::get().{accessor}()`.\n\n The same methods and result \
             types as the worker's client `{}`, calling the hosted instance directly: no \
             socket, no encoding. Each call is counted in the method's metrics and a panic in \
             it comes back as `dispatch::Error::Panicked`.",
            self.client
        );
        let trait_doc = format!(
            " Gives the Library a client of its own `{name}` service, for the other services: \
             `Library::get().{name}()`. Bring it into scope with `use`."
        );
        let fn_doc = format!(" An in-process client of the Library's `{name}` service.");
        let methods = service.remote.iter().map(|m| self.local_method(m));
        quote! {
            #[doc = #doc]
            #[allow(unreachable_pub)]
            #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy)]
            pub struct #local<'a> {
                library: &'a #p::Library,
            }

            #[allow(unreachable_pub)]
            impl<'a> #local<'a> {
                /// The service's name on the wire.
                pub fn service_name(&self) -> &str {
                    #name
                }

                #(#methods)*
            }

            #[doc = #trait_doc]
            #[allow(unreachable_pub)]
            pub trait #ext {
                #[doc = #fn_doc]
                fn #accessor(&self) -> #local<'_>;
            }

            impl #ext for #p::Library {
                fn #accessor(&self) -> #local<'_> {
                    #local { library: self }
                }
            }
        }
    }

    /// One method of the in-process client.
    fn local_method(&self, m: &Method<'_>) -> TokenStream {
        // A streaming method's feed is shared per key and fanned out by the Library's stream
        // hub, which only serves workers: it has no in-process form (yet).
        if matches!(m.output, Output::Stream { .. }) {
            return TokenStream::new();
        }
        let at = Span::call_site().located_at(m.ident.span());
        let p = &self.private;
        let self_path = self.service.self_path;
        let name = &self.service.name;
        let ident = m.ident;
        let method = ident.to_string();
        let instance = Ident::new("instance", Span::mixed_site());
        let params = m.args.iter().map(|a| {
            let (name, ty) = (&a.name, &a.resolved);
            quote!(#name: #ty)
        });
        let names: Vec<_> = m.args.iter().map(|a| &a.name).collect();
        let invoke = quote_spanned!(at=> #instance.#ident(#(#names),*));
        let call = if m.blocking.is_some() {
            quote!(#p::run_blocking_local(move || #invoke).await)
        } else if m.is_async() {
            quote!(#invoke.await)
        } else {
            invoke
        };
        let summary = format!(
            " Calls `{}::{method}` in-process (in the Library only).",
            signature::render(self_path)
        );
        let get = quote!(self.library.__instance::<#self_path>(#name));
        let (output, body) = match &m.output {
            Output::Stream { .. } => return TokenStream::new(),
            _ if oneway::of(m) => (
                quote!(::core::result::Result<(), #p::Error>),
                quote! {
                    let #instance = #get?;
                    self.library.__call_oneway(#name, #method, async move { #call; }).await
                },
            ),
            Output::Fallible { ok, err } => (
                quote!(::core::result::Result<#ok, #p::Error<#err>>),
                quote! {
                    let #instance = #get.map_err(|e| e.map_service(|never| match never {}))?;
                    self.library.__call_fallible(#name, #method, async move { #call }).await
                },
            ),
            Output::Unit => (
                quote!(::core::result::Result<(), #p::Error>),
                quote! {
                    let #instance = #get?;
                    self.library.__call(#name, #method, async move { #call; }).await
                },
            ),
            Output::Value { resolved } => (
                quote!(::core::result::Result<#resolved, #p::Error>),
                quote! {
                    let #instance = #get?;
                    self.library.__call(#name, #method, async move { #call }).await
                },
            ),
        };
        let cfgs = m.cfgs();
        quote! {
            #(#cfgs)*
            #[doc = #summary]
            ///
            /// # Errors
            /// `dispatch::Error::Panicked` if the method panics (`dispatch::Error::Service(e)`
            /// for the `Err(e)` of a method returning `Result`).
            pub async fn #ident(self, #(#params),*) -> #output {
                #body
            }
        }
    }
}
