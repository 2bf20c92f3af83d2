//! The `#[profiled]` attribute. Thin on purpose: it puts one call into the `profiled` runtime
//! at the top of the test body, where all the logic lives and is tested.
//! Use it through the `profiled` crate, which re-exports it and documents it.

use proc_macro::TokenStream;

mod args;
mod expand;

/// See `profiled::profiled`.
#[proc_macro_attribute]
pub fn profiled(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::profiled(args.into(), item.into()).into()
}

/// See `profiled::test`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::harness_test(args.into(), item.into()).into()
}
