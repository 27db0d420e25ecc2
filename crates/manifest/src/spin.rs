//! Spin manifests (`spin.toml` with `spin_manifest_version = 2`), read into
//! the same [`Manifest`] as a `tern.toml`.
//!
//! What only Spin has (triggers, a base path, inline components, source
//! tables, `files` globs, keys Tern has no use for yet) is checked here, so
//! that errors name Spin's keys. The manifest is then made into Tern's raw
//! manifest and checked by `resolve` as a `tern.toml` is: sources, mounts,
//! stores, outbound hosts, variables and builds follow one set of rules,
//! and spans still point into the `spin.toml` text. What Tern does not
//! support yet is an error naming its key, never silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use toml::Spanned;

use crate::download::{parse_digest, url_problem};
use crate::error::Source;
use crate::raw::{
    RawApp, RawBuild, RawComponent, RawFileMount, RawLimits, RawManifest, RawVariable, RawVersion,
};
use crate::spin_files;
use crate::{
    Download, Executor, LoadOptions, Location, Manifest, ManifestError, RedisTrigger, Route,
    RoutePattern, RouteTarget, StaticResponse, WagiOptions, resolve,
};

/// The only `spin_manifest_version` Tern reads.
const SPIN_MANIFEST_VERSION: i64 = 2;

/// The most headers a `static_response` may set.
const MAX_STATIC_HEADERS: usize = 100;

/// Why a Spin 1 manifest is refused.
const VERSION_1: &str = "Spin manifest version 1 is not supported; convert it with `spin doctor` or by hand to version 2";

/// Reads the Spin manifest `source`, checks it, and makes it a [`Manifest`]
/// as [`crate::parse_with`] makes a `tern.toml` one.
pub(crate) fn parse(source: &Source, options: LoadOptions) -> Result<Manifest, ManifestError> {
    let from_toml =
        |error: toml::de::Error| ManifestError::from_toml(source.path, source.text, &error);
    let version: RawVersion = toml::from_str(source.text).map_err(from_toml)?;
    check_version(source, version.spin_manifest_version)?;
    let raw: RawSpinManifest = toml::from_str(source.text).map_err(from_toml)?;

    let Some(application) = raw.application else {
        let message = "missing; add an [application] table with a name";
        return Err(source.invalid(None, "application", message));
    };
    if application.name.get_ref().trim().is_empty() {
        let location = Some(source.key_at(&application.name.span()));
        return Err(source.invalid(location, "application.name", "must not be empty"));
    }
    refuse_other_triggers(source, &application.trigger, &raw.trigger)?;
    let base = base_path(source, application.trigger.http)?;

    let defined: Vec<String> = raw
        .component
        .keys()
        .map(|id| id.get_ref().clone())
        .collect();
    let mut http = translate_triggers(
        source,
        &base,
        raw.trigger.http.unwrap_or_default(),
        &defined,
    )?;
    let default_address = application.trigger.redis.map(|r| r.into_inner().address);
    let redis_triggers = translate_redis_triggers(
        source,
        default_address.flatten(),
        raw.trigger.redis.unwrap_or_default(),
        &defined,
        &mut http.inline,
    )?;
    if http.routes.is_empty() && redis_triggers.is_empty() {
        let message = "the manifest declares no routes and no Redis triggers";
        return Err(source.invalid(None, "trigger.http", message));
    }

    let executor = |id: &str| http.executors.get(id).and_then(|choice| choice.explicit);
    let wagi = |id: &str| {
        http.executors
            .get(id)
            .and_then(|choice| choice.wagi.clone())
    };
    let mut components = BTreeMap::new();
    for (id, component) in raw.component {
        let key = format!("component.{}", id.get_ref());
        let mut component = translate_component(source, &key, component)?;
        component.executor = executor(id.get_ref());
        component.wagi = wagi(id.get_ref());
        components.insert(id, component);
    }
    // Errors `resolve` finds in an inline component name where it is written.
    let mut inline_keys: Vec<(String, String)> = Vec::with_capacity(http.inline.len());
    for inline in http.inline {
        let mut component = inline.component;
        component.executor = executor(inline.id.get_ref());
        component.wagi = wagi(inline.id.get_ref());
        inline_keys.push((inline.id.get_ref().clone(), inline.key));
        components.insert(inline.id, component);
    }

    let app = RawApp {
        name: application.name,
        description: application.description,
        hosts: None,
    };
    let raw = RawManifest::new(app, http.routes, components, raw.variables);
    let mut manifest =
        resolve::resolve(source, raw, options).map_err(|error| spin_keys(error, &inline_keys))?;
    manifest.app.version = application.version;
    manifest.spin = true;
    manifest.redis_triggers = redis_triggers;
    Ok(manifest)
}

/// Accepts `spin_manifest_version = 2` only; Spin 1 manifests are told how
/// to convert.
fn check_version(
    source: &Source,
    version: Option<Spanned<toml::Value>>,
) -> Result<(), ManifestError> {
    let key = "spin_manifest_version";
    let Some(version) = version else {
        let message =
            format!("missing; add `spin_manifest_version = {SPIN_MANIFEST_VERSION}` at the top");
        return Err(source.invalid(None, key, message));
    };
    let message = match version.get_ref() {
        toml::Value::Integer(SPIN_MANIFEST_VERSION) => return Ok(()),
        // Spin 1 wrote its version as a string.
        toml::Value::Integer(1) => VERSION_1.to_owned(),
        toml::Value::String(text) if text == "1" => VERSION_1.to_owned(),
        toml::Value::Integer(n) => format!(
            "unsupported version {n}; Tern reads Spin manifest version {SPIN_MANIFEST_VERSION}"
        ),
        other => format!(
            "unsupported version {other}; Tern reads Spin manifest version {SPIN_MANIFEST_VERSION}"
        ),
    };
    Err(source.invalid(Some(source.key_at(&version.span())), key, message))
}

