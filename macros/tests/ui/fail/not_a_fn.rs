#[profiled::profiled]
struct NotATest;

fn main() {}
