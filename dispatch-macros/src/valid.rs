//! The rules a service must follow, each broken rule reported at its token with the fix.

use crate::agent_methods::AGENT_METHODS;
use crate::ast::{ungroup, Method, Service};
use crate::attr::{self, Args};
use crate::ctxt::Ctxt;
use crate::signature::render;
use syn::visit::{self, Visit};
use syn::{FnArg, ImplItemFn, Receiver, ReturnType, Type, TypeImplTrait, TypeReference};

/// The methods every generated client has; a remote method of the same name would clash.
pub(crate) const CLIENT_METHODS: [&str; 2] = ["with_timeout", "service_name"];

const MUT_SELF: &str = "service methods take `&self`: one instance serves every worker at once; \
     use interior mutability (a Mutex or atomics) instead of `&mut self`";

const OWNED_SELF: &str = "service methods take `&self`: one instance serves every worker at once, \
     so a method cannot take it by value; write `&self`";

/// Checks everything `#[library_service]` requires of `service`, reporting every mistake.
pub(crate) fn check(cx: &mut Ctxt, args: &Args, service: &Service<'_>) {
    check_impl(cx, service);
    check_name(cx, args, service);
    check_close(cx, args, service);
    for method in &service.remote {
        check_method(cx, service, method);
        crate::oneway::check(cx, method);
    }
    for f in &service.local {
        crate::stream_valid::check_local(cx, f);
        crate::oneway::check_local(cx, f);
        if let Some(blocking) = f.attrs.iter().find(|a| attr::is_blocking(a)) {
            cx.error(
                blocking,
                "`#[blocking]` applies to remote methods only (`pub fn` taking `&self`): \
                 remove it, or make the method `pub`",
            );
        }
    }
}

fn check_impl(cx: &mut Ctxt, service: &Service<'_>) {
    let generics = &service.item.generics;
    if !generics.params.is_empty() {
        cx.error(
            generics,
            format!(
                "a service is one concrete type: remove the generic parameters of the impl block \
                 (to serve a generic type, declare one instance of it: `impl {}<u32> {{ … }}`)",
                service.ident
            ),
        );
    }
}

fn check_name(cx: &mut Ctxt, args: &Args, service: &Service<'_>) {
    let name = &service.name;
    let span = service.name_span;
    if let Some(lit) = &args.name {
        let snake = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !snake || syn::parse_str::<syn::Ident>(name).is_err() {
            cx.error(
                lit,
                format!(
                    "service name `{name}` must be a snake_case identifier (lowercase letters, \
                     digits and `_`, starting with a letter, not a keyword), such as `my_service`"
                ),
            );
            return;
        }
    } else if syn::parse_str::<syn::Ident>(name).is_err() {
        cx.push(syn::Error::new(
            span,
            format!(
                "the service name derived from `{}` is `{name}`, a Rust keyword: choose another \
                 with #[library_service(name = \"…\")]",
                service.ident
            ),
        ));
        return;
    }
    if AGENT_METHODS.contains(&name.as_str()) {
        cx.push(syn::Error::new(
            span,
            format!(
                "service name `{name}` conflicts with the method `Agent::{name}`, so \
                 `Agent::get().{name}()` could not reach the service: choose another with \
                 #[library_service(name = \"…\")]"
            ),
        ));
    }
}

fn check_close(cx: &mut Ctxt, args: &Args, service: &Service<'_>) {
    let Some(close) = &args.close else {
        return;
    };
    let Some(f) = service.local.iter().find(|f| f.sig.ident == *close) else {
        cx.error(
            close,
            format!(
                "no method `{close}` in this impl block: `close` names one of its methods, \
                 `fn {close}(&self)` or `async fn {close}(&self)`"
            ),
        );
        return;
    };
    if !is_close_signature(f) {
        cx.error(
            &f.sig,
            format!(
                "the close hook takes `&self` only and returns `()` (handle errors inside it): \
                 `fn {close}(&self)` or `async fn {close}(&self)`"
            ),
        );
    }
}

fn is_close_signature(f: &ImplItemFn) -> bool {
    let sig = &f.sig;
    let takes_ref_self = matches!(
        sig.inputs.first(),
        Some(FnArg::Receiver(r)) if is_ref_self(r)
    );
    let returns_unit = match &sig.output {
        ReturnType::Default => true,
        ReturnType::Type(_, ty) => matches!(ungroup(ty), Type::Tuple(t) if t.elems.is_empty()),
    };
    takes_ref_self && sig.inputs.len() == 1 && sig.generics.params.is_empty() && returns_unit
}

fn is_ref_self(r: &Receiver) -> bool {
    r.colon_token.is_none() && r.mutability.is_none() && matches!(r.reference, Some((_, None)))
}

