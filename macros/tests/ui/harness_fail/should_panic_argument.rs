#[profiled::test]
#[should_panic(because = "no")]
fn wrong_argument() {}

fn main() {}
