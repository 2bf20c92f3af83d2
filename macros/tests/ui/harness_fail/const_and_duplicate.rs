#[profiled::test]
const fn at_compile_time() {}

#[profiled::test]
#[profiled::test]
fn twice() {}

fn main() {}
