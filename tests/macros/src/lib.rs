//! `#[backends(sqlite, postgres, mysql)]`: run one test function on each named database
//! backend, with the backends written next to the test.
//!
//! ```text
//! #[tests::backends(sqlite, postgres, mysql)]
//! async fn creates_a_note(backend: Backend) { /* … */ }
//! ```
//!
//! keeps the function and adds, beside it, a module of the same name (a function and a
//! module may share a name) with one `#[actix_web::test]` per backend:
//! `creates_a_note::sqlite`, `creates_a_note::postgres`, `creates_a_note::mysql`, each
//! calling `creates_a_note(Backend::…)`.
//!
//! A server backend whose URL was not set when the tests were built is *ignored* with the
//! reason (`… ignored, TEST_POSTGRES_URL is not set`), never reported as passed: the `tests`
//! package's build script sets `cfg(tests_postgres)` / `cfg(tests_mysql)` when the backend
//! is to be tested (its URL is set, or `TEST_ALL_BACKENDS=1` makes it required).
//! `postgres_replica` is PostgreSQL with a streaming replica: its tests need
//! `TEST_POSTGRES_REPLICA_URL` too (`cfg(tests_postgres_replica)`).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{Ident, ItemFn, Token, parse_macro_input, punctuated::Punctuated};

/// See the crate documentation.
#[proc_macro_attribute]
pub fn backends(attr: TokenStream, item: TokenStream) -> TokenStream {
    let names = parse_macro_input!(attr with Punctuated::<Ident, Token![,]>::parse_terminated);
    let function = parse_macro_input!(item as ItemFn);
    match expand(names, function) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand(names: Punctuated<Ident, Token![,]>, function: ItemFn) -> syn::Result<TokenStream2> {
    let signature = &function.sig;
    if signature.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            signature.fn_token,
            "#[backends] goes on an `async fn name(backend: Backend)`",
        ));
    }
    if signature.inputs.len() != 1 {
        return Err(syn::Error::new_spanned(
            &signature.inputs,
            "#[backends] tests take exactly one argument: the `Backend`",
        ));
    }
    if names.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "name the backends: #[backends(sqlite, postgres, mysql)]",
        ));
    }
    let name = &signature.ident;
    let mut seen: Vec<String> = Vec::new();
    let mut tests = Vec::new();
    for backend in &names {
        let key = backend.to_string();
        if seen.contains(&key) {
            return Err(syn::Error::new_spanned(backend, "backend named twice"));
        }
        seen.push(key.clone());
        let (variant, skip) = match key.as_str() {
            "sqlite" => ("Sqlite", None),
            "postgres" => ("Postgres", Some(("tests_postgres", "TEST_POSTGRES_URL"))),
            "mysql" => ("MySql", Some(("tests_mysql", "TEST_MYSQL_URL"))),
            // PostgreSQL with its streaming replica (`TEST_POSTGRES_REPLICA_URL` as well).
            "postgres_replica" => (
                "Postgres",
                Some(("tests_postgres_replica", "TEST_POSTGRES_REPLICA_URL")),
            ),
            _ => {
                return Err(syn::Error::new_spanned(
                    backend,
                    "unknown backend: expected sqlite, postgres, mysql or postgres_replica",
                ));
            }
        };
        let variant = format_ident!("{variant}");
        let ignore = skip.map(|(cfg, var)| {
            let cfg = Ident::new(cfg, Span::call_site());
            let reason = format!("{var} is not set");
            quote! { #[cfg_attr(not(#cfg), ignore = #reason)] }
        });
        tests.push(quote! {
            #[::actix_web::test]
            #ignore
            async fn #backend() {
                super::#name(::tests::Backend::#variant).await
            }
        });
    }
    Ok(quote! {
        #function

        mod #name {
            #(#tests)*
        }
    })
}
