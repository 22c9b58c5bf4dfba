//! The impl block as `#[library_service]` sees it: borrowed from the user's tokens, so every error
//! and every generated check can point at what the user wrote.

use crate::attr::{self, Args};
use crate::ctxt::Ctxt;
use crate::signature::render;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::visit_mut::{self, VisitMut};
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, Item, ItemImpl, Pat, Path,
    PathArguments, Receiver, ReturnType, Signature, Type, TypePath, Visibility,
};

/// The message for an attribute put anywhere but on an inherent impl block.
pub(crate) const NOT_INHERENT: &str =
    "#[library_service] goes on an inherent `impl` block: `impl MyService { … }`";

/// A service: the inherent impl block and the methods it exposes to workers.
pub(crate) struct Service<'a> {
    /// The whole impl block, as written.
    pub(crate) item: &'a ItemImpl,
    /// The service type as a path (`Demo`, `crate::svc::Demo`).
    pub(crate) self_path: &'a Path,
    /// The last segment of [`Self::self_path`]: the type's name.
    pub(crate) ident: &'a Ident,
    /// The wire name: `name = "…"`, or the snake_case of [`Self::ident`].
    pub(crate) name: String,
    /// Where the wire name comes from (the `name` literal or the type's name), for errors.
    pub(crate) name_span: Span,
    /// Every `pub` method with a `self` receiver, except the close hook: callable by workers.
    pub(crate) remote: Vec<Method<'a>>,
    /// Every other method (private, associated, or the close hook): stays local.
    pub(crate) local: Vec<&'a ImplItemFn>,
}

/// A remote method.
pub(crate) struct Method<'a> {
    /// The method as written.
    pub(crate) item: &'a ImplItemFn,
    /// Its signature.
    pub(crate) sig: &'a Signature,
    /// Its name, which is also its name on the wire and in the client stub.
    pub(crate) ident: &'a Ident,
    /// Its `self` receiver (validation requires `&self`).
    pub(crate) receiver: &'a Receiver,
    /// `#[blocking]`, if present.
    pub(crate) blocking: Option<&'a Attribute>,
    /// Its arguments after the receiver.
    pub(crate) args: Vec<Arg<'a>>,
    /// What it returns.
    pub(crate) output: Output,
    /// `#[subscription(…)]` or `#[stream(…)]`, if present.
    pub(crate) stream: Option<crate::stream_attr::StreamAttr<'a>>,
}

/// One argument of a remote method.
pub(crate) struct Arg<'a> {
    /// The binding's name, or `argN` when the argument is a pattern (`(a, b): (u8, u8)`).
    pub(crate) name: Ident,
    /// The type as written.
    pub(crate) ty: &'a Type,
    /// The type with `Self` replaced by the service type, for code outside the impl block.
    pub(crate) resolved: Type,
}

/// What a remote method returns.
pub(crate) enum Output {
    /// Nothing (`()`).
    Unit,
    /// A value the caller gets as `Result<T, dispatch::Error>`.
    Value {
        /// The type, with `Self` replaced.
        resolved: Box<Type>,
    },
    /// `Feed<T>`: a streaming method; the caller gets
    /// `Result<dispatch::RemoteStream<T>, dispatch::Error>`.
    Stream {
        /// `Feed<T>`, with `Self` replaced.
        resolved: Box<Type>,
        /// `T`, with `Self` replaced.
        item: Box<Type>,
    },
    /// `Result<T, E>`: the caller gets `Result<T, dispatch::Error<E>>`.
    Fallible {
        /// `T`, with `Self` replaced.
        ok: Box<Type>,
        /// `E`, with `Self` replaced.
        err: Box<Type>,
    },
}

