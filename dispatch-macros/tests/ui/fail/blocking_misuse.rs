use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

#[library_service]
impl Demo {
    #[blocking]
    pub async fn fetch(&self) -> u32 {
        1
    }
    #[blocking]
    fn local(&self) {}
}

fn main() {}
