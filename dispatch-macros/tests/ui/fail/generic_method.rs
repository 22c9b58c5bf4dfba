use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

#[library_service]
impl Demo {
    pub fn echo<T: Clone>(&self, value: T) -> T {
        value
    }
    pub fn first<'a>(&self, items: Vec<String>) -> Option<String> {
        items.into_iter().next()
    }
}

fn main() {}
