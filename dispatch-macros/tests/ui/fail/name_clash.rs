use dispatch::prelude::*;

#[derive(Default)]
pub struct Demo;

#[library_service]
impl Demo {
    pub fn with_timeout(&self, millis: u64) -> u64 {
        millis
    }
    pub fn service_name(&self) -> String {
        "demo".into()
    }
}

fn main() {}
