//! Route patterns: which request paths a component answers, and what
//! answers them.

use std::fmt;

/// A `[[route]]` entry (or a Spin `[[trigger.http]]`): requests whose path
/// matches `pattern` go to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The paths this route answers.
    pub pattern: RoutePattern,
    /// What answers them.
    pub target: RouteTarget,
    /// The proxy-wasm filters in front of the target, in order, by name in
    /// [`crate::Manifest::filters`]; only before a component or an
    /// upstream.
    pub filters: Vec<String>,
}

impl Route {
    /// The id of the component that answers, unless the route answers with
    /// a [`StaticResponse`].
    pub fn component(&self) -> Option<&str> {
        match &self.target {
            RouteTarget::Component(id) => Some(id.as_str()),
            RouteTarget::Static(_) | RouteTarget::Upstream(_) => None,
        }
    }
}

/// What answers a route's requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// The id of a component; always defined in the manifest.
    Component(String),
    /// A response written in the manifest (Spin's `static_response`),
    /// answered without running any guest.
    Static(StaticResponse),
    /// Forwarded to an upstream service: the upstream's name in
    /// [`crate::Manifest::upstreams`].
    Upstream(String),
}

/// A response written in the manifest, the same for every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticResponse {
    /// A final status, 200 to 599.
    pub status: u16,
    /// Header fields, by name as written. Names are HTTP tokens, values
    /// hold no control character but tab, and none frames the body or the
    /// connection (`content-length`, `connection`...): the server does.
    pub headers: Vec<(String, String)>,
    /// The body; empty for a 204 or 304.
    pub body: String,
}

/// A route path as written in the manifest: `/hello` matches exactly that
/// path, `/api/...` matches `/api` and everything below it, and `/...`
/// matches every path. In a Spin manifest a segment may also be `:name`,
/// matching any one non-empty segment (see [`RouteTemplate`]).
///
/// ```
/// # use tern_manifest::RoutePattern;
/// let api = RoutePattern::parse("/api/...").unwrap();
/// assert_eq!(api, RoutePattern::Prefix("/api".into()));
/// assert_eq!(api.matches("/api/users/7"), Some("/users/7"));
/// assert_eq!(api.matches("/apix"), None);
/// assert_eq!(api.to_string(), "/api/...");
///
/// let user = RoutePattern::parse_with_params("/users/:id/...").unwrap();
/// assert_eq!(user.matches("/users/42/posts"), Some("/posts"));
/// assert_eq!(user.matches("/users//posts"), None);
/// assert_eq!(user.to_string(), "/users/:id/...");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutePattern {
    /// Matches this path only.
    Exact(String),
    /// Matches this path and every path below it; `""` matches every path.
    /// Never ends with `/`.
    Prefix(String),
    /// A path with `:name` segments; only [`RoutePattern::parse_with_params`]
    /// makes one.
    Template(RouteTemplate),
}

/// A route path with at least one `:name` segment, such as `/users/:id` or
/// `/users/:id/...` (Spin's single-segment wildcards). A `:name` segment
/// matches any one non-empty path segment; the rest must match as written.
/// Without `/...` the path must end where the template does (`/users/:id`
/// matches `/users/42`, not `/users/42/` nor `/users/42/posts`).
///
/// ```
/// # use tern_manifest::{RoutePattern, RouteSegment, RouteTemplate};
/// let pattern = RoutePattern::parse_with_params("/users/:id").unwrap();
/// let RoutePattern::Template(template) = &pattern else { unreachable!() };
/// assert_eq!(
///     template,
///     &RouteTemplate {
///         segments: vec![
///             RouteSegment::Literal("users".into()),
///             RouteSegment::Param("id".into()),
///         ],
///         wildcard: false,
///     }
/// );
/// assert_eq!(template.params().collect::<Vec<_>>(), [(1, "id")]);
/// assert_eq!(pattern.matches("/users/42"), Some(""));
/// assert_eq!(pattern.matches("/users/42/"), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTemplate {
    /// The segments between the path's `/`s, after the leading one.
    pub segments: Vec<RouteSegment>,
    /// Whether the template ends with `/...`, matching any rest of the path
    /// below it too.
    pub wildcard: bool,
}

/// One segment of a [`RouteTemplate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteSegment {
    /// Matches this text only.
    Literal(String),
    /// `:name`: matches any one non-empty segment. The name as written,
    /// without the `:`: ASCII letters, digits, `_` and `-`.
    Param(String),
}

