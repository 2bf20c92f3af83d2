//! Arguments of `#[profiled(...)]`, with spanned errors.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;

/// Parsed arguments. Each value keeps its span for later errors.
pub(crate) struct Args {
    /// `crate = "path"`: where the `profiled` crate is, for renamed dependencies.
    pub krate: Option<(syn::Path, Span)>,
}

const VALID: &str = "`crate = \"path::to::profiled\"`";

pub(crate) fn parse(args: TokenStream) -> syn::Result<Args> {
    let mut out = Args { krate: None };
    let parser = syn::meta::parser(|meta| {
        let ident = meta
            .path
            .get_ident()
            .map(|i| i.to_string().trim_start_matches("r#").to_string());
        match ident.as_deref() {
            Some("crate") => {
                if out.krate.is_some() {
                    return Err(meta.error("`crate` set multiple times"));
                }
                let lit: syn::LitStr = meta.value()?.parse()?;
                let path: syn::Path = lit.parse()?;
                out.krate = Some((path, lit.span()));
                Ok(())
            }
            _ => {
                let name = quote::ToTokens::to_token_stream(&meta.path)
                    .to_string()
                    .replace(' ', "");
                Err(meta.error(format!(
                    "unknown argument `{name}`; the valid argument is {VALID}"
                )))
            }
        }
    });
    parser.parse2(args)?;
    Ok(out)
}
