#[profiled::profiled]
async fn no_runtime_attribute() {}

fn main() {}
