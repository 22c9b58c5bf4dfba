//! Edge cases that must compile: `crate = …` for a re-exported facade, a service on one instance
//! of a generic type, a service with no remote method, a method compiled out by `#[cfg]`.

mod facade {
    pub use dispatch::*;
}

use facade::library_service;
use std::marker::PhantomData;

#[derive(Default)]
pub struct Typed<T>(PhantomData<T>);

#[library_service(crate = crate::facade, name = "typed_u32")]
impl Typed<u32> {
    pub fn size(&self) -> usize {
        std::mem::size_of::<u32>()
    }
    pub fn echo(&self, value: Self) -> Self {
        value
    }
}

impl serde::Serialize for Typed<u32> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for Typed<u32> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Typed(PhantomData))
    }
}

#[derive(Default)]
pub struct Quiet;

#[library_service]
impl Quiet {
    fn local(&self) {}
}

#[allow(dead_code)]
async fn worker(agent: &dispatch::Agent) -> Result<(), dispatch::Error> {
    let size: usize = agent.typed_u32().size().await?;
    let _: Typed<u32> = agent.typed_u32().echo(Typed(PhantomData)).await?;
    let _: QuietClient<'_> = agent.quiet();
    let _ = size;
    Ok(())
}

fn main() {
    Quiet.local();
}

/// A method compiled out by `#[cfg]` is compiled out of everything generated for it.
#[derive(Default)]
pub struct Gated;

#[library_service]
impl Gated {
    #[cfg(any())]
    pub fn hidden(&self, never: NotAType) -> AlsoNotAType {
        never
    }
    pub fn shown(&self) {}
}
