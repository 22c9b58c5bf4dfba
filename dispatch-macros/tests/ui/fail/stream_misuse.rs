use dispatch::prelude::*;
use dispatch::Feed;

#[derive(Default)]
pub struct Demo;

#[library_service]
impl Demo {
    #[subscription(buffer = 0, policy = newest, colour = 3)]
    pub fn watch(&self, key: String) -> Feed<String> {
        Feed::new(futures::stream::iter([key]))
    }

    #[subscription]
    pub fn not_a_stream(&self) -> u64 {
        1
    }

    pub fn raw(&self) -> impl futures::Stream<Item = u64> {
        futures::stream::empty()
    }

    #[blocking]
    pub fn blocked(&self) -> Feed<u64> {
        Feed::empty()
    }

    #[stream]
    #[subscription]
    pub fn twice(&self) -> Feed<u64> {
        Feed::empty()
    }

    #[stream(buffer = 8)]
    fn local(&self) -> Feed<u64> {
        Feed::empty()
    }
}

fn main() {}
