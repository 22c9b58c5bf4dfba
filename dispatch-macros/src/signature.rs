//! Tokens as text, spaced as rustfmt would: the normalised signatures registered for the manifest
//! (`async fn add(a: i64, b: i64) -> i64`, which the Library and each worker compare at handshake
//! and show when they differ) and the code quoted in error messages. Rendered from tokens, so
//! whitespace and comments in the source do not matter. A leaf: it knows tokens, not the service,
//! so every other module can use it.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::ToTokens;

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