/// How specific a route pattern is, for choosing among the routes that
/// match a path: the greatest wins. See [`RoutePattern::specificity`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    /// One rank per segment, then how the pattern ends.
    ranks: Vec<Rank>,
    /// Between patterns of equal ranks (which never match the same path,
    /// unless they are duplicates), the longer first.
    len: usize,
}

/// A segment's rank in a [`Specificity`], least specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// `/...`: any rest of the path, or none.
    Rest,
    /// The end of a pattern without `/...`.
    End,
    /// `:name`: any one segment.
    Param,
    /// A segment as written.
    Literal,
}

/// The most `:name` parameters one route may have (each is a header the
/// guest gets, matched on every request).
const MAX_PARAMS: usize = 32;

impl RoutePattern {
    /// Parses a route path as written in the manifest.
    ///
    /// The path starts with `/`, has no `?`, `#`, whitespace, `//`, `.` or
    /// `..` segments, and may end with the wildcard segment `/...`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let problem = if !s.starts_with('/') {
            Some("must start with `/`")
        } else if s.contains(['?', '#']) {
            Some("must not contain `?` or `#`; a route matches the path only")
        } else if s.contains(|c: char| c.is_whitespace() || c.is_control()) {
            Some("must not contain whitespace or control characters")
        } else if s.contains("//") {
            Some("must not contain an empty segment `//`")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!("invalid route path \"{s}\": {problem}"));
        }

        let (path, wildcard) = match s.strip_suffix("/...") {
            Some(prefix) => (prefix, true),
            None => (s, false),
        };
        let problem = if path.contains("...") {
            Some("`...` may only be the last segment, as in `/api/...`")
        } else if path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            Some("must not contain `.` or `..` segments")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!("invalid route path \"{s}\": {problem}"));
        }

        Ok(if wildcard {
            RoutePattern::Prefix(path.to_owned())
        } else {
            RoutePattern::Exact(path.to_owned())
        })
    }

    /// Parses a route path as [`RoutePattern::parse`] does, reading each
    /// segment that starts with `:` as a parameter (a Spin manifest's
    /// `/users/:id`): a [`RoutePattern::Template`] when there is one.
    ///
    /// A name is ASCII letters, digits, `_` and `-`, and names the header
    /// `spin-path-match-NAME` a guest reads the segment from, so two names
    /// of one route must differ as header names do: other than by case, or
    /// `_` for `-`.
    pub fn parse_with_params(s: &str) -> Result<Self, String> {
        let (path, wildcard) = match RoutePattern::parse(s)? {
            RoutePattern::Exact(path) => (path, false),
            RoutePattern::Prefix(path) => (path, true),
            template @ RoutePattern::Template(_) => return Ok(template),
        };
        if !path.split('/').any(|segment| segment.starts_with(':')) {
            return Ok(if wildcard {
                RoutePattern::Prefix(path)
            } else {
                RoutePattern::Exact(path)
            });
        }
        let invalid = |problem: String| format!("invalid route path \"{s}\": {problem}");
        let mut segments = Vec::new();
        let mut headers: Vec<(String, &str)> = Vec::new();
        // An exact path starts with `/`: skip the empty text before it.
        for segment in path.split('/').skip(1) {
            let Some(name) = segment.strip_prefix(':') else {
                segments.push(RouteSegment::Literal(segment.to_owned()));
                continue;
            };
            if name.is_empty() {
                return Err(invalid(
                    "a `:` segment needs a name, such as `:id`".to_owned(),
                ));
            }
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(format!(
                    "`:{name}`: a parameter's name may hold only ASCII letters, digits, `_` and `-`"
                )));
            }
            let header = name.to_ascii_lowercase().replace('_', "-");
            if let Some((_, first)) = headers.iter().find(|(seen, _)| *seen == header) {
                return Err(invalid(format!(
                    "`:{first}` and `:{name}` name the same header, spin-path-match-{header}; give each parameter its own name"
                )));
            }
            if headers.len() == MAX_PARAMS {
                return Err(invalid(format!(
                    "more than {MAX_PARAMS} `:` parameters in one route"
                )));
            }
            headers.push((header, name));
            segments.push(RouteSegment::Param(name.to_owned()));
        }
        Ok(RoutePattern::Template(RouteTemplate { segments, wildcard }))
    }

    /// Returns the rest of `path` below the pattern (WAGI's `PATH_INFO`) when
    /// `path` matches, and `None` otherwise. `path` excludes the query string.
    ///
    /// An exact match leaves `""`. `Prefix("/api")` matches `/api` (leaving
    /// `""`) and `/api/x/y` (leaving `/x/y`) but not `/apix`. `Prefix("")`
    /// matches every path and leaves all of it.
    pub fn matches<'a>(&self, path: &'a str) -> Option<&'a str> {
        match self {
            RoutePattern::Exact(exact) => (path == exact).then_some(""),
            RoutePattern::Prefix(prefix) => path
                .strip_prefix(prefix.as_str())
                .filter(|rest| rest.is_empty() || rest.starts_with('/')),
            RoutePattern::Template(template) => template.matches(path),
        }
    }

    /// The router's ordering key: when several routes match, the greatest
    /// key wins. Patterns are compared segment by segment from the left;
    /// at the first that differs, a segment as written beats a `:name`
    /// segment, which beats `/...`. So an exact path beats a prefix that
    /// matches it, a longer prefix a shorter one, and `/users/admin` beats
    /// `/users/:id`, which beats `/users/...`.
    ///
    /// ```
    /// # use tern_manifest::RoutePattern;
    /// let key = |s| RoutePattern::parse_with_params(s).unwrap().specificity();
    /// assert!(key("/api/users/...") > key("/api/..."));
    /// assert!(key("/api") > key("/api/..."));
    /// assert!(key("/api/...") > key("/..."));
    /// assert!(key("/users/admin") > key("/users/:id"));
    /// assert!(key("/users/:id") > key("/users/..."));
    /// assert!(key("/users/admin/...") > key("/users/:id/edit"));
    /// ```
    pub fn specificity(&self) -> Specificity {
        // An exact path and a prefix start with `/` (or are empty: `/...`).
        let literals =
            |path: &str| -> Vec<Rank> { path.split('/').skip(1).map(|_| Rank::Literal).collect() };
        let (mut ranks, end) = match self {
            RoutePattern::Exact(path) => (literals(path), Rank::End),
            RoutePattern::Prefix(path) => (literals(path), Rank::Rest),
            RoutePattern::Template(template) => {
                let ranks = template
                    .segments
                    .iter()
                    .map(|segment| match segment {
                        RouteSegment::Literal(_) => Rank::Literal,
                        RouteSegment::Param(_) => Rank::Param,
                    })
                    .collect();
                let end = if template.wildcard {
                    Rank::Rest
                } else {
                    Rank::End
                };
                (ranks, end)
            }
        };
        ranks.push(end);
        Specificity {
            ranks,
            len: self.to_string().len(),
        }
    }

    /// Whether `self` and `other` match exactly the same paths: equal, or
    /// templates that differ only in their parameters' names (`/a/:x` and
    /// `/a/:y`). A request could not tell two such routes apart.
    ///
    /// ```
    /// # use tern_manifest::RoutePattern;
    /// let p = |s| RoutePattern::parse_with_params(s).unwrap();
    /// assert!(p("/a/:x").matches_same_paths(&p("/a/:y")));
    /// assert!(!p("/a/:x").matches_same_paths(&p("/a/:x/...")));
    /// assert!(!p("/a/:x").matches_same_paths(&p("/a/b")));
    /// ```
    pub fn matches_same_paths(&self, other: &RoutePattern) -> bool {
        match (self, other) {
            (RoutePattern::Template(a), RoutePattern::Template(b)) => {
                a.wildcard == b.wildcard
                    && a.segments.len() == b.segments.len()
                    && a.segments.iter().zip(&b.segments).all(|pair| match pair {
                        (RouteSegment::Literal(x), RouteSegment::Literal(y)) => x == y,
                        (RouteSegment::Param(_), RouteSegment::Param(_)) => true,
                        _ => false,
                    })
            }
            _ => self == other,
        }
    }
}

