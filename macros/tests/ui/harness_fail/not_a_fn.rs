#[profiled::test]
struct NotATest;

fn main() {}
