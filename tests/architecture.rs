//! Architecture rules, checked on the source text of the workspace: which top-level module of
//! `dispatch-core` may import which (the rank table right below), no import cycle between the
//! top-level modules of `dispatch-core`, and no import cycle between the files of
//! `dispatch-macros`.
//!
//! The checker is a small tokenizer, not a compiler: it drops comments, string and char literals
//! and test code, then reads every `crate::…`, `self::…` and `super::…` path, in a `use` (groups
//! `use crate::{a::b, c::{d, e}}` included) or anywhere in code. Its own unit tests are at the
//! bottom of this file (`checker::…`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::Path;

// =================================================================================================
// THE RULES FOR dispatch-core/src. Maintainers: change them here.
//
// A top-level module is the first path component under src/: `foo.rs` and a `foo/` folder are the
// same module `foo`. lib.rs and private.rs (the `__private` facade for generated code) are the
// crate root. An "import" is any path that names another top-level module: `use crate::foo…`,
// `crate::foo::…` anywhere in code, or `super::…` climbing out of the file's own top-level module.
//
// Test code is not checked: files named `tests.rs`, files under a `tests/` folder inside src, and
// `#[cfg(test)]` items (a `mod … { … }` block, a `mod …;` file, a helper fn). A test may reach
// across the layers to set up its case; production code may not.
//
// An import A -> B is allowed when
//   * A is the crate root (lib.rs, private.rs): the root may import anything; or
//   * A and B are the same top-level module; or
//   * the arrow is not in `never`, and
//       - B's rank is LOWER than A's (imports point down), or
//       - A and B have the same rank and (A, B) is listed in `same_rank`.
// Whatever the table says, there must be no cycle between top-level modules (checked separately,
// so allowing both directions in the table still fails).
// A top-level module that is not in `ranks` fails the test: add it to the table.
// =================================================================================================

/// The layering of dispatch-core/src (see the comment above).
const CORE_RULES: Rules = Rules {
    // (module, rank): a module may import modules of a LOWER rank.
    ranks: &[
        // The Cluster builder and run(): the only module that knows every role.
        ("cluster", 6),
        // The roles, side by side: on one rank, so only `same_rank` edges join them.
        ("master", 5),  // the supervisor and its admin socket
        ("library", 5), // the Library process
        ("worker", 5),  // the worker process: Agent, its link, service clients
        ("config", 5),  // config sync: imported by nobody but cluster
        ("admin", 5),   // the operator's side (requests, replies, discovery): beside the roles
        // role, spawn, fds, listeners, runtime dir, logging, exit, the child-to-master link
        ("process", 4),
        ("messenger", 3),
        // streams and keyed subscriptions: frames, the Library's fan-out, Publisher
        ("stream", 3),
        // schedules (issue 17): builder, clock, a child's runs, the fleet's Redis claims/leases
        ("schedule", 3),
        // the spans of calls, joined across worker and Library (ids carried in wire::CallRequest)
        ("call_trace", 3),
        // bytes only: codec, framing, data plane, control plane
        ("wire", 2),
        // the macro <-> Library contract, and the low leaves
        ("service", 1),
        ("topic", 1),
        ("metrics", 1),
        // leaves usable by all: they import no other crate module
        ("error", 0),
        ("settings", 0),
        // the hasher of the call path's maps (request ids, service and method names)
        ("fast_hash", 0),
        ("cluster_error", 0),
    ],
    // (from, to): the only imports allowed between two modules of the same rank.
    same_rank: &[
        ("master", "admin"), // the master serves the admin socket
    ],
    // (from, to, why): arrows that must never exist, whatever the ranks say. "*" is any module.
    never: &[
        ("library", "worker", "they meet over the wire only"),
        ("worker", "library", "they meet over the wire only"),
        ("wire", "process", "wire is bytes only"),
        ("*", "cluster", "cluster is the top: nothing imports it"),
        ("admin", "master", "admin is the operator's side"),
        ("*", ROOT, "the root is only a facade"),
        ("*", PRIVATE, "`__private` is for generated code only"),
    ],
};

// =================================================================================================
// The two checks on the real tree.
// =================================================================================================

#[test]
fn dispatch_core_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = read_tree(&root.join("dispatch-core").join("src"));
    assert!(
        !sources.is_empty(),
        "found no .rs file under dispatch-core/src"
    );
    let problems = check_layers("dispatch-core/src", &sources, &CORE_RULES);
    assert!(
        problems.is_empty(),
        "dispatch-core/src breaks {} architecture rule(s) (the rules are at the top of \
         tests/architecture.rs):\n{}\n",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn dispatch_macros_has_no_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = read_tree(&root.join("dispatch-macros").join("src"));
    assert!(
        !sources.is_empty(),
        "found no .rs file under dispatch-macros/src"
    );
    let problems = check_file_cycles("dispatch-macros/src", &sources);
    assert!(
        problems.is_empty(),
        "dispatch-macros/src has {} import cycle(s) between its files (each file is a module; \
         lib.rs is the root):\n{}\n",
        problems.len(),
        problems.join("\n")
    );
}

// =================================================================================================
// The checker.
// =================================================================================================

/// The crate root (lib.rs) as a node of the module graph.
const ROOT: &str = "lib";
/// private.rs, declared in lib.rs as `pub mod __private`: part of the root facade.
const PRIVATE: &str = "private";

/// A layering rule table (see `CORE_RULES`).
struct Rules {
    ranks: &'static [(&'static str, u32)],
    same_rank: &'static [(&'static str, &'static str)],
    never: &'static [(&'static str, &'static str, &'static str)],
}

impl Rules {
    fn rank(&self, module: &str) -> Option<u32> {
        self.ranks
            .iter()
            .find(|(m, _)| *m == module)
            .map(|(_, rank)| *rank)
    }

