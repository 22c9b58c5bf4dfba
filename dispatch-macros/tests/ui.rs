//! Compile-time behaviour of `#[library_service]`: what compiles, and the errors that teach.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
