//! Route patterns: which request paths a component answers.

use std::fmt;

/// A `[[route]]` entry: requests whose path matches `pattern` go to `component`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The paths this route answers.
    pub pattern: RoutePattern,
    /// The id of the component that answers; always defined in the manifest.
    pub component: String,
}

/// A route path as written in the manifest: `/hello` matches exactly that
/// path, `/api/...` matches `/api` and everything below it, and `/...`
/// matches every path.
///
/// ```
/// # use tern_manifest::RoutePattern;
/// let api = RoutePattern::parse("/api/...").unwrap();
/// assert_eq!(api, RoutePattern::Prefix("/api".into()));
/// assert_eq!(api.matches("/api/users/7"), Some("/users/7"));
/// assert_eq!(api.matches("/apix"), None);
/// assert_eq!(api.to_string(), "/api/...");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutePattern {
    /// Matches this path only.
    Exact(String),
    /// Matches this path and every path below it; `""` matches every path.
    /// Never ends with `/`.
    Prefix(String),
}

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
        }
    }

    /// The router's ordering key: when several routes match, the greatest
    /// key wins. A longer pattern is more specific, and an exact pattern
    /// beats a prefix of the same length.
    ///
    /// ```
    /// # use tern_manifest::RoutePattern;
    /// let key = |s| RoutePattern::parse(s).unwrap().specificity();
    /// assert!(key("/api/users/...") > key("/api/..."));
    /// assert!(key("/api") > key("/api/..."));
    /// assert!(key("/api/...") > key("/..."));
    /// ```
    pub fn specificity(&self) -> (usize, bool) {
        match self {
            RoutePattern::Exact(exact) => (exact.len(), true),
            RoutePattern::Prefix(prefix) => (prefix.len(), false),
        }
    }
}

/// Prints the pattern as written in the manifest: `/hello`, `/api/...`.
impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutePattern::Exact(exact) => f.write_str(exact),
            RoutePattern::Prefix(prefix) => write!(f, "{prefix}/..."),
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
        assert_eq!(order, ["/api/v1/...", "/api", "/api/...", "/", "/..."]);
    }
}