    /// Why the import `from -> to` is not allowed, or `None` if it is (or if a module is not in
    /// the table: that is reported on its own).
    fn violation(&self, from: &str, to: &str) -> Option<String> {
        if from == to {
            return None;
        }
        for (a, b, why) in self.never {
            if (*a == "*" || *a == from) && (*b == "*" || *b == to) {
                return Some(format!("never allowed: {why}"));
            }
        }
        let (rank_from, rank_to) = (self.rank(from)?, self.rank(to)?);
        if rank_to < rank_from || self.same_rank.contains(&(from, to)) {
            None
        } else if rank_to == rank_from {
            Some(format!(
                "both are rank {rank_from}, and {from} -> {to} is not in `same_rank`"
            ))
        } else {
            Some(format!(
                "points up: {from} is rank {rank_from}, {to} is rank {rank_to}"
            ))
        }
    }
}

/// One source file: its path under src/ (with `/`), and its text.
struct Source {
    rel: String,
    text: String,
}

/// An import of one top-level module by another, where it was seen.
struct Edge {
    from: String,
    to: String,
    /// The file (under src/) and line of the path.
    file: String,
    line: usize,
    /// The path as written, e.g. `crate::worker::Agent`.
    text: String,
}

/// What the checker read in one crate.
struct Analysis {
    /// Each top-level module found in non-test files, and where it lives (`worker/`, `cluster.rs`).
    modules: BTreeMap<String, String>,
    /// Imports between different top-level modules, ordered by file and line.
    edges: Vec<Edge>,
}

/// dispatch-core's check: unknown modules, forbidden arrows, cycles. One line (or paragraph) per
/// problem; `label` is the folder the files' paths are relative to (e.g. `dispatch-core/src`).
fn check_layers(label: &str, sources: &[Source], rules: &Rules) -> Vec<String> {
    let table: Vec<&str> = rules.ranks.iter().map(|(module, _)| *module).collect();
    let analysis = analyze(sources, &table);
    let is_root = |module: &str| module == ROOT || module == PRIVATE;
    let mut problems = Vec::new();

    for (module, at) in &analysis.modules {
        if !is_root(module) && rules.rank(module).is_none() {
            problems.push(format!(
                "unknown top-level module `{module}` ({label}/{at}): add it to the rank table \
                 (CORE_RULES) at the top of tests/architecture.rs"
            ));
        }
    }

    let target_at = |module: &str| match module {
        ROOT => format!(" ({label}/lib.rs)"),
        PRIVATE => format!(" ({label}/private.rs)"),
        _ => analysis
            .modules
            .get(module)
            .map(|at| format!(" ({label}/{at})"))
            .unwrap_or_default(),
    };
    for edge in &analysis.edges {
        if is_root(&edge.from) {
            continue;
        }
        if let Some(why) = rules.violation(&edge.from, &edge.to) {
            problems.push(format!(
                "forbidden arrow {} -> {}: {label}/{}:{} uses {}{} [{why}]",
                edge.from,
                edge.to,
                edge.file,
                edge.line,
                edge.text,
                target_at(&edge.to),
            ));
        }
    }

    // The root is outside the cycle check: it imports everything, and an import of it is
    // already a forbidden arrow.
    let graph = graph_of(
        analysis
            .edges
            .iter()
            .filter(|edge| !is_root(&edge.from) && !is_root(&edge.to)),
        |module| module.to_string(),
    );
    problems.extend(report_cycles(&graph, label, "top-level modules"));
    problems
}

/// dispatch-macros' check: each file is a module (lib.rs the root), and no two import each other,
/// directly or around a loop.
fn check_file_cycles(label: &str, sources: &[Source]) -> Vec<String> {
    let analysis = analyze(sources, &[]);
    let file_of = |module: &str| {
        if module == ROOT {
            "lib.rs".to_string()
        } else {
            analysis
                .modules
                .get(module)
                .cloned()
                .unwrap_or_else(|| format!("{module}.rs"))
        }
    };
    let graph = graph_of(analysis.edges.iter(), file_of);
    report_cycles(&graph, label, "files")
}

/// Reads a crate's files: drops test code, finds the top-level modules, collects the imports.
/// `table` names modules that count as known even without a file.
fn analyze(sources: &[Source], table: &[&str]) -> Analysis {
    // Lex every file and cut its `#[cfg(test)]` items; note the `#[cfg(test)] mod x;` files.
    let mut files = Vec::new();
    let mut test_files = BTreeSet::new();
    let mut test_dirs = Vec::new();
    for source in sources {
        if is_test_path(&source.rel) {
            continue;
        }
        let stripped = strip_test_code(&lex(&source.text));
        if stripped.file_is_test {
            test_files.insert(source.rel.clone());
        }
        for (name, path) in &stripped.test_mods {
            let (declared_files, dir) = test_module_files(&source.rel, name, path.as_deref());
            test_files.extend(declared_files);
            test_dirs.extend(dir);
        }
        files.push((source.rel.as_str(), stripped.tokens));
    }
    files.retain(|(rel, _)| {
        !test_files.contains(*rel) && !test_dirs.iter().any(|dir| rel.starts_with(dir.as_str()))
    });

    let mut modules = BTreeMap::new();
    for (rel, _) in &files {
        let module = node(&module_path(rel));
        let at = match rel.split_once('/') {
            Some((top, _)) => format!("{top}/"),
            None => rel.to_string(),
        };
        // `foo.rs` names the module better than `foo/` when both exist.
        let entry = modules.entry(module).or_insert_with(|| at.clone());
        if at.ends_with(".rs") {
            *entry = at;
        }
    }
    let mut known: BTreeSet<String> = table.iter().map(|module| module.to_string()).collect();
    known.extend(modules.keys().filter(|m| *m != ROOT).cloned());

    let mut edges = Vec::new();
    for (rel, tokens) in &files {
        for (from, found) in references(tokens, &module_path(rel), &known) {
            if from != found.target {
                edges.push(Edge {
                    from,
                    to: found.target,
                    file: rel.to_string(),
                    line: found.line,
                    text: found.text,
                });
            }
        }
    }
    edges.sort_by(|a, b| (&a.file, a.line, &a.text).cmp(&(&b.file, b.line, &b.text)));
    Analysis { modules, edges }
}

