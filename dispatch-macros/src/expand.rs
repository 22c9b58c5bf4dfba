//! Parse → validate → expand. [`ServiceGenerator`] has one method per generated item, joined by
//! `ToTokens`: the impl block itself, the Library's dispatcher, the `inventory` registration, the
//! client stub, the Agent extension trait and the hidden compile-time checks.
//!
//! Over 400 lines and still one concept, the code emitted for one service: its items share the
//! generator's names (the `__private` path, `DemoClient`, `DemoAgentExt`, the accessor) and must
//! agree with each other (each client stub calls a dispatcher arm by the same method name), so
//! they are read side by side.

use crate::ast::{Method, Output, Service, NOT_INHERENT};
use crate::attr::{self, Args};
use crate::ctxt::Ctxt;
use crate::spans::located_at;
use crate::{fallback, signature, valid};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Ident, Item};

/// The expansion of `#[library_service(args)] input`: the service, or every mistake in it.
pub(crate) fn library_service(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let args = attr::parse_args(&mut cx, args);
    let item: Item = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(e) => {
            // rustc parsed the item already: this is syntax syn does not know yet.
            cx.push(e);
            let mut out = cx
                .check()
                .err()
                .map(|e| e.to_compile_error())
                .unwrap_or_default();
            out.extend(input);
            return out;
        }
    };
    let service = Service::from_item(&mut cx, &item, &args);
    if let Some(service) = &service {
        valid::check(&mut cx, &args, service);
    }
    match (cx.check(), service) {
        (Ok(()), Some(service)) => ServiceGenerator::new(&args, &service).into_token_stream(),
        (Err(errors), _) => fallback::expand(&item, &errors),
        (Ok(()), None) => {
            fallback::expand(&item, &syn::Error::new(Span::call_site(), NOT_INHERENT))
        }
    }
}

/// Emits the code of one valid service.
pub(crate) struct ServiceGenerator<'a> {
    args: &'a Args,
    pub(crate) service: &'a Service<'a>,
    /// `::dispatch::__private`, or `<crate = …>::__private`.
    pub(crate) private: TokenStream,
    /// `DemoClient`.
    pub(crate) client: Ident,
    /// `DemoAgentExt`.
    ext: Ident,
    /// The extension method: the wire name as an identifier.
    pub(crate) accessor: Ident,
}

