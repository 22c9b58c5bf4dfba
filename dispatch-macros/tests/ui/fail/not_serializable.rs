use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

pub struct Opaque;

#[library_service]
impl Demo {
    pub fn take(&self, value: Opaque) -> u32 {
        let _ = value;
        1
    }
}

fn main() {}
