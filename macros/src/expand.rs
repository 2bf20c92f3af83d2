//! Code generation: the guard for sync fns; for async fns, stepping below the async test
//! attribute so that the guard wraps the runtime that attribute builds.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::spanned::Spanned;

use crate::args;

/// The arguments and the fn both attributes take; `Err` is the item with a spanned error.
fn parse(
    args: TokenStream,
    item: &TokenStream,
    attr: &str,
    not_a_fn: &str,
) -> Result<(args::Args, syn::ItemFn, TokenStream), TokenStream> {
    let args = args::parse(args).map_err(|e| with_error(item.clone(), e))?;
    let func: syn::ItemFn = syn::parse2(item.clone())
        .map_err(|_| with_error(item.clone(), syn::Error::new_spanned(item, not_a_fn)))?;
    if !func.sig.inputs.is_empty() {
        let message = format!("{attr} functions take no parameters");
        return Err(with_error(
            item.clone(),
            syn::Error::new_spanned(&func.sig.inputs, message),
        ));
    }
    if let Some(constness) = &func.sig.constness {
        let message = format!("{attr} functions cannot be `const`: a test runs at run time");
        return Err(with_error(
            item.clone(),
            syn::Error::new_spanned(constness, message),
        ));
    }
    if let Some(again) = func
        .attrs
        .iter()
        .find(|a| is_named(a, "profiled") || is_harness_test(a))
    {
        return Err(with_error(
            item.clone(),
            syn::Error::new_spanned(
                again,
                "profiled's attribute is applied twice to this function",
            ),
        ));
    }
    let krate = args
        .krate
        .as_ref()
        .map(|(p, _)| p.to_token_stream())
        .unwrap_or_else(|| quote!(::profiled));
    Ok((args, func, krate))
}

pub(crate) fn profiled(args: TokenStream, item: TokenStream) -> TokenStream {
    let not_a_fn =
        "#[profiled] goes on a test function, e.g. `#[profiled] #[test] fn name() { .. }`";
    let (args, mut func, krate) = match parse(args, &item, "#[profiled] test", not_a_fn) {
        Ok(parsed) => parsed,
        Err(tokens) => return tokens,
    };

    if func.sig.asyncness.is_some() {
        // The async test attribute (`#[tokio::test]`, ...) turns this into a sync fn that
        // builds a runtime. Move ourselves below it so that we wrap that fn: the profile then
        // starts before the runtime's worker threads exist, and follows them.
        let runner = func.attrs.iter().position(is_test_attr);
        let Some(runner) = runner else {
            let e = syn::Error::new_spanned(
                func.sig.asyncness,
                "#[profiled] on an async fn needs an async test attribute next to it, \
                 such as #[tokio::test]",
            );
            return with_error(item, e);
        };
        let runner_attr = func.attrs.remove(runner);
        let krate_arg = args.krate.as_ref().map(|(p, span)| {
            let lit = syn::LitStr::new(&p.to_token_stream().to_string().replace(' ', ""), *span);
            quote!(crate = #lit)
        });
        return quote! {
            #runner_attr
            #[#krate::profiled(#krate_arg)]
            #func
        };
    }

    let name = func.sig.ident.to_string();
    let span = func.sig.ident.span();
    let guard: syn::Stmt = syn::parse_quote_spanned! {span=>
        let __profiled_guard = #krate::__private::TestGuard::enter(
            ::core::option_env!("CARGO_PKG_NAME"),
            ::core::module_path!(),
            #name,
        );
    };
    // The guard goes in as the body's first statement, not around it: wrapping a body such as
    // `{ Ok(()) }` in a new block would make rustc see `{ { Ok(()) } }` and warn about
    // unnecessary braces (with a fix that breaks the code).
    func.block.stmts.insert(0, guard);
    func.into_token_stream()
}