impl RouteTemplate {
    /// Returns the rest of `path` below the template when `path` matches,
    /// as [`RoutePattern::matches`] does: `""` without `/...`.
    pub fn matches<'a>(&self, path: &'a str) -> Option<&'a str> {
        let mut rest = path;
        for segment in &self.segments {
            let after = rest.strip_prefix('/')?;
            let (value, next) = after.split_at(after.find('/').unwrap_or(after.len()));
            let matched = match segment {
                RouteSegment::Literal(text) => value == text,
                RouteSegment::Param(_) => !value.is_empty(),
            };
            if !matched {
                return None;
            }
            rest = next;
        }
        // What is left is empty or starts with `/`.
        if self.wildcard {
            Some(rest)
        } else {
            rest.is_empty().then_some("")
        }
    }

    /// Each `:name` segment's name, with its index among the path's
    /// segments: 0 is the segment after the leading `/`, so a matched
    /// path's value is `path.split('/').nth(index + 1)`.
    pub fn params(&self) -> impl Iterator<Item = (usize, &str)> {
        self.segments
            .iter()
            .enumerate()
            .filter_map(|(index, segment)| match segment {
                RouteSegment::Param(name) => Some((index, name.as_str())),
                RouteSegment::Literal(_) => None,
            })
    }
}

