//! The manifest: which services and methods a Library hosts, with a fingerprint of their
//! signatures. An Agent compares it with the services it was built with, so a mismatch fails at
//! start with a message naming the method instead of later with a decode error.

use super::registration::{registered, ServiceRegistration};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The services of a Library (or of the stubs a worker was built with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Services, sorted by name.
    pub services: Vec<ServiceManifest>,
}

/// One service of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceManifest {
    /// The service's wire name.
    pub name: String,
    /// Its methods: name and normalised signature, sorted by name.
    pub methods: Vec<(String, String)>,
}

impl Manifest {
    /// The manifest of the services linked into this binary.
    pub(crate) fn local() -> Self {
        Self::from_registrations(&registered())
    }

    pub(crate) fn from_registrations(regs: &[&ServiceRegistration]) -> Self {
        let mut services: Vec<ServiceManifest> = regs
            .iter()
            .map(|r| {
                let mut methods: Vec<(String, String)> = r
                    .methods
                    .iter()
                    .map(|m| (m.name.to_owned(), m.signature.to_owned()))
                    .collect();
                methods.sort();
                ServiceManifest {
                    name: r.name.to_owned(),
                    methods,
                }
            })
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Manifest { services }
    }

    /// A 64-bit FNV-1a fingerprint over every service, method and signature.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |s: &str| {
            for b in s.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for s in &self.services {
            eat(&s.name);
            for (m, sig) in &s.methods {
                eat(m);
                eat(sig);
            }
        }
        h
    }

    /// Checks that the Library's manifest (`self`) serves every method of `expected` (the
    /// worker's) with the same signature. The Library may host more than the worker knows.
    pub fn check_serves(&self, expected: &Manifest) -> Result<(), ManifestMismatch> {
        let mut problems = Vec::new();
        for want in &expected.services {
            let Some(have) = self.services.iter().find(|s| s.name == want.name) else {
                problems.push(format!(
                    "service `{}` is missing from the library",
                    want.name
                ));
                continue;
            };
            for (name, sig) in &want.methods {
                match have.methods.iter().find(|(n, _)| n == name) {
                    None => problems.push(format!(
                        "method `{}.{name}` is missing from the library",
                        want.name
                    )),
                    Some((_, lib_sig)) if lib_sig != sig => problems.push(format!(
                        "method `{}.{name}` differs: the worker has `{sig}`, the library has `{lib_sig}`",
                        want.name
                    )),
                    Some(_) => {}
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ManifestMismatch { problems })
        }
    }

    /// `service (n methods)` for each service, for logs.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .services
            .iter()
            .map(|s| format!("{} ({} methods)", s.name, s.methods.len()))
            .collect();
        if parts.is_empty() {
            "no services".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// The worker's services do not match the Library's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestMismatch {
    /// One line per differing service or method.
    pub problems: Vec<String>,
}

impl fmt::Display for ManifestMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the worker's services do not match the library's (were they built from different sources?): {}",
            self.problems.join("; ")
        )
    }
}

impl std::error::Error for ManifestMismatch {}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(methods: &[(&str, &str)]) -> Manifest {
        Manifest {
            services: vec![ServiceManifest {
                name: "demo".into(),
                methods: methods
                    .iter()
                    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                    .collect(),
            }],
        }
    }

    #[test]
    fn same_manifest_matches() {
        let m = manifest(&[("add", "fn add(a: i64) -> i64")]);
        assert_eq!(m.check_serves(&m), Ok(()));
        assert_eq!(m.fingerprint(), m.clone().fingerprint());
    }

    #[test]
    fn mismatch_names_the_method() {
        let lib = manifest(&[("add", "fn add(a: i64) -> i64")]);
        let worker = manifest(&[("add", "fn add(a: i32) -> i32"), ("sub", "fn sub()")]);
        let err = lib.check_serves(&worker).expect_err("must differ");
        let text = err.to_string();
        assert!(text.contains("`demo.add` differs"), "{text}");
        assert!(text.contains("`demo.sub` is missing"), "{text}");
        assert_ne!(lib.fingerprint(), worker.fingerprint());
    }

    #[test]
    fn missing_service_is_named() {
        let lib = Manifest { services: vec![] };
        let err = lib.check_serves(&manifest(&[])).expect_err("missing");
        assert!(err.to_string().contains("service `demo` is missing"));
    }
}