/// `#[test]`, `#[tokio::test]`, `#[core::prelude::v1::test]`...: any attribute whose last
/// path segment is `test`.
fn is_test_attr(attr: &syn::Attribute) -> bool {
    is_named(attr, "test")
}

/// An attribute whose path ends in `name`.
fn is_named(attr: &syn::Attribute, name: &str) -> bool {
    attr.path().segments.last().is_some_and(|s| s.ident == name)
}

/// `#[profiled::test]` (spelt with the crate's name, so `#[tokio::test]` is not taken for it).
fn is_harness_test(attr: &syn::Attribute) -> bool {
    let segments: Vec<String> = attr
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    segments.len() >= 2
        && segments[segments.len() - 2] == "profiled"
        && segments[segments.len() - 1] == "test"
}

/// The error, plus the item unchanged, so the rest of the crate still type-checks and IDE
/// completion keeps working.
fn with_error(item: TokenStream, e: syn::Error) -> TokenStream {
    let mut out = item;
    out.extend(e.into_compile_error());
    let _ = out.span();
    out
}

/// `#[profiled::test]`: keeps the fn and registers it with profiled's harness.
pub(crate) fn harness_test(args: TokenStream, item: TokenStream) -> TokenStream {
    let not_a_fn = "#[profiled::test] goes on a function";
    let (_, mut func, krate) = match parse(args, &item, "#[profiled::test]", not_a_fn) {
        Ok(parsed) => parsed,
        Err(tokens) => return tokens,
    };
    if let Some(a) = func.sig.asyncness {
        let e = syn::Error::new_spanned(
            a,
            "#[profiled::test] runs sync fns; build a runtime in the test, or use #[profiled] with #[tokio::test]",
        );
        return with_error(item, e);
    }
    if let Some(attr) = func.attrs.iter().find(|a| is_test_attr(a)) {
        let e = syn::Error::new_spanned(
            attr,
            "#[profiled::test] registers the test itself; remove this test attribute",
        );
        return with_error(item, e);
    }

    // `#[ignore]` and `#[should_panic]` only mean something on `#[test]` fns: take them off
    // and hand them to the harness.
    let mut ignored = false;
    let mut should_panic: Option<String> = None;
    let mut errors = Vec::new();
    func.attrs.retain(|attr| {
        if attr.path().is_ident("ignore") {
            ignored = true;
            false
        } else if attr.path().is_ident("should_panic") {
            should_panic = Some(String::new());
            match &attr.meta {
                syn::Meta::List(_) => {
                    let r = attr.parse_nested_meta(|meta| {
                        if meta.path.is_ident("expected") {
                            let lit: syn::LitStr = meta.value()?.parse()?;
                            should_panic = Some(lit.value());
                            Ok(())
                        } else {
                            Err(meta.error(
                                "expected `expected = \"...\"`, as in \
                                 #[should_panic(expected = \"...\")]",
                            ))
                        }
                    });
                    if let Err(e) = r {
                        errors.push(e);
                    }
                }
                // `#[should_panic = "text"]`, libtest's short form.
                syn::Meta::NameValue(nv) => match &nv.value {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(lit),
                        ..
                    }) => should_panic = Some(lit.value()),
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "expected a string, as in #[should_panic = \"...\"]",
                    )),
                },
                syn::Meta::Path(_) => {}
            }
            false
        } else {
            true
        }
    });
    if let Some(e) = errors.pop() {
        // The fn without the attributes taken off, so rustc does not report them again.
        return with_error(func.into_token_stream(), e);
    }
    let ident = &func.sig.ident;
    let name = ident.to_string();
    let should_panic = match should_panic {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #func

        const _: () = {
            #krate::__private::inventory::submit! {
                #krate::__private::harness::Test {
                    module: ::core::module_path!(),
                    name: #name,
                    run: || #krate::__private::harness::outcome(#ident()),
                    ignored: #ignored,
                    should_panic: #should_panic,
                }
            }
        };
    }
}
