use dispatch::prelude::*;

pub struct Demo;

fn make() -> Demo {
    Demo
}

#[library_service(init = make)]
impl Demo {
    pub fn ping(&self) {}
}

fn main() {}