/// Refuses trigger types other than `http` and `redis`, at the first
/// one's appearance in the file.
fn refuse_other_triggers(
    source: &Source,
    application: &AppTriggers,
    triggers: &Triggers,
) -> Result<(), ManifestError> {
    let unknown = application
        .unknown
        .iter()
        .map(|kind| ("application.trigger", kind))
        .chain(triggers.unknown.iter().map(|kind| ("trigger", kind)))
        .min_by_key(|(_, kind)| kind.span().start);
    if let Some((table, kind)) = unknown {
        let name = kind.get_ref();
        let message =
            format!("unknown trigger type `{name}`; Tern serves `http` and `redis` triggers");
        return Err(source.invalid(
            Some(source.at(&kind.span())),
            format!("{table}.{name}"),
            message,
        ));
    }

    Ok(())
}

/// `application.trigger.http.base` as a prefix for every route: `""` for
/// none (or `/`), else a path starting with `/` and not ending with one.
fn base_path(source: &Source, http: Option<RawAppHttp>) -> Result<String, ManifestError> {
    let Some(base) = http.and_then(|http| http.base) else {
        return Ok(String::new());
    };
    let key = "application.trigger.http.base";
    let location = Some(source.key_at(&base.span()));
    let written = base.get_ref();
    if !written.starts_with('/') {
        let message = format!(
            "\"{written}\" must start with `/`, such as \"/{}\"",
            written.trim_start_matches("./")
        );
        return Err(source.invalid(location, key, message));
    }
    let trimmed = written.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    match RoutePattern::parse(trimmed) {
        Ok(RoutePattern::Exact(_)) if !has_parameter(trimmed) => Ok(trimmed.to_owned()),
        Ok(_) => {
            let message =
                format!("\"{written}\" must be a plain path, without `...` or `:name` segments");
            Err(source.invalid(location, key, message))
        }
        Err(message) => Err(source.invalid(location, key, message)),
    }
}

/// What the `[[trigger.http]]` entries give Tern's manifest.
struct HttpTriggers {
    /// The routes, `base` prefixed, in file order; private routes left out.
    routes: Vec<Route>,
    /// The components given inline, in file order.
    inline: Vec<InlineComponent>,
    /// How each component is run, by id.
    executors: BTreeMap<String, ExecutorChoice>,
}

/// A component given inline in a trigger, `component = { ... }`.
struct InlineComponent {
    /// The trigger's `id`, or `inline-component-N` for the Nth trigger.
    id: Spanned<String>,
    /// Where it is written, such as `trigger.http[2].component`.
    key: String,
    /// The component, its executor not yet set.
    component: RawComponent,
}

impl InlineComponent {
    /// The component written inline in the trigger under `key`, named by
    /// the trigger's `id` or else `fallback`; refused if that name is a
    /// `defined` component's or an inline one's already `made`.
    fn new(
        source: &Source,
        key: &str,
        (id, fallback): (Option<Spanned<String>>, Spanned<String>),
        component: RawSpinComponent,
        defined: &[String],
        made: &[InlineComponent],
    ) -> Result<Self, ManifestError> {
        let component_key = format!("{key}.component");
        let (id, id_key) = match id {
            Some(id) => (id, format!("{key}.id")),
            None => (fallback, component_key.clone()),
        };
        let name = id.get_ref();
        let taken = if defined.contains(name) {
            Some(format!(
                "the inline component's id \"{name}\" is also a [component.{name}] table; give the trigger another `id`"
            ))
        } else if made.iter().any(|other| other.id.get_ref() == name) {
            Some(format!(
                "another trigger's inline component has the id \"{name}\"; give each trigger its own `id`"
            ))
        } else {
            None
        };
        if let Some(message) = taken {
            return Err(source.invalid(Some(source.key_at(&id.span())), id_key, message));
        }
        let component = translate_component(source, &component_key, component)?;
        Ok(InlineComponent {
            id,
            key: component_key,
            component,
        })
    }
}

/// How a component's triggers run it. Tern runs a component one way, so
/// every trigger of it must agree.
struct ExecutorChoice {
    /// The executor; a trigger without `executor` runs it as `http`.
    kind: Executor,
    /// The executor some trigger named; `None` lets Tern infer it.
    explicit: Option<Executor>,
    /// The first trigger of the component, such as `trigger.http[1]`.
    trigger: String,
    /// How the `wagi` executor calls it, when a trigger names that.
    wagi: Option<WagiOptions>,
}

