use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

#[library_service]
impl std::fmt::Display for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("demo")
    }
}

#[library_service]
pub struct Other;

#[library_service]
pub fn free() {}

pub struct Wrapper<T>(T);

#[library_service]
impl<T: Send + Sync + 'static> Wrapper<T> {
    pub fn get(&self) -> u32 {
        1
    }
}

fn main() {}
