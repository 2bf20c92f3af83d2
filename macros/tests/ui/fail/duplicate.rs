#[profiled::profiled]
#[profiled::profiled]
#[test]
fn twice() {}

fn main() {}