/// Checks the `[[trigger.http]]` entries and makes them routes; `defined`
/// are the `[component.ID]` ids.
fn translate_triggers(
    source: &Source,
    base: &str,
    triggers: Vec<Spanned<RawHttpTrigger>>,
    defined: &[String],
) -> Result<HttpTriggers, ManifestError> {
    let mut out = HttpTriggers {
        routes: Vec::with_capacity(triggers.len()),
        inline: Vec::new(),
        executors: BTreeMap::new(),
    };
    let mut seen: Vec<SeenRoute> = Vec::with_capacity(triggers.len());
    for (index, trigger) in triggers.into_iter().enumerate() {
        // 1-based, like the line numbers beside it.
        let key = format!("trigger.http[{}]", index + 1);
        let trigger_span = trigger.span();
        let trigger = trigger.into_inner();

        let route = translate_route(source, &key, base, trigger.route, &mut seen)?;

        let component_key = format!("{key}.component");
        if let Some(response) = trigger.static_response {
            let refused = if let Some(component) = &trigger.component {
                let message = "a trigger answers with a component or a `static_response`, not both";
                Some((component.span(), component_key, message))
            } else if let Some(executor) = &trigger.executor {
                let message = "a static response runs no component; leave `executor` out";
                Some((executor.span(), format!("{key}.executor"), message))
            } else {
                None
            };
            if let Some((span, key, message)) = refused {
                return Err(source.invalid(Some(source.key_at(&span)), key, message));
            }
            let response = translate_static_response(source, &key, response)?;
            if let Some(pattern) = route {
                out.routes.push(Route {
                    pattern,
                    target: RouteTarget::Static(response),
                    filters: Vec::new(),
                });
            }
            continue;
        }
        let Some(component) = trigger.component else {
            let message = "missing; name a component defined under [component], give one inline, or give a `static_response`";
            return Err(source.invalid(Some(source.at(&trigger_span)), component_key, message));
        };
        let component_span = component.span();
        let id = match component.into_inner() {
            StringOr::String(id) => {
                if !defined.contains(&id) {
                    let message = if defined.is_empty() {
                        format!("no component named \"{id}\"; the manifest defines no components")
                    } else {
                        format!(
                            "no component named \"{id}\"; defined: {}",
                            defined.join(", ")
                        )
                    };
                    let location = Some(source.key_at(&component_span));
                    return Err(source.invalid(location, component_key, message));
                }
                Spanned::new(component_span.clone(), id)
            }
            StringOr::Table(component) => {
                let fallback = Spanned::new(
                    component_span.clone(),
                    format!("inline-component-{}", index + 1),
                );
                let inline = InlineComponent::new(
                    source,
                    &key,
                    (trigger.id, fallback),
                    *component,
                    defined,
                    &out.inline,
                )?;
                let id = inline.id.clone();
                out.inline.push(inline);
                id
            }
        };

        let (explicit, executor_span, wagi) = match trigger.executor {
            None => (None, None, None),
            Some(executor) => {
                let span = executor.span();
                let executor = executor.into_inner();
                let wagi = match executor.kind {
                    SpinExecutor::Http => {
                        let extra = [
                            ("argv", &executor.argv),
                            ("entrypoint", &executor.entrypoint),
                        ];
                        if let Some((name, Some(value))) = extra.iter().find(|(_, v)| v.is_some()) {
                            return Err(source.invalid(
                                Some(source.key_at(&value.span())),
                                format!("{key}.executor.{name}"),
                                format!("`{name}` is for the wagi executor; an http component exports its handler"),
                            ));
                        }
                        None
                    }
                    SpinExecutor::Wagi => {
                        if let Some(entrypoint) = &executor.entrypoint
                            && entrypoint.get_ref().trim().is_empty()
                        {
                            return Err(source.invalid(
                                Some(source.key_at(&entrypoint.span())),
                                format!("{key}.executor.entrypoint"),
                                "must name the function to call, such as \"_start\"",
                            ));
                        }
                        Some(WagiOptions {
                            argv: executor.argv.map_or_else(
                                || WagiOptions::SPIN_ARGV.to_owned(),
                                Spanned::into_inner,
                            ),
                            entrypoint: executor.entrypoint.map_or_else(
                                || WagiOptions::ENTRYPOINT.to_owned(),
                                Spanned::into_inner,
                            ),
                        })
                    }
                };
                let executor = match executor.kind {
                    SpinExecutor::Http => Executor::WasiHttp,
                    SpinExecutor::Wagi => Executor::Wagi,
                };
                (Some(executor), Some(span), wagi)
            }
        };
        let kind = explicit.unwrap_or(Executor::WasiHttp);
        match out.executors.get_mut(id.get_ref()) {
            Some(choice) if choice.kind != kind => {
                let span = executor_span.unwrap_or(component_span);
                let message = format!(
                    "component \"{}\" runs as `{}` for {}, and as `{}` here; Tern runs a component one way for all its triggers",
                    id.get_ref(),
                    spin_executor_name(choice.kind),
                    choice.trigger,
                    spin_executor_name(kind)
                );
                let location = Some(source.key_at(&span));
                return Err(source.invalid(location, format!("{key}.executor"), message));
            }
            Some(choice) if wagi.is_some() && choice.wagi.is_some() && choice.wagi != wagi => {
                let span = executor_span.unwrap_or(component_span);
                let message = format!(
                    "component \"{}\" runs with another `argv` or `entrypoint` for {}; Tern runs a component one way for all its triggers",
                    id.get_ref(),
                    choice.trigger,
                );
                let location = Some(source.key_at(&span));
                return Err(source.invalid(location, format!("{key}.executor"), message));
            }
            Some(choice) => {
                choice.explicit = choice.explicit.or(explicit);
                choice.wagi = choice.wagi.take().or(wagi);
            }
            None => {
                let choice = ExecutorChoice {
                    kind,
                    explicit,
                    trigger: key.clone(),
                    wagi,
                };
                out.executors.insert(id.get_ref().clone(), choice);
            }
        }

        if let Some(pattern) = route {
            out.routes.push(Route {
                pattern,
                target: RouteTarget::Component(id.into_inner()),
                filters: Vec::new(),
            });
        }
    }
    Ok(out)
}