/// Prints the pattern as written in the manifest: `/hello`, `/api/...`,
/// `/users/:id`.
impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutePattern::Exact(exact) => f.write_str(exact),
            RoutePattern::Prefix(prefix) => write!(f, "{prefix}/..."),
            RoutePattern::Template(template) => {
                for segment in &template.segments {
                    match segment {
                        RouteSegment::Literal(text) => write!(f, "/{text}")?,
                        RouteSegment::Param(name) => write!(f, "/:{name}")?,
                    }
                }
                if template.wildcard {
                    f.write_str("/...")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use RoutePattern::{Exact, Prefix};

    #[test]
    fn valid_paths_parse_and_print_as_written() {
        for (text, pattern) in [
            ("/", Exact("/".into())),
            ("/hello", Exact("/hello".into())),
            ("/hello/", Exact("/hello/".into())),
            ("/a/b.txt", Exact("/a/b.txt".into())),
            ("/a/.b/c..", Exact("/a/.b/c..".into())),
            ("/...", Prefix("".into())),
            ("/api/...", Prefix("/api".into())),
            ("/api/v1/...", Prefix("/api/v1".into())),
        ] {
            assert_eq!(RoutePattern::parse(text), Ok(pattern.clone()), "{text}");
            assert_eq!(pattern.to_string(), text);
        }
    }

    #[test]
    fn invalid_paths_say_why() {
        for (text, why) in [
            ("", "must start with `/`"),
            ("hello", "must start with `/`"),
            ("...", "must start with `/`"),
            ("/a?b=1", "must not contain `?` or `#`"),
            ("/a#top", "must not contain `?` or `#`"),
            ("/a b", "must not contain whitespace"),
            ("//", "empty segment `//`"),
            ("/a//b", "empty segment `//`"),
            ("/api//...", "empty segment `//`"),
            ("/.../a", "`...` may only be the last segment"),
            ("/a/.../...", "`...` may only be the last segment"),
            ("/a...", "`...` may only be the last segment"),
            ("/./a", "`.` or `..` segments"),
            ("/a/..", "`.` or `..` segments"),
            ("/a/../...", "`.` or `..` segments"),
        ] {
            let error = RoutePattern::parse(text).unwrap_err();
            assert!(
                error.starts_with(&format!("invalid route path \"{text}\": ")),
                "{error}"
            );
            assert!(error.contains(why), "{text}: {error}");
        }
        let many = |n: usize| (0..n).map(|i| format!("/:p{i}")).collect::<String>();
        assert!(RoutePattern::parse_with_params(&many(MAX_PARAMS)).is_ok());
        let error = RoutePattern::parse_with_params(&many(MAX_PARAMS + 1)).unwrap_err();
        assert!(
            error.ends_with("more than 32 `:` parameters in one route"),
            "{error}"
        );
    }

    #[test]
    fn matching_returns_the_path_below_the_pattern() {
        for (pattern, path, expected) in [
            ("/hello", "/hello", Some("")),
            ("/hello", "/hello/", None),
            ("/hello", "/hell", None),
            ("/hello", "/hello/x", None),
            ("/", "/", Some("")),
            ("/", "/x", None),
            ("/api/...", "/api", Some("")),
            ("/api/...", "/api/", Some("/")),
            ("/api/...", "/api/x/y", Some("/x/y")),
            ("/api/...", "/apix", None),
            ("/api/...", "/ap", None),
            ("/api/...", "/", None),
            ("/...", "/", Some("/")),
            ("/...", "/any/thing", Some("/any/thing")),
        ] {
            let parsed = RoutePattern::parse(pattern).unwrap();
            assert_eq!(parsed.matches(path), expected, "{pattern} vs {path}");
        }
    }

    #[test]
    fn exact_beats_prefix_of_the_same_length() {
        let mut patterns: Vec<RoutePattern> = ["/...", "/api", "/api/...", "/api/v1/...", "/"]
            .into_iter()
            .map(|s| RoutePattern::parse(s).unwrap())
            .collect();
        patterns.sort_by_key(|p| std::cmp::Reverse(p.specificity()));
        let order: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        assert_eq!(order, ["/api/v1/...", "/api", "/", "/api/...", "/..."]);
    }

    #[test]
    fn literal_segments_beat_parameters_which_beat_wildcards() {
        let mut patterns: Vec<RoutePattern> = [
            "/...",
            "/users/...",
            "/users/:id/...",
            "/users/:id",
            "/users/admin",
            "/users/admin/...",
            "/users/:id/posts",
            "/:tenant/users",
        ]
        .into_iter()
        .map(|s| RoutePattern::parse_with_params(s).unwrap())
        .collect();
        patterns.sort_by_key(|p| std::cmp::Reverse(p.specificity()));
        let order: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            order,
            [
                "/users/admin",
                "/users/admin/...",
                "/users/:id/posts",
                "/users/:id",
                "/users/:id/...",
                "/users/...",
                "/:tenant/users",
                "/...",
            ]
        );
    }

    #[test]
    fn parameters_parse_and_print_as_written() {
        let literal = |text: &str| RouteSegment::Literal(text.to_owned());
        let param = |name: &str| RouteSegment::Param(name.to_owned());
        for (text, segments, wildcard) in [
            ("/users/:id", vec![literal("users"), param("id")], false),
            ("/:tenant/...", vec![param("tenant")], true),
            (
                "/a/:x/b/:Y_2-z/",
                vec![
                    literal("a"),
                    param("x"),
                    literal("b"),
                    param("Y_2-z"),
                    literal(""),
                ],
                false,
            ),
        ] {
            let pattern = RoutePattern::Template(RouteTemplate { segments, wildcard });
            assert_eq!(RoutePattern::parse_with_params(text), Ok(pattern.clone()));
            assert_eq!(pattern.to_string(), text);
        }
        // Without a `:` segment, the same as `parse`; `a:b` is no parameter.
        for text in ["/users/...", "/a:b", "/", "/..."] {
            assert_eq!(
                RoutePattern::parse_with_params(text),
                RoutePattern::parse(text)
            );
        }
        // Tern's own manifest reads `:` as any other character.
        assert_eq!(
            RoutePattern::parse("/users/:id"),
            Ok(Exact("/users/:id".into()))
        );
    }

    #[test]
    fn invalid_parameters_say_why() {
        for (text, why) in [
            ("/users/:", "needs a name"),
            ("/users/:/x", "needs a name"),
            ("/users/:a.b", "only ASCII letters, digits"),
            ("/users/:a:b", "only ASCII letters, digits"),
            ("/users/:ä", "only ASCII letters, digits"),
            ("/:id/:ID", "`:id` and `:ID` name the same header"),
            ("/:user_id/:user-id", "spin-path-match-user-id"),
            ("/:a/.../:b", "`...` may only be the last segment"),
            ("/:a//b", "empty segment `//`"),
        ] {
            let error = RoutePattern::parse_with_params(text).unwrap_err();
            assert!(
                error.starts_with(&format!("invalid route path \"{text}\": ")),
                "{error}"
            );
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn a_parameter_matches_one_non_empty_segment() {
        for (pattern, path, expected) in [
            ("/users/:id", "/users/42", Some("")),
            ("/users/:id", "/users/", None),
            ("/users/:id", "/users", None),
            ("/users/:id", "/users//", None),
            ("/users/:id", "/users/42/", None),
            ("/users/:id", "/users/42/posts", None),
            ("/users/:id", "/people/42", None),
            ("/users/:id/", "/users/42/", Some("")),
            ("/users/:id/posts", "/users/42/posts", Some("")),
            ("/users/:id/posts", "/users/42/post", None),
            ("/users/:id/posts", "/users//posts", None),
            ("/users/:id/...", "/users/42", Some("")),
            ("/users/:id/...", "/users/42/", Some("/")),
            ("/users/:id/...", "/users/42/posts/7", Some("/posts/7")),
            ("/users/:id/...", "/users", None),
            ("/:a/:b", "/x/y", Some("")),
            ("/:a/:b", "/x/y/z", None),
            ("/:a/...", "/", None),
        ] {
            let parsed = RoutePattern::parse_with_params(pattern).unwrap();
            assert_eq!(parsed.matches(path), expected, "{pattern} vs {path}");
        }
    }

    #[test]
    fn templates_differing_only_in_names_match_the_same_paths() {
        let p = |s| RoutePattern::parse_with_params(s).unwrap();
        assert!(p("/a/:x").matches_same_paths(&p("/a/:y")));
        assert!(p("/a/:x/...").matches_same_paths(&p("/a/:y/...")));
        assert!(p("/a").matches_same_paths(&p("/a")));
        assert!(!p("/a/:x").matches_same_paths(&p("/b/:x")));
        assert!(!p("/a/:x").matches_same_paths(&p("/a/:x/b")));
        assert!(!p("/a/:x/...").matches_same_paths(&p("/a/...")));
        assert!(!p("/a/...").matches_same_paths(&p("/a")));
    }
}
