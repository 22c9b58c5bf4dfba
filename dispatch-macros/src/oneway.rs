//! `#[oneway]`: a remote method whose caller does not wait for it. The helper attribute, its
//! rules, and the mark it leaves in the method's signature (and so in the manifest).
//!
//! A leaf next to `attr`: read by `valid` (the rules), `fallback` (removing it) and `expand`
//! (the stub that does not wait, the signature the Library reads it from).

use crate::ast::{ungroup, Method};
use crate::ctxt::Ctxt;
use syn::{Attribute, ImplItemFn, Meta, ReturnType, Type};

/// How a one-way method's registered signature starts; dispatch-core reads it there (so an
/// Agent built without the mark has another manifest and is refused).
pub(crate) const PREFIX: &str = "#[oneway] ";

/// Whether `attr` is the `#[oneway]` helper attribute.
pub(crate) fn is_oneway(attr: &Attribute) -> bool {
    attr.path().is_ident("oneway")
}

/// The `#[oneway]` attribute of a method, if any.
pub(crate) fn attr(f: &ImplItemFn) -> Option<&Attribute> {
    f.attrs.iter().find(|a| is_oneway(a))
}

/// Whether a remote method is one-way.
pub(crate) fn of(m: &Method<'_>) -> bool {
    attr(m.item).is_some()
}

/// Reports a malformed `#[oneway(…)]`, and a one-way method that returns a value: its caller
/// gets no reply to carry one.
pub(crate) fn check(cx: &mut Ctxt, m: &Method<'_>) {
    let Some(attr) = attr(m.item) else {
        return;
    };
    if !matches!(attr.meta, Meta::Path(_)) {
        cx.error(attr, "`#[oneway]` takes no arguments: write `#[oneway]`");
    }
    if let ReturnType::Type(_, ty) = &m.sig.output {
        let unit = matches!(ungroup(ty), Type::Tuple(t) if t.elems.is_empty());
        if !unit && !matches!(ungroup(ty), Type::Never(_)) {
            cx.error(
                ty,
                format!(
                    "a `#[oneway]` method returns `()`: its caller does not wait for it and gets \
                     no reply, so a value has nowhere to go; remove the return type (log or \
                     store a failure inside the method), or remove `#[oneway]` to make `{}` a \
                     call that waits for its result",
                    m.ident
                ),
            );
        }
    }
}

/// Reports `#[oneway]` on a method that is not remote.
pub(crate) fn check_local(cx: &mut Ctxt, f: &ImplItemFn) {
    if let Some(attr) = attr(f) {
        cx.error(
            attr,
            "`#[oneway]` applies to remote methods only (`pub fn` taking `&self`): remove it, \
             or make the method `pub`",
        );
    }
}
