//! The methods of the runtime's `Agent` that a service's accessor must not be named after, kept
//! equal to dispatch-core by a test. A leaf: a list of names, read by `valid`.
//!
//! `Agent::get().demo()` is a method of the generated extension trait `DemoAgentExt`, and an
//! inherent method of the same name would win over it. Only a `pub` method taking `self` can:
//! an associated function (`Agent::get`) is no method candidate, and rustc passes over a method
//! the user's crate cannot reach (`pub(crate)`).
//! A proc-macro sees only the tokens it is given, not `Agent`, so the names are copied here once
//! (a list exported by dispatch-core would be as hand-kept, and cost this crate a dependency on
//! the runtime); the test below reads dispatch-core's sources and fails, naming the difference,
//! when `Agent` gains, loses or renames one.

/// `Agent`'s own methods: `Agent::get().{name}()` would call them, not the service's accessor.
/// Kept equal to the `pub fn`s taking `self` of every `impl Agent` in dispatch-core by the test
/// below; the generated check that `agent.demo()` returns a `DemoClient` is the second net.
pub(crate) const AGENT_METHODS: [&str; 8] = [
    "call_counts",
    "service",
    "worker_id",
    "default_timeout",
    "set_default_timeout",
    "payload_limit",
    "manifest",
    "is_connected",
];

#[cfg(test)]
mod tests {
    use super::AGENT_METHODS;
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::{Path, PathBuf};
    use syn::visit::{self, Visit};
    use syn::{Attribute, ImplItem, ItemImpl, ItemMod, Type, TypePath, Visibility};

    /// The guard: `AGENT_METHODS` names exactly the methods found in dispatch-core, wherever under
    /// `dispatch-core/src` the `impl Agent` blocks are.
    #[test]
    fn agent_methods_match_dispatch_core() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dispatch-core/src");
        let mut found = BTreeMap::new();
        let mut blocks = 0;
        for file in rust_files(&src) {
            let text = fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let ast = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("cannot parse {}: {e}", file.display()));
            let mut finder = AgentImpls {
                blocks: 0,
                methods: Vec::new(),
            };
            finder.visit_file(&ast);
            blocks += finder.blocks;
            let shown = file
                .strip_prefix(&src)
                .unwrap_or(&file)
                .display()
                .to_string();
            for method in finder.methods {
                found.insert(method, shown.clone());
            }
        }
        assert!(
            blocks > 0,
            "found no `impl Agent` block under {}: if `Agent` was renamed or moved out of \
             dispatch-core, update this test and AGENT_METHODS",
            src.display()
        );
        let missing: Vec<String> = found
            .iter()
            .filter(|(name, _)| !AGENT_METHODS.contains(&name.as_str()))
            .map(|(name, file)| format!("`{name}` (dispatch-core/src/{file})"))
            .collect();
        let extra: Vec<String> = AGENT_METHODS
            .into_iter()
            .filter(|name| !found.contains_key(*name))
            .map(|name| format!("`{name}`"))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "AGENT_METHODS in dispatch-macros/src/agent_methods.rs is not the list of `pub fn`s \
             taking `self` in `impl Agent` under dispatch-core/src.\n  missing from it: {}\n  \
             in it but not on `Agent`: {}",
            list(&missing),
            list(&extra),
        );
    }

    fn list(names: &[String]) -> String {
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }

    /// Every `.rs` file under `dir`, at any depth.
    fn rust_files(dir: &Path) -> Vec<PathBuf> {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }

    /// The `impl Agent { … }` blocks of a file (not trait impls, not `#[cfg(test)]` code) and
    /// their `pub fn`s taking `self`.
    struct AgentImpls {
        blocks: usize,
        methods: Vec<String>,
    }

    impl<'ast> Visit<'ast> for AgentImpls {
        fn visit_item_impl(&mut self, imp: &'ast ItemImpl) {
            let is_agent = matches!(
                &*imp.self_ty,
                Type::Path(TypePath { qself: None, path })
                    if path.segments.last().is_some_and(|s| s.ident == "Agent")
            );
            if is_agent && imp.trait_.is_none() && !is_test_only(&imp.attrs) {
                self.blocks += 1;
                for item in &imp.items {
                    if let ImplItem::Fn(f) = item {
                        if matches!(f.vis, Visibility::Public(_))
                            && f.sig.receiver().is_some()
                            && !is_test_only(&f.attrs)
                        {
                            self.methods.push(f.sig.ident.to_string());
                        }
                    }
                }
            }
            visit::visit_item_impl(self, imp);
        }

        fn visit_item_mod(&mut self, module: &'ast ItemMod) {
            if !is_test_only(&module.attrs) {
                visit::visit_item_mod(self, module);
            }
        }
    }

    /// Whether `attrs` has `#[cfg(test)]`: such code is not part of the `Agent` users see.
    fn is_test_only(attrs: &[Attribute]) -> bool {
        attrs.iter().any(|a| {
            a.path().is_ident("cfg")
                && a.parse_args::<syn::Ident>()
                    .is_ok_and(|ident| ident == "test")
        })
    }
}
