#[profiled::profiled]
#[test]
fn takes_input(n: u32) {
    let _ = n;
}

fn main() {}
