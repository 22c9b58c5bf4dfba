use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

pub struct Opaque;

#[library_service]
impl Demo {
    pub async fn make(&self) -> Opaque {
        Opaque
    }

    #[blocking]
    pub fn parse(&self, text: String) -> Result<u32, Opaque> {
        text.parse().map_err(|_| Opaque)
    }
}

fn main() {}
