//! The arguments of `#[library_service(…)]` and the `#[blocking]` helper attribute.

use crate::ctxt::Ctxt;
use crate::signature::render;
use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, ExprLit, ExprPath, Ident, Lit, LitStr, Meta, Path, Token};

/// What `#[library_service(name = "…", init = path, close = method, crate = path)]` says; every
/// argument is optional.
#[derive(Default)]
pub(crate) struct Args {
    /// `name = "…"`: the wire name, instead of the snake_case of the type's name.
    pub(crate) name: Option<LitStr>,
    /// `init = path`: the async constructor, instead of `Default`.
    pub(crate) init: Option<Path>,
    /// `close = method`: the method of the impl block called once when the Library stops.
    pub(crate) close: Option<Ident>,
    /// `crate = path`: the path of the `dispatch` facade, instead of `::dispatch`.
    pub(crate) krate: Option<Path>,
    /// `handover`: the type implements `dispatch::Handover`; its hooks carry its state across
    /// a Library handover.
    pub(crate) handover: bool,
}

const EXPECTED: &str =
    "#[library_service] takes `name = \"…\"`, `init = path::to::async_fn`, `close = method`, `handover` and `crate = path`";

/// Parses the attribute's arguments, reporting every mistake (not only the first) to `cx`.
pub(crate) fn parse_args(cx: &mut Ctxt, tokens: TokenStream) -> Args {
    let mut args = Args::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(metas) => metas,
        Err(e) => {
            cx.push(syn::Error::new(e.span(), format!("{e}: {EXPECTED}")));
            return args;
        }
    };
    let mut seen = Vec::new();
    for meta in metas {
        let key = meta.path();
        if key.is_ident("handover") {
            if !matches!(meta, Meta::Path(_)) {
                cx.error(
                    &meta,
                    "`handover` takes no value: `#[library_service(handover)]`, with \
                     `impl dispatch::Handover` for the type",
                );
            } else if args.handover {
                cx.error(key, "`handover` is given twice; keep one");
            }
            args.handover = true;
            continue;
        }
        let Some(known) = ["name", "init", "close", "crate"]
            .into_iter()
            .find(|k| key.is_ident(k))
        else {
            let shown = render(key);
            cx.error(key, format!("unknown argument `{shown}`: {EXPECTED}"));
            continue;
        };
        if seen.contains(&known) {
            cx.error(key, format!("`{known}` is given twice; keep one"));
            continue;
        }
        seen.push(known);
        let Meta::NameValue(nv) = &meta else {
            cx.error(&meta, format!("expected `{known} = …`: {EXPECTED}"));
            continue;
        };
        match known {
            "name" => args.name = string(cx, &nv.value),
            "init" => args.init = path(cx, &nv.value, "init = path::to::async_fn"),
            "close" => args.close = method(cx, &nv.value),
            _ => args.krate = path(cx, &nv.value, "crate = ::dispatch"),
        }
    }
    args
}

fn string(cx: &mut Ctxt, value: &Expr) -> Option<LitStr> {
    if let Expr::Lit(ExprLit {
        lit: Lit::Str(s), ..
    }) = value
    {
        return Some(s.clone());
    }
    cx.error(value, "expected a string: `name = \"my_service\"`");
    None
}

fn path(cx: &mut Ctxt, value: &Expr, example: &str) -> Option<Path> {
    if let Expr::Path(ExprPath {
        qself: None,
        path,
        attrs,
    }) = value
    {
        if attrs.is_empty() {
            return Some(path.clone());
        }
    }
    cx.error(value, format!("expected a path: `{example}`"));
    None
}

fn method(cx: &mut Ctxt, value: &Expr) -> Option<Ident> {
    if let Expr::Path(ExprPath {
        qself: None, path, ..
    }) = value
    {
        if let Some(ident) = path.get_ident() {
            return Some(ident.clone());
        }
    }
    cx.error(
        value,
        "expected the name of a method of this impl block: `close = shutdown`",
    );
    None
}

/// Whether `attr` is the `#[blocking]` helper attribute.
pub(crate) fn is_blocking(attr: &Attribute) -> bool {
    attr.path().is_ident("blocking")
}

/// The `#[blocking]` attribute among `attrs`, reporting a malformed one (`#[blocking(…)]`).
pub(crate) fn blocking<'a>(cx: &mut Ctxt, attrs: &'a [Attribute]) -> Option<&'a Attribute> {
    let attr = attrs.iter().find(|a| is_blocking(a))?;
    if !matches!(attr.meta, Meta::Path(_)) {
        cx.error(
            attr,
            "`#[blocking]` takes no arguments: write `#[blocking]`",
        );
    }
    Some(attr)
}
