//! The generated code names everything by absolute path, so it compiles in a module without the
//! prelude (tarpc's `tests/proc_macro_hygene.rs`).

#![no_implicit_prelude]
#![allow(dead_code)]

/// A service declared without the prelude.
pub mod services {
    #![no_implicit_prelude]

    use ::dispatch::library_service;

    /// The service.
    #[derive(::core::fmt::Debug, ::core::default::Default)]
    pub struct Hygienic;

    #[library_service(close = stop)]
    impl Hygienic {
        /// A remote method.
        pub async fn echo(&self, text: ::std::string::String) -> ::std::string::String {
            text
        }
        /// A remote method.
        pub fn add(&self, a: i64, b: i64) -> i64 {
            a + b
        }
        #[blocking]
        /// A remote method.
        pub fn len(&self, data: ::std::vec::Vec<u8>) -> usize {
            data.len()
        }
        /// A remote method.
        pub async fn check(&self, n: u32) -> ::core::result::Result<u32, ::std::string::String> {
            ::core::result::Result::Ok(n)
        }
        /// A remote method.
        pub async fn nothing(&self) {}
        /// A remote method.
        pub fn same(&self, other: ::std::vec::Vec<Self>) -> ::core::option::Option<Self> {
            let _ = other;
            ::core::option::Option::None
        }
        fn stop(&self) {}
    }

    impl ::dispatch::__private::serde::Serialize for Hygienic {
        fn serialize<S: ::dispatch::__private::serde::Serializer>(
            &self,
            s: S,
        ) -> ::core::result::Result<S::Ok, S::Error> {
            s.serialize_unit()
        }
    }

    impl<'de> ::dispatch::__private::serde::Deserialize<'de> for Hygienic {
        fn deserialize<D: ::dispatch::__private::serde::Deserializer<'de>>(
            d: D,
        ) -> ::core::result::Result<Self, D::Error> {
            <() as ::dispatch::__private::serde::Deserialize>::deserialize(d).map(|()| Hygienic)
        }
    }
}

#[test]
fn generated_items_are_reachable() {
    use services::{HygienicAgentExt, HygienicClient};
    fn accessor(agent: &::dispatch::Agent) -> HygienicClient<'_> {
        agent.hygienic()
    }
    let _ = accessor;
}
