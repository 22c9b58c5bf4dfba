use dispatch::prelude::*;
use std::path::Path;

#[derive(Default)]
pub struct Demo {
    name: String,
}

#[library_service]
impl Demo {
    pub fn greet(&self, name: &str) -> String {
        format!("hello {name}")
    }
    pub fn sum(&self, values: &[i64]) -> i64 {
        values.iter().sum()
    }
    pub fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    pub fn double(&self, n: &u64) -> u64 {
        n * 2
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn main() {}
