use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

#[library_service(close = shutdown)]
impl Demo {
    pub fn ping(&self) {}
}

#[derive(Default)]
pub struct Other;

#[library_service(close = stop)]
impl Other {
    pub fn stop(&self, force: bool) -> bool {
        force
    }
}

fn main() {}
