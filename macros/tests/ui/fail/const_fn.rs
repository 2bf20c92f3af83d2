#[profiled::profiled]
#[test]
const fn at_compile_time() {}

fn main() {}
