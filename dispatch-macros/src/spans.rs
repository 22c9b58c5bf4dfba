//! Spans of generated tokens: a leaf, so every generating module can use it.

use proc_macro2::{Group, Span, TokenStream, TokenTree};

/// `tokens` with the location of `span` and their own hygiene.
pub(crate) fn located_at(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(g) = &token {
                let mut group = Group::new(g.delimiter(), located_at(&g.stream(), span));
                group.set_span(g.span().located_at(span));
                token = TokenTree::Group(group);
            } else {
                token.set_span(token.span().located_at(span));
            }
            token
        })
        .collect()
}