impl<'a> Service<'a> {
    /// The service declared by `item`, or `None` (with errors in `cx`) if `item` is not an
    /// inherent impl block of a named type.
    pub(crate) fn from_item(cx: &mut Ctxt, item: &'a Item, args: &Args) -> Option<Self> {
        let Item::Impl(imp) = item else {
            not_inherent(cx, item);
            return None;
        };
        if let Some((_, trait_path, for_token)) = &imp.trait_ {
            let ty = &imp.self_ty;
            let example = render(quote!(impl #ty));
            cx.error(
                quote!(#trait_path #for_token),
                format!(
                    "#[library_service] goes on an inherent `impl` block, not on a trait impl: \
                     `{example} {{ … }}`"
                ),
            );
            return None;
        }
        let self_path = match &*imp.self_ty {
            Type::Path(TypePath { qself: None, path }) => path,
            other => {
                cx.error(other, NOT_INHERENT);
                return None;
            }
        };
        let ident = &self_path.segments.last()?.ident;
        let (mut remote, mut local) = (Vec::new(), Vec::new());
        for f in imp.items.iter().filter_map(|i| match i {
            ImplItem::Fn(f) => Some(f),
            _ => None,
        }) {
            let is_close = args.close.as_ref().is_some_and(|c| *c == f.sig.ident);
            match f.sig.receiver() {
                Some(receiver) if matches!(f.vis, Visibility::Public(_)) && !is_close => {
                    remote.push(Method::new(cx, f, receiver, self_path));
                }
                _ => local.push(f),
            }
        }
        let (name, name_span) = match &args.name {
            Some(lit) => (lit.value(), lit.span()),
            None => (snake_case(&ident.to_string()), ident.span()),
        };
        Some(Service {
            item: imp,
            self_path,
            ident,
            name,
            name_span,
            remote,
            local,
        })
    }
}

impl<'a> Method<'a> {
    fn new(cx: &mut Ctxt, item: &'a ImplItemFn, receiver: &'a Receiver, self_path: &Path) -> Self {
        let sig = &item.sig;
        let typed: Vec<_> = sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                FnArg::Typed(t) => Some(t),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let bound: Vec<Option<&Ident>> = typed.iter().map(|t| binding(&t.pat)).collect();
        let args = typed
            .iter()
            .enumerate()
            .map(|(i, t)| Arg {
                name: match bound[i] {
                    Some(ident) => ident.clone(),
                    None => fresh_name(i, &bound),
                },
                ty: &t.ty,
                resolved: resolve_self(&t.ty, self_path),
            })
            .collect();
        Method {
            item,
            sig,
            ident: &sig.ident,
            receiver,
            blocking: attr::blocking(cx, &item.attrs),
            args,
            output: Output::new(&sig.output, self_path),
            stream: crate::stream_attr::parse(cx, &item.attrs),
        }
    }

    /// Whether the method is an `async fn`.
    pub(crate) fn is_async(&self) -> bool {
        self.sig.asyncness.is_some()
    }

    /// The method's `#[cfg(…)]` attributes, repeated on everything generated for it.
    pub(crate) fn cfgs(&self) -> impl Iterator<Item = &'a Attribute> {
        self.item.attrs.iter().filter(|a| a.path().is_ident("cfg"))
    }

    /// The user's doc comments on the method.
    pub(crate) fn docs(&self) -> impl Iterator<Item = &'a Attribute> {
        self.item.attrs.iter().filter(|a| a.path().is_ident("doc"))
    }

    /// The signature registered for the manifest, without the receiver:
    /// `async fn parse(s: String) -> Result<u32, E>`. `Self` is replaced by the service type, and
    /// a `Result` by its last path segment.
    pub(crate) fn signature(&self) -> String {
        let asyncness = &self.sig.asyncness;
        let ident = self.ident;
        let args = self.args.iter().map(|a| {
            let (name, ty) = (&a.name, &a.resolved);
            quote!(#name: #ty)
        });
        let output = match &self.output {
            Output::Unit => quote!(),
            Output::Value { resolved, .. } => quote!(-> #resolved),
            Output::Fallible { ok, err } => quote!(-> Result<#ok, #err>),
            Output::Stream { resolved, .. } => quote!(-> #resolved),
        };
        render(quote!(#asyncness fn #ident(#(#args),*) #output))
    }
}

impl Output {
    fn new(output: &ReturnType, self_path: &Path) -> Self {
        let ReturnType::Type(_, ty) = output else {
            return Output::Unit;
        };
        match ungroup(ty) {
            Type::Tuple(t) if t.elems.is_empty() => Output::Unit,
            inner if crate::stream_attr::feed_item(inner).is_some() => Output::Stream {
                resolved: Box::new(resolve_self(ty, self_path)),
                item: Box::new(resolve_self(
                    crate::stream_attr::feed_item(inner).unwrap_or(inner),
                    self_path,
                )),
            },
            inner => match result_args(inner) {
                Some((ok, err)) => Output::Fallible {
                    ok: Box::new(resolve_self(ok, self_path)),
                    err: Box::new(resolve_self(err, self_path)),
                },
                None => Output::Value {
                    resolved: Box::new(resolve_self(ty, self_path)),
                },
            },
        }
    }
}

/// `MyService` → `my_service`, `HTTPServer` → `http_server`, `ConfigV2` → `config_v2`.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let after_word = prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit());
            let ends_acronym =
                prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase());
            if after_word || ends_acronym {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `T` and `E` of a `Result<T, E>` (any path whose last segment is `Result` with two types).
fn result_args(ty: &Type) -> Option<(&Type, &Type)> {
    let Type::Path(TypePath { qself: None, path }) = ty else {
        return None;
    };
    let last = path.segments.last()?;
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return None;
    };
    let types: Vec<&Type> = generics
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match types[..] {
        [ok, err] if last.ident == "Result" && generics.args.len() == 2 => Some((ok, err)),
        _ => None,
    }
}

/// `ty` without the invisible groups and parentheses macros wrap types in.
pub(crate) fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        other => other,
    }
}

/// The name bound by an argument pattern, if it is a plain identifier (`a` or `mut a`).
fn binding(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(&p.ident),
        _ => None,
    }
}

/// `argN` for the `n`th argument, made unique among the arguments' own names.
fn fresh_name(n: usize, bound: &[Option<&Ident>]) -> Ident {
    let mut name = format_ident!("arg{}", n);
    while bound.iter().flatten().any(|b| **b == name) {
        name = format_ident!("{}_", name);
    }
    name
}

/// `ty` with every path starting with `Self` rewritten to start with the service type's path, so
/// it means the same outside the impl block (in the client stub and the compile-time checks).
pub(crate) fn resolve_self(ty: &Type, self_path: &Path) -> Type {
    let mut ty = ty.clone();
    ReplaceSelf(self_path).visit_type_mut(&mut ty);
    ty
}

struct ReplaceSelf<'a>(&'a Path);

impl VisitMut for ReplaceSelf<'_> {
    fn visit_path_mut(&mut self, path: &mut Path) {
        let starts_with_self = path.leading_colon.is_none()
            && path.segments.first().is_some_and(|s| s.ident == "Self");
        if starts_with_self {
            let span = path.segments[0].ident.span();
            let mut replaced = self.0.clone();
            for segment in &mut replaced.segments {
                segment.ident.set_span(span);
            }
            replaced
                .segments
                .extend(path.segments.iter().skip(1).cloned());
            *path = replaced;
        }
        visit_mut::visit_path_mut(self, path);
    }

    // A nested item (in a type macro or a const block) has a `Self` of its own.
    fn visit_item_mut(&mut self, _: &mut Item) {}
}

/// Reports the attribute on something other than an impl block, spanned on its keyword and name.
fn not_inherent(cx: &mut Ctxt, item: &Item) {
    let on_type = |kind: &str, keyword: &dyn quote::ToTokens, ident: &Ident| {
        let message = format!(
            "#[library_service] goes on an inherent `impl` block: put it on `impl {ident} {{ … }}`, \
             not on the {kind}"
        );
        (span_of(keyword, ident), message)
    };
    let (tokens, message) = match item {
        Item::Struct(s) => on_type("struct", &s.struct_token, &s.ident),
        Item::Enum(e) => on_type("enum", &e.enum_token, &e.ident),
        Item::Union(u) => on_type("union", &u.union_token, &u.ident),
        Item::Trait(t) => (span_of(&t.trait_token, &t.ident), NOT_INHERENT.to_owned()),
        Item::Fn(f) => (
            span_of(&f.sig.fn_token, &f.sig.ident),
            NOT_INHERENT.to_owned(),
        ),
        _ => {
            cx.push(syn::Error::new(Span::call_site(), NOT_INHERENT));
            return;
        }
    };
    cx.error(tokens, message);
}

fn span_of(keyword: &dyn quote::ToTokens, ident: &Ident) -> proc_macro2::TokenStream {
    quote!(#keyword #ident)
}
