//! The code emitted for streaming methods (methods returning `Feed<T>`): the Library's
//! `stream_spec` and `open_stream` (one arm per streaming method, beside `call`'s arms in
//! `impl ErasedService`) and the client stub that opens the stream.

use crate::ast::{Method, Output, Service};
use crate::signature;
use crate::spans::located_at;
use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{Ident, Type};

/// The streaming methods of `service`.
fn streaming<'s, 'a>(service: &'s Service<'a>) -> impl Iterator<Item = &'s Method<'a>> {
    service
        .remote
        .iter()
        .filter(|m| matches!(m.output, Output::Stream { .. }))
}

/// `stream_spec` and `open_stream` of `impl ErasedService`, or nothing without a streaming
/// method.
pub(crate) fn erased_fns(p: &TokenStream, service: &Service<'_>) -> TokenStream {
    if streaming(service).next().is_none() {
        return TokenStream::new();
    }
    let method = Ident::new("method", Span::mixed_site());
    let args = Ident::new("args", Span::mixed_site());
    let specs = streaming(service).map(|m| {
        let (name, spec, cfgs) = (m.ident.to_string(), spec(p, m), m.cfgs());
        quote!(#(#cfgs)* #name => ::core::option::Option::Some(#spec),)
    });
    let arms = streaming(service).map(|m| arm(p, service, m, &args));
    quote! {
        fn stream_spec(&self, #method: &str) -> ::core::option::Option<#p::StreamSpec> {
            match #method {
                #(#specs)*
                _ => ::core::option::Option::None,
            }
        }

        fn open_stream(
            self: ::std::sync::Arc<Self>,
            #method: &str,
            #args: ::std::vec::Vec<u8>,
        ) -> #p::OpenFuture {
            #[allow(unused_imports)]
            use #p::WireFallback as _;
            match #method {
                #(#arms)*
                _ => #p::not_a_stream(#method),
            }
        }
    }
}

/// The `StreamSpec` of `m`, from its `#[subscription(…)]` or `#[stream(…)]`.
fn spec(p: &TokenStream, m: &Method<'_>) -> TokenStream {
    let Some(attr) = &m.stream else {
        return quote!(#p::StreamSpec::STREAM);
    };
    let keyed = attr.keyed;
    let mut fields = vec![quote!(keyed: #keyed)];
    if let Some(n) = attr.buffer {
        let n = Literal::u64_unsuffixed(n);
        fields.push(quote!(buffer: #n));
    }
    if let Some(n) = attr.buffer_bytes {
        let n = Literal::u64_unsuffixed(n);
        fields.push(quote!(buffer_bytes: #n));
    }
    if let Some(ms) = attr.slow_after_ms {
        let ms = Literal::u64_unsuffixed(ms);
        fields.push(quote!(slow_after: ::core::time::Duration::from_millis(#ms)));
    }
    if let Some(policy) = attr.policy {
        let policy = format_ident!("{}", policy);
        fields.push(quote!(overflow: #p::Overflow::#policy));
    }
    quote!(#p::StreamSpec { #(#fields,)* ..#p::StreamSpec::STREAM })
}

/// `"watch" => Box::pin(async move { decode; open; encode each value })`, located at the
/// method's name as `call`'s arms are.
fn arm(p: &TokenStream, service: &Service<'_>, m: &Method<'_>, args: &Ident) -> TokenStream {
    let at = Span::call_site().located_at(m.ident.span());
    let p = &located_at(p, at);
    let (name, ident) = (m.ident.to_string(), m.ident);
    let service = &service.name;
    let names: Vec<_> = m.args.iter().map(|a| &a.name).collect();
    let types: Vec<_> = m.args.iter().map(|a| a.ty).collect();
    let invoke = quote_spanned!(at=> self.#ident(#(#names),*));
    let call = if m.is_async() {
        quote_spanned!(at=> #p::assert_send(#invoke).await)
    } else {
        invoke
    };
    let Output::Stream { item, .. } = &m.output else {
        return TokenStream::new();
    };
    let decode = quote_spanned!(at=>
        (&#p::Wire::<(#(#types,)*)>::NEW).decode_args(#service, #name, &#args)?);
    let feed = quote_spanned!(at=> (&#p::Wire::<#item>::NEW).raw_feed(#call));
    let cfgs = m.cfgs();
    quote! {
        #(#cfgs)*
        #name => ::std::boxed::Box::pin(async move {
            let (#(#names,)*): (#(#types,)*) = #decode;
            ::core::result::Result::Ok(#feed)
        }),
    }
}

/// The client stub of a streaming method: opens the stream.
pub(crate) fn stub(
    p: &TokenStream,
    service: &Service<'_>,
    m: &Method<'_>,
    item: &Type,
) -> TokenStream {
    let at = Span::call_site().located_at(m.ident.span());
    let ident = m.ident;
    let method = ident.to_string();
    let params = m.args.iter().map(|a| {
        let (name, ty) = (&a.name, &a.resolved);
        quote!(#name: #ty)
    });
    let names = m.args.iter().map(|a| &a.name);
    let types = m.args.iter().map(|a| &a.resolved);
    let user_docs: Vec<_> = m.docs().collect();
    let path = signature::render(service.self_path);
    let summary = if m.stream.as_ref().is_some_and(|s| s.keyed) {
        format!(
            " Subscribes to `{path}::{method}` in the Library: the stream of its values for \
             these arguments, shared with every worker subscribed with equal arguments (the \
             latest value first)."
        )
    } else {
        format!(" Opens `{path}::{method}` in the Library: the stream of its values.")
    };
    let summary = user_docs.is_empty().then(|| quote!(#[doc = #summary]));
    let wire = quote_spanned!(at=> (&#p::Wire::<((#(#types,)*), #item)>::NEW));
    let cfgs = m.cfgs();
    quote! {
        #(#cfgs)*
        #summary
        #(#user_docs)*
        ///
        /// The stream yields `Ok(value)` in order and ends when the service's feed ends; dropping
        /// it cancels it in the Library. `Err(Error::StreamResumed)` (the Library restarted,
        /// the stream was re-opened) and `Err(Error::StreamGap { .. })` (values dropped for
        /// this slow reader) are notices: the stream goes on.
        ///
        /// # Errors
        /// Fails with a `dispatch::Error` when the Library cannot open the stream: unknown
        /// service or method, the method panics, the deadline passes, or the arguments cannot
        /// be encoded.
        pub async fn #ident(
            self,
            #(#params),*
        ) -> ::core::result::Result<#p::RemoteStream<#item>, #p::Error> {
            #[allow(unused_imports)]
            use #p::WireFallback as _;
            #wire.open_stream(&self.inner, #method, &(#(#names,)*)).await
        }
    }
}
