//! `slugify`: a title as a URL slug. Lower case; ASCII letters and digits
//! kept; every run of anything else (spaces, punctuation, non-ASCII) one
//! separator; no separator at either end. "Hello, World!" is
//! `hello-world`, or `hello_world` when built with the `v2` feature.

use extism_pdk::{FnResult, plugin_fn};

const SEPARATOR: char = if cfg!(feature = "v2") { '_' } else { '-' };

#[plugin_fn]
pub fn slugify(input: String) -> FnResult<String> {
    Ok(slug(&input))
}

fn slug(text: &str) -> String {
    let mut slug = String::with_capacity(text.len());
    let mut pending = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if pending && !slug.is_empty() {
                slug.push(SEPARATOR);
            }
            pending = false;
            slug.push(c.to_ascii_lowercase());
        } else {
            pending = true;
        }
    }
    slug
}
