#[profiled::test]
#[test]
fn registered_twice() {}

fn main() {}
