//! Which app a host name belongs to: `NAME.DOMAIN` for every app, and the
//! names apps claim in their manifests, exact (`shop.example.com`) or over
//! subdomains (`*.shop.example.com`). An exact claim wins over a wildcard;
//! the longest wildcard wins over shorter ones.

use std::collections::HashMap;

/// The host names of every app.
#[derive(Default)]
pub(crate) struct Names {
    exact: HashMap<String, String>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, String>,
}

impl Names {
    /// The app serving `host`.
    pub(crate) fn find(&self, host: &str) -> Option<&str> {
        if let Some(app) = self.exact.get(host) {
            return Some(app);
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(app) = self.wildcard.get(parent) {
                return Some(app);
            }
            rest = parent;
        }
        None
    }

    /// The app other than `app` already holding one of `names`, with the
    /// name.
    pub(crate) fn conflict<'a>(
        &'a self,
        app: &str,
        names: &'a [String],
    ) -> Option<(&'a str, &'a str)> {
        names.iter().find_map(|name| {
            let holder = match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.get(parent),
                None => self.exact.get(name),
            }?;
            (holder != app).then_some((name.as_str(), holder.as_str()))
        })
    }

    /// Gives `names` to `app`.
    pub(crate) fn claim(&mut self, app: &str, names: &[String]) {
        for name in names {
            let map = match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_owned()),
                None => self.exact.entry(name.clone()),
            };
            map.or_insert_with(|| app.to_owned());
        }
    }

    /// Takes back every name of `app`.
    pub(crate) fn release(&mut self, app: &str) {
        self.exact.retain(|_, holder| holder != app);
        self.wildcard.retain(|_, holder| holder != app);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_win_then_the_nearest_wildcard() {
        let mut names = Names::default();
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        names.claim("shop", &owned(&["shop.localhost", "*.example.com"]));
        names.claim("api", &owned(&["api.example.com", "*.api.example.com"]));
        assert_eq!(names.find("shop.localhost"), Some("shop"));
        assert_eq!(names.find("www.example.com"), Some("shop"));
        assert_eq!(names.find("a.b.example.com"), Some("shop"));
        assert_eq!(names.find("api.example.com"), Some("api"));
        assert_eq!(names.find("v1.api.example.com"), Some("api"));
        assert_eq!(names.find("example.com"), None);
        assert_eq!(names.find("localhost"), None);
        let taken = owned(&["new.localhost", "*.api.example.com"]);
        assert_eq!(
            names.conflict("other", &taken),
            Some(("*.api.example.com", "api"))
        );
        assert_eq!(names.conflict("api", &taken), None);
        names.release("shop");
        assert_eq!(names.find("www.example.com"), None);
        assert_eq!(names.find("api.example.com"), Some("api"));
    }
}