fn check_method(cx: &mut Ctxt, service: &Service<'_>, method: &Method<'_>) {
    let sig = method.sig;
    check_receiver(cx, method.receiver);
    if !sig.generics.params.is_empty() {
        let message = if sig.generics.lifetimes().count() == sig.generics.params.len() {
            "remote methods cannot have lifetime parameters: each call's arguments are decoded \
             into owned values; remove them and take owned types"
        } else {
            "remote methods cannot be generic: the Library decodes each call's arguments into \
             concrete types; replace the type parameters with concrete types"
        };
        cx.error(&sig.generics, message);
    }
    if let Some(unsafety) = &sig.unsafety {
        cx.error(
            unsafety,
            "remote methods cannot be `unsafe`: a caller in another process cannot uphold its \
             safety contract; make the method safe",
        );
    }
    let name = method.ident.to_string();
    if CLIENT_METHODS.contains(&name.as_str()) {
        cx.error(
            method.ident,
            format!(
                "method name `{name}` conflicts with the generated `{}Client::{name}`; rename the \
                 method",
                service.ident
            ),
        );
    }
    if let (Some(blocking), true) = (method.blocking, method.is_async()) {
        cx.error(
            blocking,
            "`#[blocking]` is for plain `fn` methods, which would otherwise block the Library's \
             runtime: an `async fn` already runs on it; remove `#[blocking]`",
        );
    }
    for arg in &method.args {
        check_type(cx, arg.ty, Position::Argument);
    }
    if crate::stream_valid::check_method(cx, method) {
        return;
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        check_type(cx, ty, Position::Return);
        if let Type::Never(never) = ungroup(ty) {
            cx.error(
                never,
                "a remote method must return to its caller: return `()` instead of `!`",
            );
        }
    }
}

fn check_receiver(cx: &mut Ctxt, receiver: &Receiver) {
    if receiver.colon_token.is_some() {
        let written = render(receiver);
        cx.error(
            receiver,
            format!("service methods take `&self`: write `&self` instead of `{written}`"),
        );
        return;
    }
    match (&receiver.reference, &receiver.mutability) {
        (None, _) => cx.error(receiver, OWNED_SELF),
        (Some(_), Some(mutability)) => cx.error(mutability, MUT_SELF),
        (Some((_, Some(lifetime))), None) => cx.error(
            lifetime,
            "service methods take `&self`: remove the lifetime, the call owns its arguments",
        ),
        (Some((_, None)), None) => {}
    }
}

/// Where a type appears, for the wording of its errors.
#[derive(Clone, Copy)]
enum Position {
    Argument,
    Return,
}

/// Reports borrowed types and `impl Trait` anywhere inside `ty`.
fn check_type(cx: &mut Ctxt, ty: &Type, position: Position) {
    let mut finder = Finder {
        cx,
        position,
        in_impl_trait: false,
    };
    finder.visit_type(ty);
}

struct Finder<'c> {
    cx: &'c mut Ctxt,
    position: Position,
    in_impl_trait: bool,
}

impl<'ast> Visit<'ast> for Finder<'_> {
    fn visit_type_reference(&mut self, r: &'ast TypeReference) {
        let (owned, written) = (owned(r), render(r));
        let message = match self.position {
            Position::Argument => {
                format!("arguments must be owned: take `{owned}` instead of `{written}`")
            }
            Position::Return => {
                format!("return values must be owned: return `{owned}` instead of `{written}`")
            }
        };
        self.cx.error(r, message);
    }

    fn visit_type_impl_trait(&mut self, t: &'ast TypeImplTrait) {
        if self.in_impl_trait {
            return;
        }
        let message = match self.position {
            Position::Argument => {
                "`impl Trait` arguments cannot cross the wire: the Library decodes each argument \
                 into one concrete type; take a concrete type such as `String` or `Vec<T>`"
            }
            Position::Return => {
                "an `impl Trait` return value cannot cross the wire: the caller decodes it into \
                 one concrete type; return a concrete type such as `String` or `Vec<T>`"
            }
        };
        self.cx.error(t, message);
        self.in_impl_trait = true;
        visit::visit_type_impl_trait(self, t);
        self.in_impl_trait = false;
    }
}

/// The owned type to suggest for a borrowed one: `&str` → `String`, `&[T]` → `Vec<T>`,
/// `&Path` → `PathBuf`, `&OsStr` → `OsString`, `&CStr` → `CString`, `&T` → `T`.
fn owned(r: &TypeReference) -> String {
    match ungroup(&r.elem) {
        Type::Slice(s) => format!("Vec<{}>", render(&s.elem)),
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last().map(|s| s.ident.to_string());
            match last.as_deref() {
                Some("str") if p.path.segments.len() == 1 => "String".to_owned(),
                Some("Path") => "PathBuf".to_owned(),
                Some("OsStr") => "OsString".to_owned(),
                Some("CStr") => "CString".to_owned(),
                _ => render(p),
            }
        }
        other => render(other),
    }
}
