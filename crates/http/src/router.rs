//! Picks what answers a path: of the routes that match it, the most
//! specific ([`RoutePattern::specificity`]): an exact route, then one with
//! `:name` segments, then the longest `/...` prefix.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use tern_manifest::RoutePattern;

use crate::static_response::StaticReply;

/// The app's routes, most specific first.
pub(crate) struct Router {
    routes: Vec<Entry>,
}

/// What a route leads to.
#[derive(Debug)]
pub(crate) enum Target {
    /// The component at this index of the app's.
    Component(usize),
    /// The component at this index, through filters.
    Filtered(usize, crate::proxy::FilterChain),
    /// A response written in the manifest, sent without running a guest.
    Static(StaticReply),
    /// Forwarded to an upstream through filters.
    Upstream(crate::proxy::ProxyRoute),
}

struct Entry {
    pattern: RoutePattern,
    /// The pattern as written.
    label: String,
    /// The same as a header value for guests, made once rather than per
    /// request; `None` when the pattern is not visible ASCII.
    header: Option<HeaderValue>,
    target: Target,
    /// The route's `:name` segments; `None` when it has none.
    params: Option<Arc<[PathParam]>>,
}

/// A `:name` segment of a route, with the names a guest reads its value
/// under, made once.
#[derive(Debug)]
pub(crate) struct PathParam {
    /// Which of the path's segments holds the value; 0 is the one after
    /// the leading `/`.
    segment: usize,
    /// `spin-path-match-NAME`, the header a wasi-http guest reads.
    pub(crate) header: HeaderName,
    /// `X_PATH_MATCH_NAME`, the variable a WAGI program reads.
    pub(crate) variable: String,
}

impl PathParam {
    /// Named as Spin names them: the header lowercase with `-` for `_`,
    /// the variable uppercase. The manifest allows only names that make a
    /// header name.
    fn new(segment: usize, name: &str) -> Option<Self> {
        let header = format!(
            "spin-path-match-{}",
            name.to_ascii_lowercase().replace('_', "-")
        );
        Some(PathParam {
            segment,
            header: HeaderName::from_bytes(header.as_bytes()).ok()?,
            variable: format!("X_PATH_MATCH_{}", name.to_ascii_uppercase()),
        })
    }

    /// The segment's value in `path`, a path its route matched: never
    /// empty there.
    pub(crate) fn value<'a>(&self, path: &'a str) -> &'a str {
        path.split('/').nth(self.segment + 1).unwrap_or("")
    }
}

/// A matched route.
#[derive(Debug)]
pub(crate) struct Match<'a> {
    /// What answers.
    pub(crate) target: &'a Target,
    /// The route as written in the manifest, as a header value.
    pub(crate) header: Option<&'a HeaderValue>,
    /// Where the rest of the path (CGI's `PATH_INFO`) starts; before it is
    /// the route's fixed part (`SCRIPT_NAME`).
    pub(crate) split: usize,
    /// The route's `:name` segments, whose values are in the path.
    pub(crate) params: Option<&'a Arc<[PathParam]>>,
}

impl<'a> Match<'a> {
    /// `target` as the route `/...` would match it: the whole path is the
    /// rest, and there is no route to name.
    pub(crate) fn whole_path(target: &'a Target) -> Self {
        Match {
            target,
            header: None,
            split: 0,
            params: None,
        }
    }
}

impl Router {
    pub(crate) fn new(routes: impl IntoIterator<Item = (RoutePattern, Target)>) -> Self {
        let mut routes: Vec<Entry> = routes
            .into_iter()
            .map(|(pattern, target)| {
                let label = pattern.to_string();
                let params: Option<Arc<[PathParam]>> = match &pattern {
                    RoutePattern::Template(template) => Some(
                        template
                            .params()
                            .filter_map(|(segment, name)| PathParam::new(segment, name))
                            .collect(),
                    ),
                    RoutePattern::Exact(_) | RoutePattern::Prefix(_) => None,
                };
                Entry {
                    header: HeaderValue::from_str(&label).ok(),
                    label,
                    pattern,
                    target,
                    params,
                }
            })
            .collect();
        // Stable: routes of equal rank (which never match the same path)
        // keep the manifest's order.
        routes.sort_by_cached_key(|e| std::cmp::Reverse(e.pattern.specificity()));
        Router { routes }
    }

