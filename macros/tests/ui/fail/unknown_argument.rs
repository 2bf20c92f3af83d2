#[profiled::profiled(freq = 100)]
#[test]
fn t() {}

#[profiled::profiled(crate = "profiled", crate = "profiled")]
#[test]
fn twice() {}

fn main() {}
