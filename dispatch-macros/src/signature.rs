//! The normalised signature string of a remote method (`async fn add(a: i64, b: i64) -> i64`),
//! registered for the manifest: the Library and each worker compare them at handshake, and show
//! them when they differ. Rendered from tokens, so whitespace and comments in the source do not
//! matter, and spaced as rustfmt would, so they read well in an error message.

use crate::ast::{Method, Output};
use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::{quote, ToTokens};

/// The signature of `method` without its receiver: `async fn parse(s: String) -> Result<u32, E>`.
/// `Self` is replaced by the service type, and a `Result` by its last path segment.
pub(crate) fn of(method: &Method<'_>) -> String {
    let asyncness = &method.sig.asyncness;
    let ident = method.ident;
    let args = method.args.iter().map(|a| {
        let (name, ty) = (&a.name, &a.resolved);
        quote!(#name: #ty)
    });
    let output = match &method.output {
        Output::Unit => quote!(),
        Output::Value { resolved, .. } => quote!(-> #resolved),
        Output::Fallible { ok, err } => quote!(-> Result<#ok, #err>),
    };
    render(quote!(#asyncness fn #ident(#(#args),*) #output))
}

/// `tokens` as text, spaced as rustfmt would space a signature or a type.
pub(crate) fn render(tokens: impl ToTokens) -> String {
    let mut out = String::new();
    write(&mut out, tokens.into_token_stream());
    out.trim_end().to_owned()
}

fn write(out: &mut String, tokens: TokenStream) {
    let mut op = String::new();
    for token in tokens {
        match token {
            TokenTree::Ident(_) | TokenTree::Literal(_) => {
                if out.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    out.push(' ');
                }
                out.push_str(&token.to_string());
            }
            TokenTree::Punct(p) => {
                op.push(p.as_char());
                // A lifetime's `'` is joint with the identifier that follows it.
                if p.spacing() == Spacing::Alone || p.as_char() == '\'' {
                    push_op(out, &op);
                    op.clear();
                }
            }
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{ ", " }"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write(out, g.stream());
                trim_space(out);
                out.push_str(close);
            }
        }
    }
    if !op.is_empty() {
        push_op(out, &op);
    }
}

fn push_op(out: &mut String, op: &str) {
    match op {
        "," | ";" | ":" => {
            trim_space(out);
            out.push_str(op);
            out.push(' ');
        }
        "->" | "=>" | "=" | "+" => {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            out.push_str(op);
            out.push(' ');
        }
        ">" | ">>" => {
            trim_space(out);
            out.push_str(op);
        }
        _ => out.push_str(op),
    }
}

fn trim_space(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
}