/// Checks the `[[trigger.redis]]` entries: each names a channel, a
/// component defined under `[component]`, and a `redis://` address, its
/// own or `[application.trigger.redis]`'s (`default_address`).
fn translate_redis_triggers(
    source: &Source,
    default_address: Option<Spanned<String>>,
    triggers: Vec<Spanned<RawRedisTrigger>>,
    defined: &[String],
    inline: &mut Vec<InlineComponent>,
) -> Result<Vec<RedisTrigger>, ManifestError> {
    let mut out = Vec::with_capacity(triggers.len());
    for (index, trigger) in triggers.into_iter().enumerate() {
        let key = format!("trigger.redis[{}]", index + 1);
        let trigger_span = trigger.span();
        let trigger = trigger.into_inner();
        let at = |span: &std::ops::Range<usize>| Some(source.key_at(span));

        if trigger.channel.get_ref().is_empty() {
            let message = "must not be empty";
            return Err(source.invalid(
                at(&trigger.channel.span()),
                format!("{key}.channel"),
                message,
            ));
        }
        let component_span = trigger.component.span();
        let component = match trigger.component.into_inner() {
            StringOr::String(id) if defined.contains(&id) => id,
            StringOr::String(id) => {
                let message = format!(
                    "no component named \"{id}\"; defined: {}",
                    defined.join(", ")
                );
                return Err(source.invalid(
                    at(&component_span),
                    format!("{key}.component"),
                    message,
                ));
            }
            StringOr::Table(component) => {
                let fallback = Spanned::new(
                    component_span.clone(),
                    format!("inline-redis-component-{}", index + 1),
                );
                let made = InlineComponent::new(
                    source,
                    &key,
                    (trigger.id, fallback),
                    *component,
                    defined,
                    inline,
                )?;
                let id = made.id.get_ref().clone();
                inline.push(made);
                id
            }
        };
        let (address, address_key) = match (trigger.address, &default_address) {
            (Some(address), _) => (address, format!("{key}.address")),
            (None, Some(address)) => (
                address.clone(),
                "application.trigger.redis.address".to_owned(),
            ),
            (None, None) => {
                let message = "missing; give `address = \"redis://HOST:PORT\"` here or under [application.trigger.redis]";
                return Err(source.invalid(
                    Some(source.at(&trigger_span)),
                    format!("{key}.address"),
                    message,
                ));
            }
        };
        let written = address.get_ref();
        let problem = if written.contains("{{") {
            Some("variables in a Redis address are not supported yet; write the address")
        } else if written.starts_with("rediss://") {
            Some("Redis over TLS (`rediss://`) is not supported yet")
        } else if !written.starts_with("redis://") {
            Some("must be a `redis://HOST:PORT` address")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(source.invalid(at(&address.span()), address_key, problem));
        }
        out.push(RedisTrigger {
            address: address.into_inner(),
            channel: trigger.channel.into_inner(),
            component,
        });
    }
    Ok(out)
}

/// A route already declared, for finding duplicates: the pattern, where it
/// is written and its trigger (`trigger.http[N]`).
type SeenRoute = (RoutePattern, Location, String);

/// A trigger's `route` (under `key`, the trigger's) with `base` prefixed,
/// `:name` segments read, and checked against the routes `seen` before;
/// `None` for a private route.
fn translate_route(
    source: &Source,
    key: &str,
    base: &str,
    route: Spanned<StringOr<RawPrivateRoute>>,
    seen: &mut Vec<SeenRoute>,
) -> Result<Option<RoutePattern>, ManifestError> {
    let trigger = key;
    let key = format!("{key}.route");
    let span = route.span();
    let location = source.key_at(&span);
    let path = match route.into_inner() {
        StringOr::String(path) => path,
        StringOr::Table(private) if *private.private.get_ref() => return Ok(None),
        StringOr::Table(private) => {
            let location = Some(source.key_at(&private.private.span()));
            let message = "`private = false` is not a route; give a path such as \"/hello\", or `{ private = true }` to serve the component to nobody";
            return Err(source.invalid(location, key, message));
        }
    };
    let invalid = |message: String| source.invalid(Some(location), &key, message);
    RoutePattern::parse_with_params(&path).map_err(invalid)?;
    // Spin serves `/` under a base at the base itself.
    let full = if path == "/" && !base.is_empty() {
        base.to_owned()
    } else {
        format!("{base}{path}")
    };
    let pattern = RoutePattern::parse_with_params(&full).map_err(invalid)?;
    let first = seen
        .iter()
        .find(|(seen, _, _)| seen.matches_same_paths(&pattern));
    if let Some((first, at, by)) = first {
        let message = if *first == pattern {
            format!(
                "duplicate route \"{pattern}\"; first declared by {by} on line {}",
                at.line
            )
        } else {
            format!(
                "duplicate route \"{pattern}\": {by} declares \"{first}\" on line {}, which matches the same paths",
                at.line
            )
        };
        return Err(source.invalid(Some(location), key, message));
    }
    seen.push((pattern.clone(), location, trigger.to_owned()));
    Ok(Some(pattern))
}

/// Whether `path` has a Spin `:name` segment.
fn has_parameter(path: &str) -> bool {
    path.split('/').any(|segment| segment.starts_with(':'))
}

