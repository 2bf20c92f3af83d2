// Every supported placement compiles, and none adds a second test attribute (a duplicate
// `#[test]` would be a compile error: "the `#[test]` attribute may only be used on a
// non-associated function" / duplicated test names).
use profiled::profiled;

#[profiled]
#[test]
fn above_test() {}

#[test]
#[profiled]
fn below_test() {}

#[profiled::profiled]
#[test]
#[should_panic]
fn with_should_panic() {
    panic!("x")
}

#[profiled]
#[test]
#[ignore]
fn ignored() {}

#[profiled]
#[test]
fn returns_result() -> Result<(), std::io::Error> {
    profiled::reset();
    let _p = profiled::pause();
    profiled::unprofiled(|| Ok(()))
}

#[profiled]
#[tokio::test]
async fn async_above() {}

#[tokio::test(flavor = "multi_thread")]
#[profiled]
async fn async_below() {}

#[profiled(crate = "profiled")]
#[test]
fn explicit_crate() {}

fn main() {}
