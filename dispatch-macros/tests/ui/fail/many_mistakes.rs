use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

#[library_service]
impl Demo {
    pub fn bump(&mut self) {}
    pub fn greet(&self, name: &str) -> String {
        format!("hello {name}")
    }
    pub fn echo<T>(&self, value: T) -> T {
        value
    }
}

fn main() {}
