//! Picks the component for a path: an exact route, else the longest
//! matching prefix route.

use http::HeaderValue;
use tern_manifest::RoutePattern;

/// The app's routes, most specific first.
pub(crate) struct Router {
    routes: Vec<Entry>,
}

struct Entry {
    pattern: RoutePattern,
    /// The pattern as written.
    label: String,
    /// The same as a header value for guests, made once rather than per
    /// request; `None` when the pattern is not visible ASCII.
    header: Option<HeaderValue>,
    component: usize,
}

/// A matched route.
#[derive(Debug, PartialEq)]
pub(crate) struct Match<'a> {
    /// Index of the component in the app.
    pub(crate) component: usize,
    /// The route as written in the manifest, as a header value.
    pub(crate) header: Option<&'a HeaderValue>,
    /// Where the rest of the path (CGI's `PATH_INFO`) starts; before it is
    /// the route's fixed part (`SCRIPT_NAME`).
    pub(crate) split: usize,
}

impl Router {
    pub(crate) fn new(routes: impl IntoIterator<Item = (RoutePattern, usize)>) -> Self {
        let mut routes: Vec<Entry> = routes
            .into_iter()
            .map(|(pattern, component)| {
                let label = pattern.to_string();
                Entry {
                    header: HeaderValue::from_str(&label).ok(),
                    label,
                    pattern,
                    component,
                }
            })
            .collect();
        routes.sort_by_key(|e| std::cmp::Reverse(e.pattern.specificity()));
        Router { routes }
    }

    pub(crate) fn route<'a>(&'a self, path: &'a str) -> Option<Match<'a>> {
        self.routes.iter().find_map(|entry| {
            let path_info = entry.pattern.matches(path)?;
            Some(Match {
                component: entry.component,
                header: entry.header.as_ref(),
                split: path.len() - path_info.len(),
            })
        })
    }

    /// The routes in matching order, for the startup listing.
    pub(crate) fn routes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.routes.iter().map(|e| (&*e.label, e.component))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_route_wins() {
        let router = Router::new(
            ["/hello", "/api/...", "/api/admin/...", "/...", "/api/exact"]
                .iter()
                .enumerate()
                .map(|(i, p)| (RoutePattern::parse(p).unwrap(), i)),
        );
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
            let got = router
                .route(path)
                .map(|m| (m.component, &path[..m.split], &path[m.split..]));
            assert_eq!(got, expected, "path {path}");
        }
        let header = router.route("/api/items/7").and_then(|m| m.header);
        assert_eq!(header, Some(&http::HeaderValue::from_static("/api/...")));
        let without_catch_all = Router::new([(RoutePattern::parse("/a").unwrap(), 0)]);
        assert_eq!(without_catch_all.route("/b"), None);
    }
}
