use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

#[library_service]
impl Demo {
    pub fn show(&self, value: impl ToString) -> String {
        value.to_string()
    }
    pub fn numbers(&self) -> impl Iterator<Item = u32> {
        0..3
    }
}

fn main() {}
