use dispatch::prelude::*;

pub struct Demo {
    pub limit: u32,
}

#[library_service]
impl Demo {
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

fn main() {}
