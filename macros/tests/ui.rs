//! Compile-time behaviour of `#[profiled]` and `#[profiled::test]`: the error for each
//! misuse. Regenerate the expected messages with `TRYBUILD=overwrite cargo test --test ui`.
//! What they accept (every placement and body shape) is compiled and run as real tests by
//! tests/robustness.rs in the fixture workspace tests/fixtures/members: trybuild's pass
//! cases build as binaries, where `#[test]` removes the function before the expansion is
//! type-checked, and would cost a second, full build of the runtime.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.compile_fail("tests/ui/harness_fail/*.rs");
}