/// Files that are test code by their name: `tests.rs`, or anything under a `tests/` folder.
fn is_test_path(rel: &str) -> bool {
    let mut parts: Vec<&str> = rel.split('/').collect();
    let file = parts.pop().unwrap_or_default();
    file == "tests.rs" || parts.contains(&"tests")
}

/// The module path of a file: `master/stop.rs` is `master::stop`, `master/mod.rs` is `master`,
/// `lib.rs` is the root (empty).
fn module_path(rel: &str) -> Vec<String> {
    if rel == "lib.rs" || rel == "main.rs" {
        return Vec::new();
    }
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if let Some(last) = parts.last_mut() {
        if let Some(stem) = last.strip_suffix(".rs") {
            *last = stem.to_string();
        }
    }
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

/// The top-level module of a module path (the root for the empty path).
fn node(path: &[String]) -> String {
    path.first().cloned().unwrap_or_else(|| ROOT.to_string())
}

/// The files (and folder) of `mod name;` declared in `rel`, with its `#[path = "…"]` if any.
fn test_module_files(rel: &str, name: &str, path: Option<&str>) -> (Vec<String>, Option<String>) {
    let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
    let join = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            format!("{a}/{b}")
        }
    };
    if let Some(path) = path {
        // A `#[path]` is relative to the declaring file's folder.
        return (vec![normalize(&join(dir, path))], None);
    }
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let children = if stem == "mod" || module_path(rel).is_empty() {
        dir.to_string()
    } else {
        join(dir, stem)
    };
    let base = join(&children, name);
    (
        vec![format!("{base}.rs"), format!("{base}/mod.rs")],
        Some(format!("{base}/")),
    )
}

/// Resolves `.` and `..` in a `/` path.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

// -------------------------------------------------------------------------------------------------
// Tokens: comments dropped, literals reduced to one token each.
// -------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A string literal's content (read only for `#[path = "…"]`).
    Str(String),
    /// A char, byte or number literal, a lifetime or a label.
    Lit,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits Rust source into tokens, dropping comments (line, block — nested — and doc comments)
