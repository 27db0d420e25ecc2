//! App variables (`[variables]`) and the templates components read them
//! through (`[component.ID.variables]`), and how their values are found.
//!
//! ```toml
//! [variables]
//! greeting = { default = "hello" }
//! api_token = { required = true, secret = true }
//!
//! [component.api.variables]
//! token = "Bearer {{ api_token }}"
//! ```

use std::collections::BTreeMap;
use std::fmt;

use crate::{Location, Manifest, ManifestError, OutboundHost};

/// An app variable as declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// The value when none is provided; absent when `required`.
    pub default: Option<String>,
    /// Whether Tern refuses to start without a value.
    pub required: bool,
    /// Whether the value must never be shown (logs, errors, output).
    pub secret: bool,
}

/// A component variable's value: text with `{{ name }}` references to app
/// variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Variable(String),
}

impl Template {
    /// Parses `text`; `{{` must be closed by `}}` around a variable name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in \"{text}\""))?;
            let name = after[..end].trim();
            if !is_valid_name(name) {
                return Err(format!(
                    "`{{{{ {name} }}}}` does not name a variable; names use lowercase letters, digits and `_`"
                ));
            }
            parts.push(Part::Variable(name.to_owned()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The app variables the template refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    fn render(&self, values: &BTreeMap<String, String>) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(text) => text.as_str(),
                Part::Variable(name) => values.get(name).map_or("", String::as_str),
            })
            .collect()
    }
}

/// Whether `name` may name an app variable: lowercase ASCII letters,
/// digits and `_`, starting with a letter, so that names survive the trip
/// to `TERN_VARIABLE_NAME` and back.
pub fn is_valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The environment variable that provides app variable `name`.
pub fn env_name(name: &str) -> String {
    format!("TERN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// A required variable nobody provided. Names the variable, never a value.
#[derive(Debug, PartialEq, Eq)]
pub struct MissingVariable {
    /// The variable's name.
    pub name: String,
    /// Whether the app's variables are set per app on a host (`tern apps
    /// variables set`), not by the environment or the runtime config: the
    /// message then says so.
    pub per_app: bool,
}

impl fmt::Display for MissingVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.per_app {
            return write!(
                f,
                "variable `{}` is required but has no value; set it for this app with `tern apps variables set APP {}=VALUE`",
                self.name, self.name
            );
        }
        write!(
            f,
            "variable `{}` is required but has no value; set {} or add `{} = \"...\"` under [variables] in the runtime config",
            self.name,
            env_name(&self.name),
            self.name
        )
    }
}

impl std::error::Error for MissingVariable {}

/// What each component reads through `wasi:config/store`, by component id.
pub type ComponentVariables = BTreeMap<String, BTreeMap<String, String>>;

/// An `allowed_outbound_hosts` entry written with `{{ variable }}`
/// templates (`"https://{{ api_host }}"`), as Spin allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundTemplate {
    /// The entry, parsed.
    pub template: Template,
    /// The entry as written, for errors.
    pub written: String,
    /// Where it is written.
    pub location: Location,
}

impl Manifest {
    /// Finds every app variable's value: from `env` (`TERN_VARIABLE_NAME`,
    /// or for a Spin manifest `SPIN_VARIABLE_NAME` after it), else from
    /// `provided` (the runtime config's `[variables]`), else its default.
    /// Then renders each component's templates.
    pub fn resolve_variables(
        &self,
        provided: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ComponentVariables, MissingVariable> {
        let values = self.variable_values(provided, env)?;
        Ok(self
            .components
            .iter()
            .map(|(id, component)| {
                let rendered = component
                    .variables
                    .iter()
                    .map(|(key, template)| (key.clone(), template.render(&values)))
                    .collect();
                (id.clone(), rendered)
            })
            .collect())
    }

    /// Each component's `allowed_outbound_hosts`, its templated entries
    /// rendered with the app variables' values (found as
    /// [`Manifest::resolve_variables`] finds them). An entry that renders
    /// to no outbound host is an error at that entry; a value of a secret
    /// variable is never shown in it.
    pub fn outbound_hosts(
        &self,
        provided: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, Vec<OutboundHost>>, ManifestError> {
        let values =
            self.variable_values(provided, env)
                .map_err(|missing| ManifestError::Invalid {
                    path: self.path.clone(),
                    location: None,
                    key: format!("variables.{}", missing.name),
                    message: missing.to_string(),
                })?;
        let mut all = BTreeMap::new();
        for (id, component) in &self.components {
            let mut hosts = component.allowed_outbound_hosts.clone();
            for entry in &component.outbound_templates {
                let rendered = entry.template.render(&values);
                let host = rendered.parse::<OutboundHost>().map_err(|problem| {
                    let secret = entry
                        .template
                        .references()
                        .find(|name| self.variables.get(*name).is_some_and(|v| v.secret));
                    let message = match secret {
                        Some(name) => format!(
                            "\"{}\" is not an outbound host once its variables are filled in (`{name}` is secret, so the result is not shown)",
                            entry.written
                        ),
                        None => format!(
                            "\"{}\" is \"{rendered}\" once its variables are filled in: {problem}",
                            entry.written
                        ),
                    };
                    self.error_at(
                        entry.location,
                        &format!("component.{id}.allowed_outbound_hosts"),
                        message,
                    )
                })?;
                hosts.push(host);
            }
            all.insert(id.clone(), hosts);
        }
        Ok(all)
    }

    fn variable_values(
        &self,
        provided: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, MissingVariable> {
        let mut values = BTreeMap::new();
        for (name, variable) in &self.variables {
            let value = env(&env_name(name))
                .or_else(|| {
                    self.spin
                        .then(|| env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())))
                        .flatten()
                })
                .or_else(|| provided.get(name).cloned())
                .or_else(|| variable.default.clone());
            match value {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None if variable.required => {
                    return Err(MissingVariable {
                        name: name.clone(),
                        per_app: false,
                    });
                }
                None => {}
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = Template::parse("Bearer {{ token }}!").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), ["token"]);
        let values = BTreeMap::from([("token".to_string(), "abc".to_string())]);
        assert_eq!(t.render(&values), "Bearer abc!");
        assert_eq!(Template::parse("plain").unwrap().render(&values), "plain");
        assert!(Template::parse("{{ token").is_err());
        assert!(Template::parse("{{ Token }}").is_err());
        assert!(Template::parse("{{}}").is_err());
    }
}
