use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

#[library_service]
impl Demo {
    pub fn bump(&mut self) {}
    pub fn consume(self) {}
}

fn main() {}