/// and keeping each token's line.
fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < n {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < n && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0usize;
            while i < n {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if is_ident_start(ch) {
            let start = i;
            while i < n && is_ident_continue(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            if matches!(word.as_str(), "r" | "br" | "cr") && matches!(at(i), '"' | '#') {
                let mut j = i;
                while at(j) == '#' {
                    j += 1;
                }
                let hashes = j - i;
                if at(j) == '"' {
                    // A raw string: r"…", r#"…"#, br"…", cr##"…"##.
                    let first_line = line;
                    let body = j + 1;
                    let mut k = body;
                    while k < n && !(c[k] == '"' && (1..=hashes).all(|h| at(k + h) == '#')) {
                        if c[k] == '\n' {
                            line += 1;
                        }
                        k += 1;
                    }
                    out.push(Token {
                        tok: Tok::Str(c[body..k].iter().collect()),
                        line: first_line,
                    });
                    i = (k + 1 + hashes).min(n);
                    continue;
                }
                if word == "r" && hashes == 1 && is_ident_start(at(j)) {
                    // A raw identifier: r#type.
                    let mut k = j;
                    while k < n && is_ident_continue(c[k]) {
                        k += 1;
                    }
                    out.push(Token {
                        tok: Tok::Ident(c[j..k].iter().collect()),
                        line,
                    });
                    i = k;
                    continue;
                }
            }
            // (b"…" and c"…" lex as an identifier then a string: harmless.)
            out.push(Token {
                tok: Tok::Ident(word),
                line,
            });
        } else if ch == '"' {
            let first_line = line;
            let mut text = String::new();
            let mut k = i + 1;
            while k < n && c[k] != '"' {
                if c[k] == '\\' {
                    text.push(c[k]);
                    k += 1;
                }
                if k < n {
                    if c[k] == '\n' {
                        line += 1;
                    }
                    text.push(c[k]);
                    k += 1;
                }
            }
            out.push(Token {
                tok: Tok::Str(text),
                line: first_line,
            });
            i = k + 1;
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // An escaped char: '\n', '\'', '\u{1F600}'.
                let mut k = i + 3;
                while k < n && c[k] != '\'' && c[k] != '\n' {
                    k += 1;
                }
                i = k + 1;
            } else if at(i + 2) == '\'' {
                // A char: 'x', '"'.
                i += 3;
            } else {
                // A lifetime or a label: 'a, 'static, '_.
                i += 1;
                while i < n && is_ident_continue(c[i]) {
                    i += 1;
                }
            }
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
        } else if ch.is_ascii_digit() {
            while i < n && (is_ident_continue(c[i]) || (c[i] == '.' && at(i + 1).is_ascii_digit()))
            {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

fn is_punct(token: Option<&Token>, ch: char) -> bool {
    matches!(token, Some(Token { tok: Tok::Punct(p), .. }) if *p == ch)
}

fn is_path_sep(token: Option<&Token>) -> bool {
    matches!(
        token,
        Some(Token {
            tok: Tok::PathSep,
            ..
        })
    )
}

fn ident(token: Option<&Token>) -> Option<&str> {
    match token {
        Some(Token {
            tok: Tok::Ident(word),
            ..
        }) => Some(word),
        _ => None,
    }
}

/// The index of the bracket that closes the one opened at `open` (`tokens.len()` if none does).
fn closing(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, token) in tokens.iter().enumerate().skip(open) {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

// -------------------------------------------------------------------------------------------------
// Test code: `#[cfg(test)]` items are cut out (test code may reach across layers).
// -------------------------------------------------------------------------------------------------

struct Stripped {
    tokens: Vec<Token>,
    /// `#[cfg(test)] mod name;` declarations: the name, and the `#[path = "…"]` if any.
    test_mods: Vec<(String, Option<String>)>,
    /// The file starts with `#![cfg(test)]`.
    file_is_test: bool,
}

fn is_cfg_test(attr: &[Token]) -> bool {
    let want = [
        Tok::Ident("cfg".to_string()),
        Tok::Punct('('),
        Tok::Ident("test".to_string()),
        Tok::Punct(')'),
    ];
    attr.len() == want.len() && attr.iter().zip(&want).all(|(t, w)| t.tok == *w)
}

/// Drops every item marked `#[cfg(test)]` (its other attributes included).
fn strip_test_code(tokens: &[Token]) -> Stripped {
    let mut out = Vec::new();
    let mut test_mods = Vec::new();
    let mut file_is_test = false;
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        if is_punct(tokens.get(i), '#') {
            let inner = is_punct(tokens.get(i + 1), '!');
            let open = if inner { i + 2 } else { i + 1 };
            if is_punct(tokens.get(open), '[') {
                let close = closing(tokens, open);
                if is_cfg_test(tokens.get(open + 1..close).unwrap_or_default()) {
                    if inner {
                        file_is_test |= depth == 0;
                        i = close + 1;
                        continue;
                    }
                    // The item's other attributes, then the item.
                    let mut j = close + 1;
                    let mut path = None;
                    while is_punct(tokens.get(j), '#') && is_punct(tokens.get(j + 1), '[') {
                        let end = closing(tokens, j + 1);
                        if let Some([key, eq, value]) = tokens.get(j + 2..end) {
                            if let (Tok::Ident(key), Tok::Punct('='), Tok::Str(value)) =
                                (&key.tok, &eq.tok, &value.tok)
                            {
                                if key == "path" {
                                    path = Some(value.clone());
                                }
                            }
                        }
                        j = end + 1;
                    }
                    if let Some(name) = mod_declaration(tokens, j) {
                        test_mods.push((name, path));
                    }
                    i = item_end(tokens, j);
                    continue;
                }
            }
        }
        match tokens[i].tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    Stripped {
        tokens: out,
        test_mods,
        file_is_test,
    }
}

/// Skips `pub`, `pub(crate)`, `pub(in …)` at `at`.
fn skip_visibility(tokens: &[Token], at: usize) -> usize {
    if ident(tokens.get(at)) != Some("pub") {
        return at;
    }
    if is_punct(tokens.get(at + 1), '(') {
        closing(tokens, at + 1) + 1
    } else {
        at + 1
    }
}

/// `mod name;` (a module in its own file) at `at`.
fn mod_declaration(tokens: &[Token], at: usize) -> Option<String> {
    let at = skip_visibility(tokens, at);
    if ident(tokens.get(at)) == Some("mod") && is_punct(tokens.get(at + 2), ';') {
        ident(tokens.get(at + 1)).map(str::to_string)
    } else {
        None
    }
}

/// Where the item (or field, arm, statement) starting at `at` ends (exclusive).
fn item_end(tokens: &[Token], at: usize) -> usize {
    const ITEMS: &[&str] = &[
        "mod",
        "fn",
        "struct",
        "enum",
        "union",
        "impl",
        "trait",
        "use",
        "const",
        "static",
        "type",
        "extern",
        "unsafe",
        "async",
        "macro_rules",
        "let",
    ];
    let first = skip_visibility(tokens, at);
    // An item ends at `;` or after its `{ … }`; a field, variant or arm also at `,`.
    let is_item = ident(tokens.get(first)).is_some_and(|word| ITEMS.contains(&word));
    let mut depth = 0usize;
    let mut k = at;
    while let Some(token) = tokens.get(k) {
        match token.tok {
            Tok::Punct('{') if depth == 0 => return (closing(tokens, k) + 1).min(tokens.len()),
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') if depth == 0 => return k,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            Tok::Punct(';') if depth == 0 => return k + 1,
            Tok::Punct(',') if depth == 0 && !is_item => return k + 1,
            _ => {}
        }
        k += 1;
    }
    tokens.len()
}

// -------------------------------------------------------------------------------------------------
// Paths that reach another top-level module.
// -------------------------------------------------------------------------------------------------

/// A path naming a top-level module (or the root).
struct Found {
    target: String,
    line: usize,
    text: String,
}

/// Every path in `tokens` (a file of module path `file_path`) that names a top-level module,
/// with the top-level module the path is written in (inline `mod x { … }` blocks counted).
fn references(
    tokens: &[Token],
    file_path: &[String],
    known: &BTreeSet<String>,
) -> Vec<(String, Found)> {
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut pending_mod = None;
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate() {
        match &token.tok {
            Tok::Punct('{') => {
                depth += 1;
                if let Some(name) = pending_mod.take() {
                    inline.push((name, depth));
                }
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(word) if word == "mod" && is_punct(tokens.get(i + 2), '{') => {
                pending_mod = ident(tokens.get(i + 1)).map(str::to_string);
            }
            Tok::Ident(_) if is_path_sep(tokens.get(i + 1)) => {
                let mut here = file_path.to_vec();
                here.extend(inline.iter().map(|(name, _)| name.clone()));
                for found in path_at(tokens, i, &here, known) {
                    out.push((node(&here), found));
                }
            }
            _ => {}
        }
    }
    out
}

/// The top-level module that `name`, read at the crate root, names.
fn root_name(name: &str, known: &BTreeSet<String>) -> String {
    if name == "__private" {
        PRIVATE.to_string()
    } else if known.contains(name) {
        name.to_string()
    } else {
        // An item of the root, or a re-export (`crate::Agent`, `crate::events`).
        ROOT.to_string()
    }
}

/// The path starting at `i` (an identifier followed by `::`), read in module `here`.
fn path_at(tokens: &[Token], i: usize, here: &[String], known: &BTreeSet<String>) -> Vec<Found> {
    let Some(first) = ident(tokens.get(i)) else {
        return Vec::new();
    };
    let line = tokens[i].line;
    if let Some(prev) = i.checked_sub(1).and_then(|p| tokens.get(p)) {
        // The middle of a path, a method's turbofish, or a `pub(in …)` visibility.
        if prev.tok == Tok::PathSep
            || prev.tok == Tok::Punct('.')
            || ident(Some(prev)) == Some("in")
        {
            return Vec::new();
        }
    }
    let mut base = match first {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => {
            let mut base = here.to_vec();
            if base.pop().is_none() {
                return Vec::new();
            }
            base
        }
        // At the crate root, a bare `foo::…` names the module `foo`.
        _ if here.is_empty() && (known.contains(first) || first == "__private") => {
            return vec![Found {
                target: root_name(first, known),
                line,
                text: render_path(tokens, i),
            }];
        }
        _ => return Vec::new(),
    };
    let mut last = i;
    while is_path_sep(tokens.get(last + 1)) && ident(tokens.get(last + 2)) == Some("super") {
        if base.pop().is_none() {
            return Vec::new();
        }
        last += 2;
    }
    if !is_path_sep(tokens.get(last + 1)) {
        return Vec::new();
    }
    let text = render_path(tokens, i);
    if let Some(top) = base.first() {
        return vec![Found {
            target: top.clone(),
            line,
            text,
        }];
    }
    // The path climbed to the crate root: its next segment names the module.
    let next = last + 2;
    match tokens.get(next).map(|token| &token.tok) {
        Some(Tok::Ident(name)) => vec![Found {
            target: root_name(name, known),
            line,
            text,
        }],
        Some(Tok::Punct('{')) => {
            let prefix = join_tokens(tokens.get(i..next).unwrap_or_default());
            group(tokens, next, &prefix, known)
        }
        Some(Tok::Punct('*')) => vec![Found {
            target: ROOT.to_string(),
            line,
            text,
        }],
        _ => Vec::new(),
    }
}

/// The entries of a `{ … }` use group opened at `open` at the crate root (nested groups too).
fn group(tokens: &[Token], open: usize, prefix: &str, known: &BTreeSet<String>) -> Vec<Found> {
    let end = closing(tokens, open);
    let mut out = Vec::new();
    let mut j = open + 1;
    while j < end {
        let Some(token) = tokens.get(j) else { break };
        match &token.tok {
            Tok::Punct('{') => out.extend(group(tokens, j, prefix, known)),
            Tok::Ident(name) => out.push(Found {
                target: if name == "self" {
                    ROOT.to_string()
                } else {
                    root_name(name, known)
                },
                line: token.line,
                text: format!("{prefix}{}", render_path(tokens, j)),
            }),
            Tok::Punct('*') => out.push(Found {
                target: ROOT.to_string(),
                line: token.line,
                text: format!("{prefix}*"),
            }),
            _ => {}
        }
        // On to the next entry.
        while j < end && !is_punct(tokens.get(j), ',') {
            if matches!(tokens[j].tok, Tok::Punct('{' | '(' | '[')) {
                j = closing(tokens, j);
            }
            j += 1;
        }
        j += 1;
    }
    out
}

/// `a::b::C`, `a::{…}`, `a::*` starting at `start`, as written.
fn render_path(tokens: &[Token], start: usize) -> String {
    let mut text = String::new();
    let mut want_segment = true;
    for token in tokens.iter().skip(start) {
        match (&token.tok, want_segment) {
            (Tok::Ident(word), true) => text.push_str(word),
            (Tok::PathSep, false) => text.push_str("::"),
            (Tok::Punct('*'), true) => {
                text.push('*');
                break;
            }
            (Tok::Punct('{'), true) => {
                text.push_str("{…}");
                break;
            }
            _ => break,
        }
        want_segment = !want_segment;
    }
    text
}

fn join_tokens(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|token| match &token.tok {
            Tok::Ident(word) => word.as_str(),
            Tok::PathSep => "::",
            _ => "",
        })
        .collect()
}

// -------------------------------------------------------------------------------------------------
// Cycles.
// -------------------------------------------------------------------------------------------------

/// Where an import was seen: file, line, path.
type Site = (String, usize, String);
/// from -> to -> where.
type Graph = BTreeMap<String, BTreeMap<String, Vec<Site>>>;

fn graph_of<'e>(edges: impl Iterator<Item = &'e Edge>, name: impl Fn(&str) -> String) -> Graph {
    let mut graph = Graph::new();
    for edge in edges {
        graph
            .entry(name(&edge.from))
            .or_default()
            .entry(name(&edge.to))
            .or_default()
            .push((edge.file.clone(), edge.line, edge.text.clone()));
    }
    graph
}

fn successors<'g>(graph: &'g Graph, node: &str) -> impl Iterator<Item = &'g String> {
    graph.get(node).into_iter().flat_map(|next| next.keys())
}

/// Every node reachable from `start` (itself included).
fn reachable<'g>(graph: &'g Graph, start: &'g str) -> BTreeSet<&'g str> {
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in successors(graph, node) {
            if seen.insert(next.as_str()) {
                queue.push_back(next.as_str());
            }
        }
    }
    seen
}

/// A shortest cycle through `start` inside `within`, as `[start, …, start]`.
fn shortest_cycle<'g>(
    graph: &'g Graph,
    start: &'g str,
    within: &BTreeSet<&str>,
) -> Option<Vec<&'g str>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in successors(graph, node).map(String::as_str) {
            if next == start {
                let mut path = vec![start, node];
                let mut at = node;
                while at != start {
                    at = parent.get(at).copied()?;
                    path.push(at);
                }
                path.reverse();
                return Some(path);
            }
            if within.contains(next) && !parent.contains_key(next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// One report per group of nodes that import each other: a shortest cycle through the group's
/// first node, each arrow with where it was seen.
fn report_cycles(graph: &Graph, label: &str, what: &str) -> Vec<String> {
    let nodes: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(from, to)| std::iter::once(from).chain(to.keys()))
        .map(String::as_str)
        .collect();
    let reach: BTreeMap<&str, BTreeSet<&str>> = nodes
        .iter()
        .map(|&node| (node, reachable(graph, node)))
        .collect();
    let mut done = BTreeSet::new();
    let mut reports = Vec::new();
    for &node in &nodes {
        if done.contains(node) {
            continue;
        }
        let tangle: BTreeSet<&str> = reach
            .get(node)
            .into_iter()
            .flatten()
            .copied()
            .filter(|other| reach.get(other).is_some_and(|back| back.contains(node)))
            .collect();
        done.extend(tangle.iter().copied());
        if tangle.len() < 2 {
            continue;
        }
        let Some(cycle) = shortest_cycle(graph, node, &tangle) else {
            continue;
        };
        let mut report = format!("cycle between {what}: {}", cycle.join(" -> "));
        if tangle.len() + 1 > cycle.len() {
            let all: Vec<&str> = tangle.iter().copied().collect();
            report.push_str(&format!(" (all of {} import each other)", all.join(", ")));
        }
        for pair in cycle.windows(2) {
            let [from, to] = pair else { continue };
            let sites = graph.get(*from).and_then(|next| next.get(*to));
            if let Some(((file, line, text), more)) = sites.and_then(|s| s.split_first()) {
                report.push_str(&format!(
                    "\n    {from} -> {to}: {label}/{file}:{line} uses {text}"
                ));
                if !more.is_empty() {
                    report.push_str(&format!(" (and {} more)", more.len()));
                }
            }
        }
        reports.push(report);
    }
    reports
}