    pub(crate) fn route<'a>(&'a self, path: &str) -> Option<Match<'a>> {
        self.routes.iter().find_map(|entry| {
            let path_info = entry.pattern.matches(path)?;
            Some(Match {
                target: &entry.target,
                header: entry.header.as_ref(),
                split: path.len() - path_info.len(),
                params: entry.params.as_ref(),
            })
        })
    }

    /// The routes in matching order, for the startup listing.
    pub(crate) fn routes(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.routes.iter().map(|e| (&*e.label, &e.target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router of `patterns` (Spin's syntax), the Nth to component N.
    fn router(patterns: &[&str]) -> Router {
        Router::new(patterns.iter().enumerate().map(|(i, p)| {
            let pattern = RoutePattern::parse_with_params(p).unwrap();
            (pattern, Target::Component(i))
        }))
    }

    /// Where `path` goes: the component, the route's fixed part of the
    /// path and the rest.
    fn route<'p>(router: &Router, path: &'p str) -> Option<(usize, &'p str, &'p str)> {
        let matched = router.route(path)?;
        let Target::Component(index) = matched.target else {
            panic!("{path}: a static response");
        };
        Some((*index, &path[..matched.split], &path[matched.split..]))
    }

    /// The `:name` values `path` gives its route, as guests see them.
    fn params(router: &Router, path: &str) -> Vec<(String, String, String)> {
        let matched = router.route(path).unwrap();
        matched
            .params
            .iter()
            .flat_map(|params| params.iter())
            .map(|p| {
                let header = p.header.as_str().to_owned();
                (header, p.variable.clone(), p.value(path).to_owned())
            })
            .collect()
    }

    #[test]
    fn most_specific_route_wins() {
        let router = router(&["/hello", "/api/...", "/api/admin/...", "/...", "/api/exact"]);
        let cases = [
            ("/hello", Some((0, "/hello", ""))),
            ("/hello/x", Some((3, "", "/hello/x"))),
            ("/api", Some((1, "/api", ""))),
            ("/api/items/7", Some((1, "/api", "/items/7"))),
            ("/api/admin/users", Some((2, "/api/admin", "/users"))),
            ("/api/exact", Some((4, "/api/exact", ""))),
            ("/apix", Some((3, "", "/apix"))),
            ("/", Some((3, "", "/"))),
        ];
        for (path, expected) in cases {
            assert_eq!(route(&router, path), expected, "path {path}");
        }
        let header = router.route("/api/items/7").and_then(|m| m.header);
        assert_eq!(header, Some(&http::HeaderValue::from_static("/api/...")));
        let without_catch_all = self::router(&["/a"]);
        assert!(without_catch_all.route("/b").is_none());
    }

    #[test]
    fn exact_beats_parameter_beats_wildcard() {
        // In no particular order: the router sorts them.
        let router = router(&[
            "/users/...",
            "/users/:id",
            "/users/admin",
            "/users/:id/...",
            "/users/:id/posts",
            "/users/admin/...",
            "/...",
        ]);
        let cases = [
            ("/users/admin", Some((2, "/users/admin", ""))),
            ("/users/admin/x", Some((5, "/users/admin", "/x"))),
            ("/users/42", Some((1, "/users/42", ""))),
            ("/users/42/posts", Some((4, "/users/42/posts", ""))),
            ("/users/42/likes", Some((3, "/users/42", "/likes"))),
            ("/users", Some((0, "/users", ""))),
            ("/other", Some((6, "", "/other"))),
        ];
        for (path, expected) in cases {
            assert_eq!(route(&router, path), expected, "path {path}");
        }
        // The listing is in matching order.
        let order: Vec<&str> = router.routes().map(|(label, _)| label).collect();
        assert_eq!(
            order,
            [
                "/users/admin",
                "/users/admin/...",
                "/users/:id/posts",
                "/users/:id",
                "/users/:id/...",
                "/users/...",
                "/...",
            ]
        );
    }

    #[test]
    fn a_parameter_needs_a_non_empty_segment() {
        let router = router(&["/users/:id", "/users/:id/posts", "/users/..."]);
        // An empty segment is no value: the wildcard takes the request.
        assert_eq!(route(&router, "/users/"), Some((2, "/users", "/")));
        assert_eq!(
            route(&router, "/users//posts"),
            Some((2, "/users", "//posts"))
        );
        let only_params = self::router(&["/users/:id"]);
        for path in ["/users", "/users/", "/users//"] {
            assert_eq!(route(&only_params, path), None, "path {path}");
        }
    }

    #[test]
    fn a_parameter_route_ends_where_it_is_written() {
        let router = router(&["/users/:id", "/files/:name/..."]);
        // Without `/...`, no trailing slash and no further segment.
        assert_eq!(route(&router, "/users/42"), Some((0, "/users/42", "")));
        assert_eq!(route(&router, "/users/42/"), None);
        assert_eq!(route(&router, "/users/42/x"), None);
        // With it, whatever follows, even nothing.
        assert_eq!(route(&router, "/files/a"), Some((1, "/files/a", "")));
        assert_eq!(route(&router, "/files/a/"), Some((1, "/files/a", "/")));
        assert_eq!(
            route(&router, "/files/a/b/c"),
            Some((1, "/files/a", "/b/c"))
        );
        let header = router.route("/files/a/b").and_then(|m| m.header);
        assert_eq!(
            header,
            Some(&http::HeaderValue::from_static("/files/:name/..."))
        );
    }

    #[test]
    fn parameters_are_named_as_spin_names_them() {
        let router = router(&["/:tenant/users/:user_id/...", "/plain/..."]);
        assert_eq!(
            params(&router, "/acme/users/7/posts"),
            [
                (
                    "spin-path-match-tenant".to_owned(),
                    "X_PATH_MATCH_TENANT".to_owned(),
                    "acme".to_owned()
                ),
                (
                    "spin-path-match-user-id".to_owned(),
                    "X_PATH_MATCH_USER_ID".to_owned(),
                    "7".to_owned()
                ),
            ]
        );
        // Values are the path's own text, percent-escapes and all.
        assert_eq!(params(&router, "/a%20b/users/x.y")[0].2, "a%20b");
        assert_eq!(params(&router, "/a%20b/users/x.y")[1].2, "x.y");
        assert!(router.route("/plain/x").unwrap().params.is_none());
    }

    #[test]
    fn a_static_response_is_a_route_like_any_other() {
        let health = tern_manifest::StaticResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: "ok\n".into(),
        };
        let router = Router::new([
            (RoutePattern::parse("/...").unwrap(), Target::Component(0)),
            (
                RoutePattern::parse("/health").unwrap(),
                Target::Static(StaticReply::new(&health)),
            ),
        ]);
        let matched = router.route("/health").unwrap();
        let Target::Static(reply) = matched.target else {
            panic!("{matched:?}");
        };
        assert_eq!(reply.status(), 200);
        assert_eq!(route(&router, "/healthz"), Some((0, "", "/healthz")));
    }
}
