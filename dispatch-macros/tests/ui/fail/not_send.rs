use dispatch::prelude::*;
use std::rc::Rc;

#[derive(Default)]
pub struct Demo;

#[library_service]
impl Demo {
    pub async fn count(&self) -> usize {
        let shared = Rc::new(1);
        std::future::ready(()).await;
        *shared
    }
}

fn main() {}