// -------------------------------------------------------------------------------------------------
// Reading the tree.
// -------------------------------------------------------------------------------------------------

/// Every `.rs` file under `dir`, by path.
fn read_tree(dir: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    read_dir_into(dir, "", &mut out);
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

fn read_dir_into(dir: &Path, prefix: &str, out: &mut Vec<Source>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
        if kind.is_dir() {
            read_dir_into(&path, &rel, out);
        } else if name.ends_with(".rs") {
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push(Source { rel, text });
        }
    }
}

// =================================================================================================
// The checker's own tests, on small in-memory crates.
// =================================================================================================

mod checker {
    use super::*;

    fn sources(files: &[(&str, &str)]) -> Vec<Source> {
        files
            .iter()
            .map(|(rel, text)| Source {
                rel: rel.to_string(),
                text: text.to_string(),
            })
            .collect()
    }

    fn core(files: &[(&str, &str)]) -> Vec<String> {
        check_layers("dispatch-core/src", &sources(files), &CORE_RULES)
    }

    fn macros(files: &[(&str, &str)]) -> Vec<String> {
        check_file_cycles("dispatch-macros/src", &sources(files))
    }

    /// `problems` holds exactly one report per needle, in that order (each report contains its
    /// needle).
    #[track_caller]
    fn assert_reports(problems: &[String], needles: &[&str]) {
        let matches = problems.len() == needles.len()
            && problems
                .iter()
                .zip(needles)
                .all(|(problem, needle)| problem.contains(needle));
        assert!(
            matches,
            "expected reports containing:\n  {}\ngot:\n  {}",
            needles.join("\n  "),
            problems.join("\n  ")
        );
    }

