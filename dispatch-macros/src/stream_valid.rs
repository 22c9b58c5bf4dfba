//! The rules of streaming methods, each broken rule reported at its token with the fix.

use crate::ast::{ungroup, Method, Output};
use crate::ctxt::Ctxt;
use crate::signature::render;
use crate::stream_attr::{is_impl_stream, is_stream_helper};
use syn::{ImplItemFn, ReturnType};

/// Checks a remote method's streaming side. `true` when its return type was reported here (the
/// general checks of return types must not report it again).
pub(crate) fn check_method(cx: &mut Ctxt, method: &Method<'_>) -> bool {
    let is_stream = matches!(method.output, Output::Stream { .. });
    if let (Some(attr), false) = (&method.stream, is_stream) {
        let name = render(attr.attr.path());
        cx.error(
            attr.attr,
            format!(
                "`#[{name}]` goes on a streaming method, one returning `dispatch::Feed<T>`: \
                 return `Feed::new(stream)` (or `publisher.feed(key)`), or remove `#[{name}]`"
            ),
        );
    }
    if let (Some(blocking), true) = (method.blocking, is_stream) {
        cx.error(
            blocking,
            "`#[blocking]` does not apply to streaming methods: their open code runs once per \
             subscription on the Library's runtime; make the method `async fn` and move \
             blocking work into `tokio::task::spawn_blocking`",
        );
    }
    if let ReturnType::Type(_, ty) = &method.sig.output {
        if is_impl_stream(ungroup(ty)) {
            cx.error(
                ty,
                format!(
                    "a streaming method returns `dispatch::Feed<T>`, not `{}`: wrap the stream, \
                     `-> Feed<T>` with `Feed::new(stream)` in the body",
                    render(ty)
                ),
            );
            return true;
        }
    }
    false
}

/// Reports a streaming helper attribute on a method workers cannot call.
pub(crate) fn check_local(cx: &mut Ctxt, f: &ImplItemFn) {
    if let Some(attr) = f.attrs.iter().find(|a| is_stream_helper(a)) {
        let name = render(attr.path());
        cx.error(
            attr,
            format!(
                "`#[{name}]` applies to remote methods only (`pub fn` taking `&self` and \
                 returning `Feed<T>`): remove it, or make the method `pub`"
            ),
        );
    }
}