/// A trigger's `static_response` (the trigger under `key`) checked: a
/// final status (200 by default), header fields HTTP can carry, and no
/// body where the status allows none.
fn translate_static_response(
    source: &Source,
    key: &str,
    raw: RawStaticResponse,
) -> Result<StaticResponse, ManifestError> {
    let key = format!("{key}.static_response");
    let status = match &raw.status_code {
        None => 200,
        Some(code) => match u16::try_from(*code.get_ref()) {
            Ok(status @ 200..=599) => status,
            _ => {
                let message = format!(
                    "{} is not a final HTTP status; give one from 200 to 599",
                    code.get_ref()
                );
                let location = Some(source.key_at(&code.span()));
                return Err(source.invalid(location, format!("{key}.status_code"), message));
            }
        },
    };
    if raw.headers.len() > MAX_STATIC_HEADERS {
        let message = format!(
            "{} headers; a static response has at most {MAX_STATIC_HEADERS}",
            raw.headers.len()
        );
        return Err(source.invalid(None, format!("{key}.headers"), message));
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in raw.headers {
        let header_key = format!("{key}.headers.{}", name.get_ref());
        let written = name.get_ref();
        let lowercase = written.to_ascii_lowercase();
        let problem = if written.is_empty() || !written.bytes().all(is_token_byte) {
            Some(format!(
                "\"{}\" is not a header name; use letters, digits and `-`",
                written.escape_debug()
            ))
        } else if crate::FRAMING_HEADERS.contains(&lowercase.as_str()) {
            Some(format!(
                "`{lowercase}` is the server's to set: it frames the response itself; leave it out"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(source.invalid(Some(source.at(&name.span())), header_key, problem));
        }
        if let Some(bad) = value
            .get_ref()
            .chars()
            .find(|c| c.is_control() && *c != '\t')
        {
            let message = format!(
                "the value holds the control character {}; a header value is one line of text",
                bad.escape_unicode()
            );
            let location = Some(source.key_at(&value.span()));
            return Err(source.invalid(location, header_key, message));
        }
        headers.push((name.into_inner(), value.into_inner()));
    }
    let body = match raw.body {
        Some(body) if matches!(status, 204 | 304) && !body.get_ref().is_empty() => {
            let message = format!(
                "a {status} response has no body; remove `body`, or give another `status_code`"
            );
            let location = Some(source.key_at(&body.span()));
            return Err(source.invalid(location, format!("{key}.body"), message));
        }
        Some(body) => body.into_inner(),
        None => String::new(),
    };
    Ok(StaticResponse {
        status,
        headers,
        body,
    })
}

/// Whether `byte` may be part of a header name (an RFC 9110 token).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The name Spin gives an executor in `executor = { type = "..." }`.
fn spin_executor_name(executor: Executor) -> &'static str {
    match executor {
        Executor::WasiHttp => "http",
        Executor::Wagi => "wagi",
    }
}

/// A Spin component (a `[component.ID]` table, or one given inline, under
/// `key`) made into Tern's, what only Spin has checked here. Its executor
/// is left for the triggers to set.
fn translate_component(
    source: &Source,
    key: &str,
    raw: RawSpinComponent,
) -> Result<RawComponent, ManifestError> {
    let refuse = |span: &Range<usize>, name: &str, message: &str| {
        source.invalid(Some(source.key_at(span)), format!("{key}.{name}"), message)
    };

    let source_span = raw.source.span();
    let (path, download) = match raw.source.into_inner() {
        StringOr::String(path) => (path, None),
        StringOr::Table(table) => {
            let download = translate_download(source, key, &source_span, *table)?;
            if let Some(build) = &raw.build {
                let message = "a component downloaded from `url` has nothing to build; remove `build`, or give the path of the file it makes as `source`";
                return Err(refuse(&build.command.span(), "build", message));
            }
            (download.url.clone(), Some(download))
        }
    };
    if let Some(hosts) = &raw.allowed_http_hosts {
        let message = "Spin 1's `allowed_http_hosts` is gone in manifest version 2; use `allowed_outbound_hosts`";
        return Err(refuse(&hosts.span(), "allowed_http_hosts", message));
    }
    if let Some(models) = &raw.ai_models
        && !models.get_ref().is_empty()
    {
        let message = "`ai_models` is not supported yet; see WASI-NN";
        return Err(refuse(&models.span(), "ai_models", message));
    }
    if let Some(dependencies) = &raw.dependencies
        && !dependencies.get_ref().is_empty()
    {
        let message =
            "component dependencies are not supported yet; compose them first with `tern compose`";
        return Err(refuse(&dependencies.span(), "dependencies", message));
    }
    let (files, staged_files) = translate_all_files(source, key, raw.files, raw.exclude_files)?;
    let build = raw
        .build
        .map(|build| translate_build(source, key, build))
        .transpose()?;

    Ok(RawComponent {
        source: Spanned::new(source_span, path),
        download,
        executor: None,
        environment: raw.environment,
        files,
        limits: RawLimits::default(),
        instances: None,
        key_value_stores: raw.key_value_stores,
        sqlite_databases: raw.sqlite_databases,
        // Spin's `ai_models` name its LLM interface, not WASI-NN: a list
        // that is not empty is refused above.
        nn_models: Vec::new(),
        nn_load_bytes: false,
        allowed_outbound_hosts: raw.allowed_outbound_hosts,
        variables: raw.variables,
        build,
        staged_files,
        wagi: None,
    })
}

/// A component's `files` and `exclude_files` (the component under `key`):
/// mounts as they are when every entry is a directory, or else one mount
/// of the files gathered (see [`crate::spin_files`]) and the files it holds.
fn translate_all_files(
    source: &Source,
    key: &str,
    files: Vec<Spanned<StringOr<RawFileMount>>>,
    exclude: Option<Spanned<Vec<String>>>,
) -> Result<(Vec<RawFileMount>, Option<Vec<std::path::PathBuf>>), ManifestError> {
    let entry_key = |index: usize| format!("{key}.files[{}]", index + 1);
    let excluded = exclude.filter(|e| !e.get_ref().is_empty());
    let plain = |entry: &Spanned<StringOr<RawFileMount>>| match entry.get_ref() {
        StringOr::Table(_) => true,
        StringOr::String(glob) => glob_directory(glob).is_some(),
    };
    if excluded.is_none() && files.iter().all(plain) {
        let mounts = files.into_iter().filter_map(directory_mount).collect();
        return Ok((mounts, None));
    }

    let invalid = |span: &Range<usize>, key: String, message: String| {
        source.invalid(Some(source.key_at(span)), key, message)
    };
    let span = files
        .first()
        .map(Spanned::span)
        .or_else(|| excluded.as_ref().map(Spanned::span))
        .unwrap_or_default();
    let mut entries = Vec::with_capacity(files.len());
    for (index, entry) in files.into_iter().enumerate() {
        let entry_span = entry.span();
        let (checked, made) = match entry.into_inner() {
            StringOr::String(pattern) => (
                vec![pattern.clone()],
                glob_matcher(&pattern).map(spin_files::Entry::Pattern),
            ),
            StringOr::Table(mount) => {
                let (from, to) = (mount.source.into_inner(), mount.destination.into_inner());
                let made = match spin_files::pattern_problem(to.trim_start_matches('/')) {
                    _ if !to.starts_with('/') => {
                        Err(format!("destination \"{to}\" must start with `/`"))
                    }
                    Some(problem) => Err(format!("destination {problem}")),
                    None => Ok(spin_files::Entry::Directory {
                        source: from.clone(),
                        destination: to,
                    }),
                };
                (vec![from], made)
            }
        };
        let made = match checked.iter().find_map(|p| spin_files::pattern_problem(p)) {
            Some(problem) => Err(problem),
            None => made,
        };
        entries.push(made.map_err(|m| invalid(&entry_span, entry_key(index), m))?);
    }
    let mut exclusions = globset::GlobSetBuilder::new();
    if let Some(excluded) = &excluded {
        for pattern in excluded.get_ref() {
            let made = match spin_files::pattern_problem(pattern) {
                Some(problem) => Err(problem),
                None => glob_matcher(pattern).map(|m| m.glob().clone()),
            };
            let glob =
                made.map_err(|m| invalid(&excluded.span(), format!("{key}.exclude_files"), m))?;
            exclusions.add(glob);
        }
    }
    let exclusions = exclusions
        .build()
        .map_err(|e| invalid(&span, format!("{key}.exclude_files"), e.to_string()))?;
    let base = source
        .path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name: String = key
        .trim_start_matches("component.")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let staged = spin_files::stage(base, &name, &entries, &exclusions)
        .map_err(|m| invalid(&span, format!("{key}.files"), m))?;
    let mount = RawFileMount {
        source: Spanned::new(span.clone(), staged.dir),
        destination: Spanned::new(span, "/".to_owned()),
    };
    Ok((vec![mount], Some(staged.sources)))
}

/// `pattern` as Spin reads a `files` glob: `*` and `?` stay within one
/// path segment, `**` crosses them.
fn glob_matcher(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| format!("\"{pattern}\" is not a glob pattern: {}", e.kind()))
}

/// A `source` table (of the component under `key`, at `span`): a download,
/// its URL and digest checked. Registry packages are refused.
fn translate_download(
    source: &Source,
    key: &str,
    span: &Range<usize>,
    table: RawSourceTable,
) -> Result<Download, ManifestError> {
    let key = format!("{key}.source");
    let at = |span: &Range<usize>| Some(source.key_at(span));
    if table.registry.is_some() || table.package.is_some() {
        let message = "registry sources are not supported: Tern does not speak OCI registries yet; give the file's path, or its `url` and `digest`";
        return Err(source.invalid(at(span), key, message));
    }
    let Some(url) = table.url else {
        let message = "a source table needs `url` and `digest`; or give the wasm file's path";
        return Err(source.invalid(at(span), key, message));
    };
    if let Some(problem) = url_problem(url.get_ref()) {
        return Err(source.invalid(at(&url.span()), format!("{key}.url"), problem));
    }
    let Some(digest) = table.digest else {
        let message = "missing; a download is checked against its digest: add `digest = \"sha256:...\"` (`sha256sum FILE` prints it)";
        return Err(source.invalid(at(span), format!("{key}.digest"), message));
    };
    let sha256 = parse_digest(digest.get_ref())
        .map_err(|problem| source.invalid(at(&digest.span()), format!("{key}.digest"), problem))?;
    Ok(Download {
        url: url.into_inner(),
        sha256,
    })
}

/// One `files` entry as a mount, when it is a table or a `DIR/**/*` glob
/// (which mounts DIR at `/DIR`, as Spin places its files).
fn directory_mount(entry: Spanned<StringOr<RawFileMount>>) -> Option<RawFileMount> {
    let span = entry.span();
    match entry.into_inner() {
        StringOr::Table(mount) => Some(*mount),
        StringOr::String(glob) => glob_directory(&glob).map(|dir| RawFileMount {
            destination: Spanned::new(span.clone(), format!("/{dir}")),
            source: Spanned::new(span, dir),
        }),
    }
}

/// The directory a `files` glob names when it is `DIR/**/*` or `DIR/**`,
/// DIR relative, without glob characters or `..`; `.` segments dropped.
fn glob_directory(glob: &str) -> Option<String> {
    let dir = glob
        .strip_suffix("/**/*")
        .or_else(|| glob.strip_suffix("/**"))?;
    if dir.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = dir
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    let plain = |part: &&str| *part != ".." && !part.contains(['*', '?', '[', ']', '{', '}', '\\']);
    (!parts.is_empty() && parts.iter().all(plain)).then(|| parts.join("/"))
}

/// A component's `build` table (the component under `key`): one command.
fn translate_build(
    source: &Source,
    key: &str,
    raw: RawSpinBuild,
) -> Result<RawBuild, ManifestError> {
    let span = raw.command.span();
    let problem = match raw.command.into_inner() {
        toml::Value::String(command) => {
            return Ok(RawBuild {
                command: Spanned::new(span, command),
                workdir: raw.workdir,
                watch: raw.watch,
            });
        }
        toml::Value::Array(_) => {
            "a list of commands is not supported yet; join them with `&&`".to_owned()
        }
        other => format!("must be a string, found {}", other.type_str()),
    };
    let location = Some(source.key_at(&span));
    Err(source.invalid(location, format!("{key}.build.command"), problem))
}

/// `error`, its key renamed when it is under an inline component's id
/// (`component.ID...`) to where that component is written
/// (`trigger.http[N].component...`); `inline` pairs ids with those keys.
fn spin_keys(error: ManifestError, inline: &[(String, String)]) -> ManifestError {
    match error {
        ManifestError::Invalid {
            path,
            location,
            key,
            message,
        } => {
            let renamed = inline.iter().find_map(|(id, spin_key)| {
                let rest = key.strip_prefix("component.")?.strip_prefix(id.as_str())?;
                (rest.is_empty() || rest.starts_with('.')).then(|| format!("{spin_key}{rest}"))
            });
            ManifestError::Invalid {
                path,
                location,
                key: renamed.unwrap_or(key),
                message,
            }
        }
        other => other,
    }
}

/// A `spin.toml` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawSpinManifest {
    /// Checked on its own first, by [`check_version`].
    #[serde(rename = "spin_manifest_version")]
    _version: IgnoredAny,
    application: Option<RawApplication>,
    #[serde(default)]
    variables: BTreeMap<Spanned<String>, Spanned<RawVariable>>,
    #[serde(default)]
    trigger: Triggers,
    #[serde(default)]
    component: BTreeMap<Spanned<String>, RawSpinComponent>,
}