    #[test]
    fn detects_forbidden_arrow() {
        let problems = core(&[
            ("library/mod.rs", "mod connection;\n"),
            (
                "library/connection.rs",
                "use std::io;\n\nuse crate::worker::Agent;\n",
            ),
            ("worker/mod.rs", "pub(crate) struct Agent;\n"),
        ]);
        assert_reports(
            &problems,
            &[
                "forbidden arrow library -> worker: dispatch-core/src/library/connection.rs:3 \
               uses crate::worker::Agent (dispatch-core/src/worker/) [never allowed",
            ],
        );
    }

    #[test]
    fn detects_upward_same_rank_never_and_root_arrows() {
        let problems = core(&[
            ("admin/mod.rs", "use crate::master::Master;\n"),
            (
                "master/mod.rs",
                "use crate::admin::Server;\nuse crate::library::X;\n",
            ),
            (
                "process/spawn.rs",
                "fn f() { crate::master::Master::new(); }\n",
            ),
            (
                "worker.rs",
                "use crate::config::SharedConfig;\nuse crate::Agent;\n\
                 fn g() { crate::__private::register(); }\n",
            ),
            ("settings.rs", "use crate::cluster_error::ClusterError;\n"),
            ("wire.rs", "use crate::cluster::Cluster;\n"),
        ]);
        assert_reports(
            &problems,
            &[
                "forbidden arrow admin -> master: dispatch-core/src/admin/mod.rs:1 uses \
                 crate::master::Master (dispatch-core/src/master/) [never allowed",
                "forbidden arrow master -> library: dispatch-core/src/master/mod.rs:2 uses \
                 crate::library::X [both are rank 5",
                "forbidden arrow process -> master: dispatch-core/src/process/spawn.rs:1 uses \
                 crate::master::Master::new (dispatch-core/src/master/) [points up: process is \
                 rank 4, master is rank 5]",
                "forbidden arrow settings -> cluster_error: dispatch-core/src/settings.rs:1",
                "forbidden arrow wire -> cluster: dispatch-core/src/wire.rs:1 uses \
                 crate::cluster::Cluster [never allowed",
                "forbidden arrow worker -> config: dispatch-core/src/worker.rs:1",
                "forbidden arrow worker -> lib: dispatch-core/src/worker.rs:2 uses crate::Agent \
                 (dispatch-core/src/lib.rs) [never allowed",
                "forbidden arrow worker -> private: dispatch-core/src/worker.rs:3 uses \
                 crate::__private::register (dispatch-core/src/private.rs)",
                "cycle between top-level modules: admin -> master -> admin",
            ],
        );
    }