impl<'a> ServiceGenerator<'a> {
    pub(crate) fn new(args: &'a Args, service: &'a Service<'a>) -> Self {
        let private = match &args.krate {
            Some(krate) => quote!(#krate::__private),
            None => quote!(::dispatch::__private),
        };
        ServiceGenerator {
            args,
            service,
            private,
            client: format_ident!("{}Client", service.ident),
            ext: format_ident!("{}AgentExt", service.ident),
            accessor: Ident::new(&service.name, service.name_span),
        }
    }

    /// The impl block as written, without the `#[blocking]` helper attributes.
    fn original(&self) -> TokenStream {
        fallback::strip_helpers(self.service.item).into_token_stream()
    }

    /// `impl ErasedService`: the Library's side, one `match` arm per remote method.
    fn erased_service(&self) -> TokenStream {
        let p = &self.private;
        let self_path = self.service.self_path;
        let method = Ident::new("method", Span::mixed_site());
        let args = Ident::new(
            if self.service.remote.is_empty() {
                "_args"
            } else {
                "args"
            },
            Span::mixed_site(),
        );
        let arms = self
            .service
            .remote
            .iter()
            .filter(|m| !matches!(m.output, Output::Stream { .. }))
            .map(|m| self.arm(m, &args));
        let close = self.close();
        let handover = self.handover();
        let streams = crate::stream_expand::erased_fns(&self.private, self.service);
        let service = &self.service.name;
        quote! {
            impl #p::ErasedService for #self_path {
                fn call(
                    self: ::std::sync::Arc<Self>,
                    #method: &str,
                    #args: &[u8],
                ) -> #p::CallFuture {
                    #[allow(unused_imports)]
                    use #p::WireFallback as _;
                    match #method {
                        #(#arms)*
                        _ => #p::unknown_method(#service, #method),
                    }
                }
                #close
                #handover
                #streams
            }
        }
    }

    /// `ErasedService::{has_handover, snapshot, restore}`, forwarding to `dispatch::Handover`.
    fn handover(&self) -> TokenStream {
        let p = &self.private;
        if !self.args.handover {
            return TokenStream::new();
        }
        quote! {
            fn has_handover(&self) -> bool {
                true
            }
            fn snapshot(
                self: ::std::sync::Arc<Self>,
            ) -> #p::futures::future::BoxFuture<'static, ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String>> {
                #p::handover_snapshot(self)
            }
            fn restore(
                self: ::std::sync::Arc<Self>,
                state: ::std::vec::Vec<u8>,
            ) -> #p::futures::future::BoxFuture<'static, ::std::result::Result<(), ::std::string::String>> {
                #p::handover_restore(self, state)
            }
        }
    }

    /// `"add" => { decode; Box::pin(async move { call; encode }) }`: the arguments are decoded
    /// before the future is made, from the request's bytes where they lie (the future owns the
    /// decoded values, never a copy of the bytes). A call that can fail to
    /// type-check (a future that is not `Send`) is located at the method's name, so rustc points
    /// there rather than at the attribute. The decoding and encoding go through `Wire`, which
    /// type-checks whatever the types: one that is not serde is reported once, by `checks`.
    fn arm(&self, m: &Method<'_>, args: &Ident) -> TokenStream {
        let at = Span::call_site().located_at(m.ident.span());
        let p = &located_at(&self.private, at);
        let (service, method) = (&self.service.name, m.ident.to_string());
        let ident = m.ident;
        let names: Vec<_> = m.args.iter().map(|a| &a.name).collect();
        let types: Vec<_> = m.args.iter().map(|a| a.ty).collect();
        let invoke = quote_spanned!(at=> self.#ident(#(#names),*));
        let call = if m.blocking.is_some() {
            quote_spanned!(at=> #p::run_blocking(move || #invoke).await?)
        } else if m.is_async() {
            quote_spanned!(at=> #p::assert_send(#invoke).await)
        } else {
            invoke
        };
        let out = Ident::new("out", Span::mixed_site());
        let reply = match m.output {
            Output::Unit => quote_spanned!(at=> #call; #p::encode_reply(&())),
            _ => {
                let ty = return_type(&m.output);
                let wire = quote_spanned!(at=> (&#p::Wire::<#ty>::NEW));
                quote_spanned!(at=> let #out = #call; #wire.encode_reply(&#out))
            }
        };
        let wire = quote_spanned!(at=> (&#p::Wire::<(#(#types,)*)>::NEW));
        let decode = quote_spanned!(at=> #wire.decode_args(#service, #method, #args));
        let error = Ident::new("error", Span::mixed_site());
        let cfgs = m.cfgs();
        quote! {
            #(#cfgs)*
            #method => match #decode {
                ::std::result::Result::Ok((#(#names,)*)) => {
                    ::std::boxed::Box::pin(async move { #reply })
                }
                ::std::result::Result::Err(#error) => #p::failed(#error),
            },
        }
    }

    /// `ErasedService::close`, forwarding to the `close = …` hook.
    fn close(&self) -> TokenStream {
        let p = &self.private;
        let Some(close) = &self.args.close else {
            return TokenStream::new();
        };
        let is_async = self
            .service
            .local
            .iter()
            .any(|f| f.sig.ident == *close && f.sig.asyncness.is_some());
        let at = Span::call_site().located_at(close.span());
        let call = if is_async {
            let p = located_at(p, at);
            quote_spanned!(at=> #p::assert_send(self.#close()).await)
        } else {
            quote!(self.#close())
        };
        quote! {
            fn close(self: ::std::sync::Arc<Self>) -> #p::futures::future::BoxFuture<'static, ()> {
                ::std::boxed::Box::pin(async move { #call; })
            }
        }
    }

    /// The `inventory` registration the Library finds the service by.
    fn registration(&self) -> TokenStream {
        let p = &self.private;
        let self_path = self.service.self_path;
        let name = &self.service.name;
        let type_name = signature::render(self_path);
        let methods = self.service.remote.iter().map(|m| {
            let (method, mut sig, cfgs) = (m.ident.to_string(), m.signature(), m.cfgs());
            if crate::oneway::of(m) {
                sig.insert_str(0, crate::oneway::PREFIX);
            }
            quote!(#(#cfgs)* #p::MethodInfo { name: #method, signature: #sig })
        });
        let init = match &self.args.init {
            Some(init) => {
                let at = Span::call_site().located_at(init.span());
                let p = located_at(p, at);
                quote_spanned!(at=> #p::init_with::<#self_path, _, _>(#init()))
            }
            None => {
                let at = Span::call_site().located_at(self.service.ident.span());
                let p = located_at(p, at);
                quote_spanned!(at=> #p::init_default::<#self_path>())
            }
        };
        quote! {
            #p::inventory::submit! {
                #p::ServiceRegistration {
                    name: #name,
                    type_name: #type_name,
                    methods: &[#(#methods),*],
                    init: {
                        fn init() -> #p::InitFuture {
                            #init
                        }
                        init
                    },
                }
            }
        }
    }

    /// The client stub: `DemoClient`, one `async fn` per remote method.
    fn client(&self) -> TokenStream {
        let p = &self.private;
        let (client, accessor) = (&self.client, &self.accessor);
        let name = &self.service.name;
        let type_name = signature::render(self.service.self_path);
        let doc = format!(
            " A worker's client of the Library's `{name}` service (`{type_name}`): \
             `Agent::get().{accessor}()`.\n\n Each method calls the method of the same name in \
             the Library and returns its result, or the `dispatch::Error` that kept it from \
             arriving. It is `Copy`: a reference to the process's Agent and a deadline."
        );
        let stubs = self.service.remote.iter().map(|m| self.stub(m));
        quote! {
            #[doc = #doc]
            #[allow(unreachable_pub)]
            #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy)]
            pub struct #client<'a> {
                inner: #p::ServiceClient<'a>,
            }

            #[allow(unreachable_pub)]
            impl<'a> #client<'a> {
                /// The same client, with every call given `timeout` instead of the Agent's
                /// default deadline.
                #[must_use]
                pub fn with_timeout(self, timeout: ::core::time::Duration) -> Self {
                    #client {
                        inner: self.inner.with_timeout(timeout),
                    }
                }

                /// The service's name on the wire.
                pub fn service_name(&self) -> &str {
                    self.inner.service_name()
                }

                #(#stubs)*
            }
        }
    }

    /// One method of the client stub.
    fn stub(&self, m: &Method<'_>) -> TokenStream {
        if let Output::Stream { item, .. } = &m.output {
            return crate::stream_expand::stub(&self.private, self.service, m, item);
        }
        let at = Span::call_site().located_at(m.ident.span());
        let p = &self.private;
        let ident = m.ident;
        let method = ident.to_string();
        let params = m.args.iter().map(|a| {
            let (name, ty) = (&a.name, &a.resolved);
            quote!(#name: #ty)
        });
        let names = m.args.iter().map(|a| &a.name);
        let user_docs: Vec<_> = m.docs().collect();
        let summary = format!(
            " Calls `{}::{method}` in the Library.",
            signature::render(self.service.self_path)
        );
        let summary = (user_docs.is_empty()).then(|| quote!(#[doc = #summary]));
        let args = quote!(&(#(#names,)*));
        let types = m.args.iter().map(|a| &a.resolved);
        let returned = return_type(&m.output);
        let wire = quote_spanned!(at=> (&#p::Wire::<((#(#types,)*), #returned)>::NEW));
        let (output, call) = match &m.output {
            _ if crate::oneway::of(m) => (
                quote!(::core::result::Result<(), #p::Error>),
                quote_spanned!(at=> #wire.call_oneway(&self.inner, #method, #args).await),
            ),
            Output::Fallible { ok, err } => (
                quote!(::core::result::Result<#ok, #p::Error<#err>>),
                quote_spanned!(at=> #wire.call_fallible(&self.inner, #method, #args).await),
            ),
            Output::Unit => (
                quote!(::core::result::Result<(), #p::Error>),
                quote_spanned!(at=> #wire.call(&self.inner, #method, #args).await),
            ),
            Output::Value { resolved } | Output::Stream { resolved, .. } => (
                quote!(::core::result::Result<#resolved, #p::Error>),
                quote_spanned!(at=> #wire.call(&self.inner, #method, #args).await),
            ),
        };
        let body = quote! {
            #[allow(unused_imports)]
            use #p::WireFallback as _;
            #call
        };
        let errors = match &m.output {
            _ if crate::oneway::of(m) => ERRORS_ONEWAY,
            Output::Fallible { .. } => ERRORS_FALLIBLE,
            _ => ERRORS,
        };
        let cfgs = m.cfgs();
        quote! {
            #(#cfgs)*
            #summary
            #(#user_docs)*
            ///
            /// # Errors
            #[doc = #errors]
            pub async fn #ident(self, #(#params),*) -> #output {
                #body
            }
        }
    }

    /// The extension trait that gives `Agent` its `demo()` method.
    fn agent_ext(&self) -> TokenStream {
        let p = &self.private;
        let (client, ext, accessor) = (&self.client, &self.ext, &self.accessor);
        let name = &self.service.name;
        let trait_doc = format!(
            " Gives the worker's Agent a client of the Library's `{name}` service: \
             `Agent::get().{name}()`. Bring it into scope with `use`."
        );
        let fn_doc = format!(" A client of the Library's `{name}` service.");
        quote! {
            #[doc = #trait_doc]
            #[allow(unreachable_pub)]
            pub trait #ext {
                #[doc = #fn_doc]
                fn #accessor(&self) -> #client<'_>;
            }

            impl #ext for #p::Agent {
                fn #accessor(&self) -> #client<'_> {
                    #client {
                        inner: #p::ServiceClient::new(self, #name),
                    }
                }
            }
        }
    }

    /// Never-called code that makes rustc check, at the user's tokens, what the service needs:
    /// wire types, a `Send + Sync` service, an accessor no `Agent` method shadows. (That async
    /// methods return `Send` futures is checked in their dispatcher arm, where a second check
    /// would only repeat rustc's error.)
    fn checks(&self) -> TokenStream {
        let p = &self.private;
        let self_path = self.service.self_path;
        let (client, accessor) = (&self.client, &self.accessor);
        let agent = Ident::new("agent", Span::mixed_site());
        let at = Span::call_site().located_at(self.service.ident.span());
        let p_at = located_at(p, at);
        let service = quote_spanned! {at=> #p_at::assert_service_type::<#self_path>();};
        let mut wire = Vec::new();
        for m in &self.service.remote {
            let types: Vec<&syn::Type> = match &m.output {
                Output::Unit => vec![],
                Output::Value { resolved } => vec![resolved],
                Output::Fallible { ok, err } => vec![ok, err],
                Output::Stream { item, .. } => vec![item],
            };
            for ty in m.args.iter().map(|a| &a.resolved).chain(types) {
                let cfgs = m.cfgs();
                let check = assert_wire(p, ty);
                wire.push(quote!(#(#cfgs)* #check));
            }
        }
        let at = Span::call_site().located_at(self.service.name_span);
        let shadowed = quote_spanned! {at=>
            let _: #client<'_> = #agent.#accessor();
        };
        quote! {
            #[allow(dead_code, clippy::all)]
            const _: () = {
                fn checks(#agent: &#p::Agent) {
                    #service
                    #(#wire)*
                    #shadowed
                }
            };
        }
    }
}

/// The `# Errors` section of a client method.
const ERRORS: &str =
    " Fails with a `dispatch::Error` when the call does not complete: the Library \
     is unreachable or restarted, the deadline passes, the method panics, or a payload cannot be \
     encoded or decoded.";

/// The `# Errors` section of a client method whose service method returns `Result<T, E>`.
const ERRORS_FALLIBLE: &str = " Fails with `dispatch::Error::Service(e)` when the method returns \
     `Err(e)`, and with another `dispatch::Error` when the call does not complete: the Library is \
     unreachable or restarted, the deadline passes, the method panics, or a payload cannot be \
     encoded or decoded.";

/// The `# Errors` section of a client method of a `#[oneway]` method.
const ERRORS_ONEWAY: &str = " One-way: returns once the request is queued on the connection to \
     the Library, without waiting for the method; what the method does, a failure or a panic \
     included, is logged by the Library and never returned. Fails with a `dispatch::Error` only \
     when the request cannot be sent: too large or not encodable, or no connection to the \
     Library (or too many of this worker's one-way calls not yet acknowledged) within the \
     deadline.";

/// What a method returns, as one type (with `Self` replaced): `()`, `T`, or `Result<T, E>`.
fn return_type(output: &Output) -> TokenStream {
    match output {
        Output::Unit => quote!(()),
        Output::Value { resolved } | Output::Stream { resolved, .. } => resolved.to_token_stream(),
        Output::Fallible { ok, err } => quote!(::core::result::Result<#ok, #err>),
    }
}

/// `assert_wire_type::<T>()`, located at `T` so rustc's error points at the user's type.
fn assert_wire(p: &TokenStream, ty: &syn::Type) -> TokenStream {
    let at = Span::call_site().located_at(ty.span());
    let p = located_at(p, at);
    quote_spanned! {at=> #p::assert_wire_type::<#ty>();}
}

impl ToTokens for ServiceGenerator<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend([
            self.original(),
            self.checks(),
            self.erased_service(),
            self.registration(),
            self.client(),
            self.agent_ext(),
            self.local_client(),
        ]);
    }
}