/// The `[[trigger.TYPE]]` entries, by type.
type Triggers = ByTriggerType<Vec<Spanned<RawHttpTrigger>>, Vec<Spanned<RawRedisTrigger>>>;

/// The `[application.trigger.TYPE]` tables, by type.
type AppTriggers = ByTriggerType<RawAppHttp, Spanned<RawAppRedis>>;

/// The `[application]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with `name = \"...\"`")]
struct RawApplication {
    name: Spanned<String>,
    version: Option<String>,
    description: Option<String>,
    /// Accepted, not used.
    #[serde(default, rename = "authors")]
    _authors: Vec<String>,
    #[serde(default)]
    trigger: AppTriggers,
}

/// `[application.trigger.http]`: settings for every HTTP trigger.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table such as `{ base = \"/\" }`")]
struct RawAppHttp {
    /// Prefixed to every route.
    base: Option<Spanned<String>>,
}

/// `[application.trigger.redis]`: settings for every Redis trigger.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ address = \"redis://localhost:6379\" }`"
)]
struct RawAppRedis {
    /// The Redis server every Redis trigger subscribes on, by default.
    address: Option<Spanned<String>>,
}

/// A table of trigger types, `[[trigger.TYPE]]` or `[application.trigger.TYPE]`:
/// `http` read as `H`, `redis` as `R`, any other type only named, for its
/// error.
struct ByTriggerType<H, R> {
    http: Option<H>,
    redis: Option<R>,
    /// The other types, as written.
    unknown: Vec<Spanned<String>>,
}