    #[test]
    fn allows_downward_arrows_and_the_root() {
        let problems = core(&[
            (
                "lib.rs",
                "mod cluster;\npub use cluster::Cluster;\nuse crate::worker::Agent;\n",
            ),
            (
                "private.rs",
                "pub use crate::service::Service;\npub use super::Agent;\n",
            ),
            (
                "cluster.rs",
                "use crate::{admin, config, library, master, process, settings, worker};\n",
            ),
            (
                "master/mod.rs",
                "mod stop;\nuse crate::admin::Server;\nuse crate::process::Role;\n",
            ),
            (
                "master/stop.rs",
                "use super::super::wire::Frame;\nuse super::Master;\n",
            ),
            ("worker/mod.rs", "use crate::messenger::Messenger;\n"),
            ("config/mod.rs", "use crate::process::Role;\n"),
            ("admin/mod.rs", "use crate::wire::Frame;\n"),
            ("wire/mod.rs", "use crate::{error::Error, topic::Topic};\n"),
            (
                "service.rs",
                "use crate::error::RemoteError;\nuse crate::settings::Limits;\n",
            ),
            ("metrics.rs", "use crate::cluster_error::ClusterError;\n"),
            ("settings.rs", "pub(crate) struct Limits;\n"),
        ]);
        assert_reports(&problems, &[]);
    }

    #[test]
    fn detects_cycle_even_when_the_table_allows_both_directions() {
        let both_ways = Rules {
            ranks: &[("a", 1), ("b", 1), ("c", 0)],
            same_rank: &[("a", "b"), ("b", "a")],
            never: &[],
        };
        let files = sources(&[
            ("a.rs", "use crate::b::X;\nuse crate::c::Z;\n"),
            ("b/mod.rs", "mod inner;\n"),
            ("b/inner.rs", "\nfn f() -> crate::a::Y { todo!() }\n"),
            ("c.rs", ""),
        ]);
        let problems = check_layers("dispatch-core/src", &files, &both_ways);
        assert_reports(
            &problems,
            &["cycle between top-level modules: a -> b -> a\n    \
               a -> b: dispatch-core/src/a.rs:1 uses crate::b::X\n    \
               b -> a: dispatch-core/src/b/inner.rs:2 uses crate::a::Y"],
        );
    }

    #[test]
    fn reports_a_longer_cycle_with_every_arrow() {
        let both_ways = Rules {
            ranks: &[("a", 1), ("b", 1), ("c", 1)],
            same_rank: &[("a", "b"), ("b", "c"), ("c", "a")],
            never: &[],
        };
        let files = sources(&[
            ("a.rs", "use crate::b::X;\nuse crate::b::W;\n"),
            ("b.rs", "use crate::c::Y;\n"),
            ("c.rs", "use crate::a::Z;\n"),
        ]);
        let problems = check_layers("dispatch-core/src", &files, &both_ways);
        assert_reports(
            &problems,
            &["cycle between top-level modules: a -> b -> c -> a\n    \
               a -> b: dispatch-core/src/a.rs:1 uses crate::b::X (and 1 more)\n    \
               b -> c: dispatch-core/src/b.rs:1 uses crate::c::Y\n    \
               c -> a: dispatch-core/src/c.rs:1 uses crate::a::Z"],
        );
    }

    #[test]
    fn detects_super_super_escape() {
        let problems = core(&[
            ("wire/mod.rs", "mod framing;\nmod codec;\n"),
            // Climbs out of wire into process: forbidden.
            (
                "wire/framing.rs",
                "use super::codec::Codec;\n\nuse super::super::process::Role;\n",
            ),
            // Stays inside wire, or goes down: fine.
            (
                "wire/codec.rs",
                "use super::framing;\nuse self::super::super::error::Error;\n",
            ),
            // Three levels up from a nested file.
            (
                "wire/data/plane.rs",
                "fn f() { super::super::super::process::spawn(); super::super::codec::x(); }\n",
            ),
            // In a top-level file, `super::` is the crate root already.
            ("messenger.rs", "fn g() { super::process::exit(); }\n"),
            // An inline module adds a level.
            (
                "topic.rs",
                "mod events {\n    use super::super::wire::Frame;\n}\nmod x { use super::Topic; }\n",
            ),
            // Visibilities are not imports.
            (
                "error.rs",
                "pub(super) struct E;\npub(in crate::error) struct F;\n",
            ),
        ]);
        assert_reports(
            &problems,
            &[
                "forbidden arrow messenger -> process: dispatch-core/src/messenger.rs:1 uses \
                 super::process::exit",
                "forbidden arrow topic -> wire: dispatch-core/src/topic.rs:2 uses \
                 super::super::wire::Frame",
                "forbidden arrow wire -> process: dispatch-core/src/wire/data/plane.rs:1 uses \
                 super::super::super::process::spawn",
                "forbidden arrow wire -> process: dispatch-core/src/wire/framing.rs:3 uses \
                 super::super::process::Role",
            ],
        );
    }

