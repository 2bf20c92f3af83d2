//! Compile-time behaviour of `#[profiled]` and `#[profiled::test]`: the error for each
//! misuse. Regenerate the expected messages with `TRYBUILD=overwrite cargo test --test ui`.
//! What they accept is compiled as real tests by tests/robustness.rs (the fixture workspace
//! tests/fixtures/members), since trybuild's pass cases build as binaries, where `#[test]`
//! removes the function before the expansion is type-checked.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
    t.compile_fail("tests/ui/harness_fail/*.rs");
}
