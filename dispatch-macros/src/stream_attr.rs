//! Streaming methods (issue 15): a remote method returning `dispatch::Feed<T>`, and its optional
//! helper attribute, `#[subscription(…)]` (subscriptions with equal arguments share one feed:
//! the method runs once per distinct key) or `#[stream(…)]` (every call runs the method). Both
//! take `buffer = N`, `buffer_bytes = N`, `policy = keep_latest | drop_oldest | close` and
//! `slow_after_ms = N`: see `dispatch::Feed` and `dispatch::Overflow`.

use crate::ctxt::Ctxt;
use crate::signature::render;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{
    Attribute, Expr, ExprLit, ExprPath, GenericArgument, Lit, Meta, PathArguments, Token, Type,
    TypePath,
};

/// The names of the helper attributes.
pub(crate) const HELPERS: [&str; 2] = ["subscription", "stream"];

const EXPECTED: &str = "takes `buffer = 256`, `buffer_bytes = 1048576`, \
     `policy = keep_latest | drop_oldest | close` and `slow_after_ms = 1000` (each optional)";

/// What `#[subscription(…)]` or `#[stream(…)]` says.
pub(crate) struct StreamAttr<'a> {
    /// The attribute as written.
    pub(crate) attr: &'a Attribute,
    /// `#[subscription]`: one feed per distinct key.
    pub(crate) keyed: bool,
    pub(crate) buffer: Option<u64>,
    pub(crate) buffer_bytes: Option<u64>,
    /// `KeepLatest`, `DropOldest` or `Close`.
    pub(crate) policy: Option<&'static str>,
    pub(crate) slow_after_ms: Option<u64>,
}

/// Whether `attr` is one of the helper attributes of streaming methods.
pub(crate) fn is_stream_helper(attr: &Attribute) -> bool {
    HELPERS.iter().any(|h| attr.path().is_ident(h))
}

/// The streaming attribute among `attrs`, with its arguments; mistakes go to `cx`.
pub(crate) fn parse<'a>(cx: &mut Ctxt, attrs: &'a [Attribute]) -> Option<StreamAttr<'a>> {
    let mut found = attrs.iter().filter(|a| is_stream_helper(a));
    let attr = found.next()?;
    for extra in found {
        cx.error(
            extra,
            "a method takes one of `#[subscription(…)]` and `#[stream(…)]`, once: keep one",
        );
    }
    let keyed = attr.path().is_ident("subscription");
    let name = if keyed { "subscription" } else { "stream" };
    let mut out = StreamAttr {
        attr,
        keyed,
        buffer: None,
        buffer_bytes: None,
        policy: None,
        slow_after_ms: None,
    };
    let metas = match &attr.meta {
        Meta::Path(_) => return Some(out),
        Meta::List(list) => {
            match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(list.tokens.clone()) {
                Ok(metas) => metas,
                Err(e) => {
                    cx.push(syn::Error::new(
                        e.span(),
                        format!("{e}: `#[{name}]` {EXPECTED}"),
                    ));
                    return Some(out);
                }
            }
        }
        Meta::NameValue(_) => {
            cx.error(
                attr,
                format!("write `#[{name}(…)]`: `#[{name}]` {EXPECTED}"),
            );
            return Some(out);
        }
    };
    for meta in metas {
        let key = render(meta.path());
        let Meta::NameValue(nv) = &meta else {
            cx.error(
                &meta,
                format!("expected `{key} = …`: `#[{name}]` {EXPECTED}"),
            );
            continue;
        };
        match key.as_str() {
            "buffer" => out.buffer = positive(cx, &nv.value, "buffer = 256"),
            "buffer_bytes" => out.buffer_bytes = positive(cx, &nv.value, "buffer_bytes = 1048576"),
            "slow_after_ms" => out.slow_after_ms = positive(cx, &nv.value, "slow_after_ms = 1000"),
            "policy" => out.policy = policy(cx, &nv.value),
            _ => cx.error(
                meta.path(),
                format!("unknown argument `{key}`: `#[{name}]` {EXPECTED}"),
            ),
        }
    }
    Some(out)
}

fn positive(cx: &mut Ctxt, value: &Expr, example: &str) -> Option<u64> {
    if let Expr::Lit(ExprLit {
        lit: Lit::Int(int), ..
    }) = value
    {
        if let Ok(n) = int.base10_parse::<u64>() {
            if n > 0 {
                return Some(n);
            }
        }
    }
    cx.error(
        value,
        format!("expected a whole number above 0: `{example}`"),
    );
    None
}

fn policy(cx: &mut Ctxt, value: &Expr) -> Option<&'static str> {
    if let Expr::Path(ExprPath {
        qself: None, path, ..
    }) = value
    {
        if let Some(ident) = path.get_ident() {
            match ident.to_string().as_str() {
                "keep_latest" => return Some("KeepLatest"),
                "drop_oldest" => return Some("DropOldest"),
                "close" => return Some("Close"),
                _ => {}
            }
        }
    }
    cx.error(
        value,
        format!(
            "unknown policy `{}`: write `policy = keep_latest` (a slow subscriber skips to the \
             newest value), `policy = drop_oldest` (it loses the oldest, with a gap notice) or \
             `policy = close` (its stream ends with `Error::StreamLagged`)",
            render(value)
        ),
    );
    None
}

/// `T` of a `Feed<T>` return type (any path whose last segment is `Feed` with one type).
pub(crate) fn feed_item(ty: &Type) -> Option<&Type> {
    let Type::Path(TypePath { qself: None, path }) = ty else {
        return None;
    };
    let last = path.segments.last()?;
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return None;
    };
    match (generics.args.len(), generics.args.first()) {
        (1, Some(GenericArgument::Type(item))) if last.ident == "Feed" => Some(item),
        _ => None,
    }
}

/// Whether `ty` is `impl … Stream …`: a stream that must be wrapped in a `Feed`.
pub(crate) fn is_impl_stream(ty: &Type) -> bool {
    match ty {
        Type::ImplTrait(t) => t.bounds.iter().any(|b| match b {
            syn::TypeParamBound::Trait(t) => {
                t.path.segments.last().is_some_and(|s| s.ident == "Stream")
            }
            _ => false,
        }),
        _ => false,
    }
}
