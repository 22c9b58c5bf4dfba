use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

#[library_service(name = "Not-Snake", timeout = 5)]
impl Demo {
    pub fn ping(&self) {}
}

#[derive(Default)]
pub struct Other;

#[library_service(name = other, close = "stop", name = "again", crate = dispatch)]
impl Other {
    pub fn ping(&self) {}
}

fn main() {}
