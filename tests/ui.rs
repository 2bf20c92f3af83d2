//! Compile-time behaviour of `#[profiled]`: what it accepts, and the error for each misuse.
//! Regenerate the expected messages with `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
