use dispatch::prelude::*;
use dispatch::Feed;

#[derive(Default)]
pub struct Demo;

pub struct Opaque;

#[library_service]
impl Demo {
    #[subscription(policy = keep_latest)]
    pub fn watch(&self, key: String) -> Feed<Opaque> {
        drop(key);
        Feed::empty()
    }
}

fn main() {}