impl<H, R> Default for ByTriggerType<H, R> {
    fn default() -> Self {
        ByTriggerType {
            http: None,
            redis: None,
            unknown: Vec::new(),
        }
    }
}

impl<'de, H: Deserialize<'de>, R: Deserialize<'de>> Deserialize<'de> for ByTriggerType<H, R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads each type's value as that type's Rust type.
        struct ByTypeVisitor<H, R>(PhantomData<(H, R)>);

        impl<'de, H: Deserialize<'de>, R: Deserialize<'de>> Visitor<'de> for ByTypeVisitor<H, R> {
            type Value = ByTriggerType<H, R>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a table of trigger types, such as `http`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut triggers = ByTriggerType::default();
                while let Some(kind) = map.next_key::<Spanned<String>>()? {
                    match kind.get_ref().as_str() {
                        "http" => triggers.http = Some(map.next_value()?),
                        "redis" => triggers.redis = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            triggers.unknown.push(kind);
                        }
                    }
                }
                Ok(triggers)
            }
        }

        deserializer.deserialize_map(ByTypeVisitor(PhantomData))
    }
}

/// A `[[trigger.http]]` entry.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with `route` and `component`"
)]
struct RawHttpTrigger {
    /// Names the trigger, and its inline component.
    id: Option<Spanned<String>>,
    route: Spanned<StringOr<RawPrivateRoute>>,
    /// Optional in Spin when `static_response` is given.
    component: Option<Spanned<StringOr<RawSpinComponent>>>,
    executor: Option<Spanned<RawExecutor>>,
    /// A response to answer with instead of a component.
    static_response: Option<RawStaticResponse>,
}

/// A trigger's `static_response` table; every key is optional.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ status_code = 200, body = \"ok\" }`"
)]
struct RawStaticResponse {
    /// Read wide, so that a status out of range gets Tern's message.
    status_code: Option<Spanned<i64>>,
    #[serde(default)]
    headers: BTreeMap<Spanned<String>, Spanned<String>>,
    body: Option<Spanned<String>>,
}

/// A `[[trigger.redis]]` entry.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with `channel` and `component`"
)]
struct RawRedisTrigger {
    /// Names the trigger, and its inline component.
    id: Option<Spanned<String>>,
    /// The channel whose messages go to the component.
    channel: Spanned<String>,
    component: Spanned<StringOr<RawSpinComponent>>,
    /// The Redis server, when not `[application.trigger.redis]`'s.
    address: Option<Spanned<String>>,
}

/// `route = { private = true }`: the component is served to nobody.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ private = true }`"
)]
struct RawPrivateRoute {
    private: Spanned<bool>,
}

/// A trigger's `executor` table.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ type = \"http\" }` or `{ type = \"wagi\" }`"
)]
struct RawExecutor {
    #[serde(rename = "type")]
    kind: SpinExecutor,
    argv: Option<Spanned<String>>,
    entrypoint: Option<Spanned<String>>,
}