    #[test]
    fn reads_grouped_use() {
        let problems = core(&[
            (
                "wire/mod.rs",
                "use crate::{\n    error::Error,\n    process::{spawn, Role},\n    \
                 messenger::{self, Messenger},\n};\n",
            ),
            ("worker/mod.rs", "use crate::{library, config::{cell}};\n"),
            (
                "messenger.rs",
                "use crate::{{error::Error}, {process::Role}};\nuse crate::{self as root};\n",
            ),
        ]);
        assert_reports(
            &problems,
            &[
                "forbidden arrow messenger -> process: dispatch-core/src/messenger.rs:1 uses \
                 crate::process::Role",
                "forbidden arrow messenger -> lib: dispatch-core/src/messenger.rs:2 uses \
                 crate::self",
                "forbidden arrow wire -> process: dispatch-core/src/wire/mod.rs:3 uses \
                 crate::process::{…}",
                "forbidden arrow wire -> messenger: dispatch-core/src/wire/mod.rs:4 uses \
                 crate::messenger::{…}",
                "forbidden arrow worker -> config: dispatch-core/src/worker/mod.rs:1 uses \
                 crate::config::{…}",
                "forbidden arrow worker -> library: dispatch-core/src/worker/mod.rs:1 uses \
                 crate::library",
            ],
        );
    }

    #[test]
    fn ignores_comments_strings_and_test_code() {
        let wire = r##"//! Docs: [`crate::process::Role`] and crate::cluster.
// use crate::process::Role;
/* a block crate::process
   /* nested crate::cluster */ still a comment: crate::process */
/// crate::master::Master
const A: &str = "crate::process::Role \" crate::cluster::x";
const B: &str = r#"crate::process "quoted" crate::cluster"#;
const C: &[u8] = b"crate::process";
const D: char = '"';
const E: char = '\'';
fn f<'a>(r#type: &'a str) -> &'a str { r#type } // crate::process
#[cfg(test)]
mod tests {
    use crate::process::Role;
    fn g() { let _ = { crate::cluster::Cluster::new() }; }
}
#[cfg(test)]
#[allow(dead_code)]
pub(crate) async fn helper() { crate::process::spawn(); }
#[cfg(test)]
mod props;
struct S {
    #[cfg(test)]
    probe: crate::process::Probe,
    kept: u8,
}
use crate::messenger::Messenger;
"##;
        let problems = core(&[
            ("wire/mod.rs", wire),
            ("wire/tests.rs", "use crate::process::Role;\n"),
            ("wire/tests/fixture.rs", "use crate::cluster::Cluster;\n"),
            ("wire/props.rs", "use crate::process::Role;\n"),
            ("wire/props/deep.rs", "use crate::process::Role;\n"),
            (
                "process/spawn.rs",
                "#[cfg(test)]\n#[path = \"spawn_tests.rs\"]\nmod tests;\n",
            ),
            ("process/spawn_tests.rs", "use crate::cluster::Cluster;\n"),
            (
                "process/quiet.rs",
                "#![cfg(test)]\nuse crate::cluster::Cluster;\n",
            ),
        ]);
        assert_reports(
            &problems,
            &[
                "forbidden arrow wire -> messenger: dispatch-core/src/wire/mod.rs:27 uses \
               crate::messenger::Messenger",
            ],
        );
    }

    #[test]
    fn reports_unknown_modules() {
        let problems = core(&[
            ("agent.rs", ""),
            ("codec/mod.rs", ""),
            ("lib.rs", "mod agent;\n"),
            ("private.rs", ""),
            ("worker.rs", ""),
        ]);
        assert_reports(
            &problems,
            &[
                "unknown top-level module `agent` (dispatch-core/src/agent.rs): add it to the \
                 rank table",
                "unknown top-level module `codec` (dispatch-core/src/codec/): add it to the rank \
                 table",
            ],
        );
    }

    #[test]
    fn detects_cycle_between_macro_files() {
        let problems = macros(&[
            (
                "lib.rs",
                "mod ast;\nmod attr;\nmod ctxt;\n#[cfg(test)]\nmod tests;\n",
            ),
            ("ast.rs", "use crate::attr::{self, Args};\n"),
            ("attr.rs", "\nfn f() { super::ast::parse(); }\n"),
            ("ctxt.rs", "use crate::ast::Service;\n"),
            ("tests.rs", "use crate::ctxt::Ctxt;\nuse crate::ast::X;\n"),
        ]);
        assert_reports(
            &problems,
            &["cycle between files: ast.rs -> attr.rs -> ast.rs\n    \
               ast.rs -> attr.rs: dispatch-macros/src/ast.rs:1 uses crate::attr::{…}\n    \
               attr.rs -> ast.rs: dispatch-macros/src/attr.rs:2 uses super::ast::parse"],
        );
    }

    #[test]
    fn detects_cycle_through_the_macro_root() {
        let problems = macros(&[
            (
                "lib.rs",
                "mod expand;\npub fn attribute() { expand::run() }\nfn helper() {}\n",
            ),
            ("expand.rs", "pub(crate) fn run() { crate::helper() }\n"),
        ]);
        assert_reports(
            &problems,
            &[
                "cycle between files: expand.rs -> lib.rs -> expand.rs\n    \
               expand.rs -> lib.rs: dispatch-macros/src/expand.rs:1 uses crate::helper\n    \
               lib.rs -> expand.rs: dispatch-macros/src/lib.rs:2 uses expand::run",
            ],
        );
    }

    #[test]
    fn accepts_macro_files_without_cycles() {
        let problems = macros(&[
            (
                "lib.rs",
                "mod ast;\nmod ctxt;\nmod expand;\nfn f() { expand::run() }\n",
            ),
            ("expand.rs", "use crate::{ast::Service, ctxt::Ctxt};\n"),
            ("ast.rs", "use crate::ctxt::Ctxt;\n"),
            ("ctxt.rs", ""),
        ]);
        assert_reports(&problems, &[]);
    }
}