/// An executor `type`.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "`http` or `wagi`")]
enum SpinExecutor {
    /// A component handling HTTP requests.
    Http,
    /// A WASI command module speaking CGI over stdio.
    Wagi,
}

/// A `[component.ID]` table, or a component given inline in a trigger.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with `source = \"...\"`")]
struct RawSpinComponent {
    /// Accepted, not used.
    #[serde(rename = "description")]
    _description: Option<String>,
    source: Spanned<StringOr<RawSourceTable>>,
    #[serde(default)]
    files: Vec<Spanned<StringOr<RawFileMount>>>,
    exclude_files: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<Spanned<String>>,
    /// Spin 1's; refused.
    allowed_http_hosts: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    key_value_stores: Vec<Spanned<String>>,
    #[serde(default)]
    sqlite_databases: Vec<Spanned<String>>,
    ai_models: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    environment: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    variables: BTreeMap<Spanned<String>, Spanned<String>>,
    build: Option<RawSpinBuild>,
    /// Tool-specific metadata (`[component.ID.tool.NAME]`): accepted, not read.
    #[serde(rename = "tool")]
    _tool: Option<IgnoredAny>,
    dependencies: Option<Spanned<toml::Table>>,
    /// Accepted, not used: there are no dependencies to pass it to.
    #[serde(rename = "dependencies_inherit_configuration")]
    _dependencies_inherit_configuration: Option<bool>,
}

/// A `source` given as a table: a download, or a registry package
/// (refused).
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ url = \"...\", digest = \"sha256:...\" }`"
)]
struct RawSourceTable {
    url: Option<Spanned<String>>,
    digest: Option<Spanned<String>>,
    registry: Option<String>,
    package: Option<String>,
    #[serde(rename = "version")]
    _version: Option<String>,
}

/// A component's `build` table.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as `{ command = \"...\" }`"
)]
struct RawSpinBuild {
    /// A string, or (refused) a list of strings.
    command: Spanned<toml::Value>,
    workdir: Option<Spanned<String>>,
    #[serde(default)]
    watch: Vec<Spanned<String>>,
}

/// A value written either as a string or as a table, such as `route =
/// "/hello"` or `route = { private = true }`.
enum StringOr<T> {
    /// As written.
    String(String),
    /// Boxed: some tables are large.
    Table(Box<T>),
}

/// What a [`StringOr`] of a table expects, for serde's messages.
trait Expecting {
    /// Such as "a route such as \"/hello\", or `{ private = true }`".
    const EXPECTING: &'static str;
}

impl Expecting for RawPrivateRoute {
    const EXPECTING: &'static str = "a route such as \"/hello\", or `{ private = true }`";
}

impl Expecting for RawSpinComponent {
    const EXPECTING: &'static str = "a component id such as \"hello\", or a component table such as `{ source = \"hello.wasm\" }`";
}

impl Expecting for RawSourceTable {
    const EXPECTING: &'static str = "a path such as \"hello.wasm\", or a table such as `{ url = \"...\", digest = \"sha256:...\" }`";
}

impl Expecting for RawFileMount {
    const EXPECTING: &'static str = "a glob such as \"static/**/*\", or a table such as `{ source = \"...\", destination = \"/...\" }`";
}

impl<'de, T: Deserialize<'de> + Expecting> Deserialize<'de> for StringOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Takes a string as it is and a table as a `T`.
        struct StringOrVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de> + Expecting> Visitor<'de> for StringOrVisitor<T> {
            type Value = StringOr<T>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(T::EXPECTING)
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(StringOr::String(value.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Self::Value, E> {
                Ok(StringOr::String(value))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let table = T::deserialize(MapAccessDeserializer::new(map))?;
                Ok(StringOr::Table(Box::new(table)))
            }
        }

        deserializer.deserialize_any(StringOrVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_directory_globs_become_mounts() {
        for (glob, dir) in [
            ("static/**/*", Some("static")),
            ("static/**", Some("static")),
            ("./static/**/*", Some("static")),
            ("assets/img/**/*", Some("assets/img")),
            ("assets//img/./**", Some("assets/img")),
            ("static", None),
            ("static/*", None),
            ("static/*.html", None),
            ("**/*", None),
            ("./**/*", None),
            ("/srv/**/*", None),
            ("../shared/**/*", None),
            ("a/../b/**/*", None),
            ("st*tic/**/*", None),
            ("{a,b}/**/*", None),
            ("static/**/*.html", None),
        ] {
            assert_eq!(glob_directory(glob).as_deref(), dir, "{glob}");
        }
    }

    #[test]
    fn route_parameters_are_found() {
        assert!(has_parameter("/users/:id"));
        assert!(has_parameter("/:tenant/..."));
        assert!(!has_parameter("/users/..."));
        assert!(!has_parameter("/a:b"));
    }

    #[test]
    fn inline_component_errors_name_the_trigger() {
        let error = |key: &str| ManifestError::Invalid {
            path: "spin.toml".into(),
            location: None,
            key: key.to_owned(),
            message: "m".to_owned(),
        };
        let inline = [(
            "inline-component-2".to_owned(),
            "trigger.http[2].component".to_owned(),
        )];
        for (key, renamed) in [
            (
                "component.inline-component-2.source",
                "trigger.http[2].component.source",
            ),
            ("component.inline-component-2", "trigger.http[2].component"),
            (
                "component.inline-component-20.source",
                "component.inline-component-20.source",
            ),
            ("component.hello.source", "component.hello.source"),
            ("variables.token", "variables.token"),
        ] {
            match spin_keys(error(key), &inline) {
                ManifestError::Invalid { key, .. } => assert_eq!(key, renamed),
                other => panic!("{other}"),
            }
        }
    }
}
