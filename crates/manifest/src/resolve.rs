//! Turns the manifest as written into a [`Manifest`]: checks every value,
//! resolves paths against the manifest's directory and checks they exist
//! and stay inside it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component as PathPart, Path, PathBuf};

use toml::Spanned;

use crate::error::Source;
use crate::nn::resolve_models;
use crate::raw::{
    RawBuild, RawComponent, RawFileMount, RawFilter, RawInstances, RawLimits, RawManifest,
    RawRoute, RawUpstream, RawVariable, RawVersion,
};
use crate::variables::is_valid_name;
use crate::{
    App, Build, ByteSize, Component, ComponentSource, FileMount, InstancesConfig, LimitsConfig,
    LoadOptions, Location, Manifest, ManifestError, NnModel, OutboundHost, OutboundTemplate,
    OutsideAppDir, OutsideGrant, Route, RoutePattern, RouteTarget, Template, Variable,
};

/// The only `manifest_version` this Tern reads.
const MANIFEST_VERSION: i64 = 1;

/// Less than this and not even a small guest can instantiate.
const MIN_MEMORY: ByteSize = ByteSize(64 << 10);

pub(crate) fn check_version(source: &Source, raw: RawVersion) -> Result<(), ManifestError> {
    let key = "manifest_version";
    let Some(version) = raw.manifest_version else {
        let message = format!("missing; add `manifest_version = {MANIFEST_VERSION}` at the top");
        return Err(source.invalid(None, key, message));
    };
    let message = match version.get_ref().as_integer() {
        Some(MANIFEST_VERSION) => return Ok(()),
        Some(n) => format!("unsupported version {n}; this Tern reads version {MANIFEST_VERSION}"),
        None => format!(
            "must be the integer {MANIFEST_VERSION}, found {}",
            version.get_ref()
        ),
    };
    Err(source.invalid(Some(source.key_at(&version.span())), key, message))
}

pub(crate) fn resolve(
    source: &Source,
    raw: RawManifest,
    options: LoadOptions,
) -> Result<Manifest, ManifestError> {
    let path = source.path.to_owned();
    // Sources join onto the directory as given, so `tern.toml` gives `hello.wasm`.
    let base = path.parent().unwrap_or(Path::new("")).to_owned();
    let dir = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base.clone()
    };

    let Some(app) = raw.app else {
        return Err(source.invalid(None, "app", "missing; add an [app] table with a name"));
    };
    if app.name.get_ref().trim().is_empty() {
        let location = source.key_at(&app.name.span());
        return Err(source.invalid(Some(location), "app.name", "must not be empty"));
    }
    let mut hosts = Vec::new();
    for host in app.hosts.map(Spanned::into_inner).unwrap_or_default() {
        let name = host.get_ref().to_ascii_lowercase();
        if !is_host_pattern(&name) {
            let location = source.key_at(&host.span());
            let message = format!(
                "`{}` is not a host name (such as `shop.example.com`, or `*.shop.example.com` for its subdomains)",
                host.get_ref()
            );
            return Err(source.invalid(Some(location), "app.hosts", &message));
        }
        hosts.push(name);
    }
    let app = App {
        name: app.name.into_inner(),
        description: app.description,
        hosts,
        version: None,
    };

    // Where each route is written, for errors found later.
    let route_locations: Vec<Location> = raw
        .route
        .iter()
        .map(|route| source.key_at(&route.path.span()))
        .collect();
    let routes = match raw.resolved_routes {
        Some(routes) => routes,
        None => resolve_routes(
            source,
            raw.route,
            &raw.component,
            &raw.upstream,
            &raw.filter,
        )?,
    };
    let mut upstreams = crate::proxy::resolve_upstreams(source, raw.upstream)?;
    // A route's inline URL is an upstream named by that URL.
    for (route, location) in routes.iter().zip(&route_locations) {
        if let RouteTarget::Upstream(upstream) = &route.target
            && !upstreams.contains_key(upstream)
        {
            let mut parsed =
                crate::Upstream::parse_url(upstream, upstream).expect("checked by resolve_routes");
            parsed.location = *location;
            upstreams.insert(upstream.clone(), parsed);
        }
    }
    let variables = resolve_variables(source, raw.variables)?;

    let mut boundary = Boundary::new(&dir, options.allow_outside_app_dir);
    let nn_models = resolve_models(source, &base, raw.nn.models, &mut boundary)?;
    let filters =
        crate::proxy::resolve_filters(source, &base, raw.filter, &upstreams, &mut boundary)?;
    let declared = Declared {
        variables: &variables,
        nn_models: &nn_models,
    };
    // Sources some component's build makes: another component may serve the
    // same binary without a build entry of its own.
    let built: Vec<String> = raw
        .component
        .values()
        .filter(|c| c.build.is_some())
        .map(|c| c.source.get_ref().clone())
        .collect();
    let mut components = BTreeMap::new();
    for (id, component) in raw.component {
        let built_elsewhere = built.contains(component.source.get_ref());
        let component = resolve_component(
            source,
            &base,
            id,
            component,
            &declared,
            SourceRules {
                options,
                built_elsewhere,
            },
            &mut boundary,
        )?;
        components.insert(component.id.clone(), component);
    }

    Ok(Manifest {
        path,
        dir,
        app,
        routes,
        components,
        variables,
        nn_models,
        upstreams,
        filters,
        outside_app_dir: boundary.outside,
        redis_triggers: Vec::new(),
        spin: false,
    })
}

fn resolve_routes(
    source: &Source,
    raw: Vec<RawRoute>,
    components: &BTreeMap<Spanned<String>, RawComponent>,
    upstreams: &BTreeMap<Spanned<String>, RawUpstream>,
    filters: &BTreeMap<Spanned<String>, RawFilter>,
) -> Result<Vec<Route>, ManifestError> {
    if raw.is_empty() {
        return Err(source.invalid(None, "route", "the manifest declares no routes"));
    }
    let mut routes = Vec::with_capacity(raw.len());
    let mut seen: Vec<(RoutePattern, Location)> = Vec::with_capacity(raw.len());
    for (index, route) in raw.into_iter().enumerate() {
        // 1-based, like the line numbers beside it.
        let key = format!("route[{}]", index + 1);

        let location = source.key_at(&route.path.span());
        let pattern = RoutePattern::parse(route.path.get_ref())
            .map_err(|message| source.invalid(Some(location), format!("{key}.path"), message))?;
        if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == pattern) {
            let message = format!(
                "duplicate route \"{pattern}\"; first declared on line {}",
                first.line
            );
            return Err(source.invalid(Some(location), format!("{key}.path"), message));
        }
        seen.push((pattern.clone(), location));

        let route_at = Some(location);
        let mut names = Vec::new();
        for filter in route.filters.map(Spanned::into_inner).unwrap_or_default() {
            if !filters.keys().any(|f| f.get_ref() == filter.get_ref()) {
                let location = Some(source.key_at(&filter.span()));
                let message = format!(
                    "no filter named \"{}\" is declared under [filter]",
                    filter.get_ref().escape_debug()
                );
                return Err(source.invalid(location, format!("{key}.filters"), message));
            }
            names.push(filter.into_inner());
        }
        let target = match (route.component, route.upstream) {
            (Some(_), Some(upstream)) => {
                let location = Some(source.key_at(&upstream.span()));
                let message = "a route goes to a `component` or an `upstream`, not both";
                return Err(source.invalid(location, format!("{key}.upstream"), message));
            }
            (None, None) => {
                let message = "needs a `component` (or an `upstream` to forward to)";
                return Err(source.invalid(route_at, key, message));
            }
            (None, Some(upstream)) => {
                let location = Some(source.key_at(&upstream.span()));
                let name = upstream.get_ref();
                if name.contains("://") {
                    crate::Upstream::parse_url(name, name).map_err(|message| {
                        source.invalid(location, format!("{key}.upstream"), message)
                    })?;
                } else if !upstreams.keys().any(|u| u.get_ref() == name) {
                    let message = format!(
                        "no upstream named \"{}\" is declared under [upstream] (or give a URL such as \"http://127.0.0.1:8080\")",
                        name.escape_debug()
                    );
                    return Err(source.invalid(location, format!("{key}.upstream"), message));
                }
                RouteTarget::Upstream(upstream.into_inner())
            }
            (Some(component), None) => {
                if !components.contains_key(component.get_ref().as_str()) {
                    let location = source.key_at(&component.span());
                    let component = component.get_ref();
                    let message = if components.is_empty() {
                        format!(
                            "no component named \"{component}\"; the manifest defines no components"
                        )
                    } else {
                        let defined: Vec<&str> =
                            components.keys().map(|id| id.get_ref().as_str()).collect();
                        format!(
                            "no component named \"{component}\"; defined: {}",
                            defined.join(", ")
                        )
                    };
                    return Err(source.invalid(
                        Some(location),
                        format!("{key}.component"),
                        message,
                    ));
                }
                RouteTarget::Component(component.into_inner())
            }
        };
        routes.push(Route {
            pattern,
            target,
            filters: names,
        });
    }
    Ok(routes)
}

fn resolve_variables(
    source: &Source,
    raw: BTreeMap<Spanned<String>, Spanned<RawVariable>>,
) -> Result<BTreeMap<String, Variable>, ManifestError> {
    let mut variables = BTreeMap::new();
    for (name, variable) in raw {
        let key = format!("variables.{}", name.get_ref());
        let location = Some(source.at(&name.span()));
        if !is_valid_name(name.get_ref()) {
            let message = format!(
                "invalid variable name \"{}\": use lowercase letters, digits and `_`, starting with a letter",
                name.get_ref().escape_debug()
            );
            return Err(source.invalid(location, key, message));
        }
        let location = Some(source.key_at(&variable.span()));
        let variable = variable.into_inner();
        let message = match (&variable.default, variable.required) {
            (Some(_), true) => "has both a default and `required = true`; keep one",
            (None, false) => "needs a `default` or `required = true`",
            _ => "",
        };
        if !message.is_empty() {
            return Err(source.invalid(location, key, message));
        }
        variables.insert(
            name.into_inner(),
            Variable {
                default: variable.default,
                required: variable.required,
                secret: variable.secret,
            },
        );
    }
    Ok(variables)
}

/// What the app declares, which a component's entries may name.
struct Declared<'a> {
    /// The `[variables]` table.
    variables: &'a BTreeMap<String, Variable>,
    /// The `[nn.models]` tables.
    nn_models: &'a BTreeMap<String, NnModel>,
}

/// How a component's source may be missing: not yet built, by its own build
/// entry or by another component's with the same source.
struct SourceRules {
    options: LoadOptions,
    built_elsewhere: bool,
}

fn resolve_component(
    source: &Source,
    base: &Path,
    id: Spanned<String>,
    raw: RawComponent,
    declared: &Declared<'_>,
    SourceRules {
        options,
        built_elsewhere,
    }: SourceRules,
    boundary: &mut Boundary,
) -> Result<Component, ManifestError> {
    let key = format!("component.{}", id.get_ref());
    if !is_valid_id(id.get_ref()) {
        let message = format!(
            "invalid component id \"{}\": use lowercase letters, digits, `-` and `_`, starting with a letter",
            id.get_ref().escape_debug()
        );
        return Err(source.invalid(Some(source.at(&id.span())), key, message));
    }

    let build = raw
        .build
        .map(|build| resolve_build(source, base, &key, build))
        .transpose()?;
    let source_location = source.key_at(&raw.source.span());
    // A download is fetched when the app is loaded; nothing to check on disk.
    let wasm = match raw.download {
        Some(download) => ComponentSource::Download(download),
        None => {
            let wasm = base.join(raw.source.get_ref());
            let problem = match fs::metadata(&wasm) {
                Ok(meta) if meta.is_dir() => {
                    Some("is a directory, expected a wasm file".to_owned())
                }
                Ok(_) => None,
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && (build.is_some() || built_elsewhere) =>
                {
                    (!options.unbuilt).then(|| "file not found".to_owned())
                }
                Err(e) => Some(describe_io(&e)),
            };
            if let Some(problem) = problem {
                let mut message = format!("{problem}: {}", wasm.display());
                if build.is_some() || built_elsewhere {
                    message.push_str(&format!(
                        "; build it with `tern build {}`",
                        source.path.display()
                    ));
                }
                let key = format!("{key}.source");
                return Err(source.invalid(Some(source_location), key, message));
            }
            boundary.check(
                source,
                source_location,
                &format!("{key}.source"),
                raw.source.get_ref(),
                &wasm,
                (id.get_ref(), OutsideGrant::Source),
            )?;
            ComponentSource::File(wasm)
        }
    };

    let mut environment = BTreeMap::new();
    for (name, value) in raw.environment {
        let location = Some(source.at(&name.span()));
        if name.get_ref().is_empty() || name.get_ref().contains(['=', '\0']) {
            let message = format!(
                "invalid variable name \"{}\": must be non-empty, without `=` or NUL",
                name.get_ref().escape_debug()
            );
            return Err(source.invalid(location, format!("{key}.environment"), message));
        }
        if value.get_ref().contains('\0') {
            let key = format!("{key}.environment.{}", name.get_ref());
            return Err(source.invalid(location, key, "value must not contain NUL"));
        }
        environment.insert(name.into_inner(), value.into_inner());
    }

    let files = raw
        .files
        .into_iter()
        .enumerate()
        .map(|(index, mount)| {
            let key = format!("{key}.files[{}]", index + 1);
            resolve_mount(source, base, &key, mount, boundary, id.get_ref())
        })
        .collect::<Result<_, _>>()?;

    let key_value_stores = resolve_names(
        source,
        &format!("{key}.key_value_stores"),
        "store",
        raw.key_value_stores,
        |_| Ok(()),
    )?;
    let sqlite_databases = resolve_names(
        source,
        &format!("{key}.sqlite_databases"),
        "store",
        raw.sqlite_databases,
        |_| Ok(()),
    )?;
    let nn_models = resolve_names(
        source,
        &format!("{key}.nn_models"),
        "model",
        raw.nn_models,
        |name| {
            if declared.nn_models.contains_key(name) {
                return Ok(());
            }
            let mut message = format!("no model named \"{name}\" is declared under [nn.models]");
            if !declared.nn_models.is_empty() {
                let names: Vec<&str> = declared.nn_models.keys().map(String::as_str).collect();
                message.push_str(&format!("; declared: {}", names.join(", ")));
            }
            Err(message)
        },
    )?;

    let mut allowed_outbound_hosts = Vec::new();
    let mut outbound_templates = Vec::new();
    let outbound_key = format!("{key}.allowed_outbound_hosts");
    for entry in raw.allowed_outbound_hosts {
        let location = source.key_at(&entry.span());
        let invalid = |message| source.invalid(Some(location), &outbound_key, message);
        if !entry.get_ref().contains("{{") {
            allowed_outbound_hosts.push(entry.get_ref().parse::<OutboundHost>().map_err(invalid)?);
            continue;
        }
        let template = Template::parse(entry.get_ref()).map_err(invalid)?;
        if let Some(unknown) = template
            .references()
            .find(|r| !declared.variables.contains_key(*r))
        {
            return Err(invalid(format!(
                "`{unknown}` is not declared under [variables]"
            )));
        }
        outbound_templates.push(OutboundTemplate {
            template,
            written: entry.into_inner(),
            location,
        });
    }

    let mut variables = BTreeMap::new();
    for (name, template) in raw.variables {
        let var_key = format!("{key}.variables.{}", name.get_ref());
        if !is_valid_name(name.get_ref()) {
            let message =
                "invalid name; use lowercase letters, digits and `_`, starting with a letter";
            return Err(source.invalid(Some(source.at(&name.span())), var_key, message));
        }
        let location = Some(source.key_at(&template.span()));
        let parsed = Template::parse(template.get_ref())
            .map_err(|message| source.invalid(location, &var_key, message))?;
        if let Some(unknown) = parsed
            .references()
            .find(|r| !declared.variables.contains_key(*r))
        {
            let message = format!("`{unknown}` is not declared under [variables]");
            return Err(source.invalid(location, var_key, message));
        }
        variables.insert(name.into_inner(), parsed);
    }

    Ok(Component {
        limits: resolve_limits(source, &key, raw.limits)?,
        instances: raw
            .instances
            .map(|raw| resolve_instances(source, &key, raw))
            .transpose()?,
        key_value_stores,
        sqlite_databases,
        nn_models,
        nn_load_bytes: raw.nn_load_bytes,
        allowed_outbound_hosts,
        outbound_templates,
        variables,
        id: id.into_inner(),
        source: wasm,
        executor: raw.executor,
        environment,
        files,
        build,
        staged_files: raw.staged_files,
        wagi: raw.wagi,
        source_location,
    })
}

/// A component's `key_value_stores`, `sqlite_databases` or `nn_models`
/// (named by `key`): each a valid name of a `what` (`store`, `model`),
/// listed once, and accepted by `declared`, whose error is the message.
fn resolve_names(
    source: &Source,
    key: &str,
    what: &str,
    raw: Vec<Spanned<String>>,
    declared: impl Fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, ManifestError> {
    let mut names: Vec<String> = Vec::with_capacity(raw.len());
    for entry in raw {
        let location = Some(source.key_at(&entry.span()));
        let name = entry.into_inner();
        let shown = name.escape_debug();
        let message = if !is_valid_store_name(&name) {
            Some(format!(
                "\"{shown}\": invalid {what} name; use lowercase letters, digits, `-` and `_`, starting with a letter"
            ))
        } else if names.contains(&name) {
            Some(format!("\"{shown}\": listed twice"))
        } else {
            declared(name.as_str()).err()
        };
        if let Some(message) = message {
            return Err(source.invalid(location, key, message));
        }
        names.push(name);
    }
    Ok(names)
}

fn resolve_build(
    source: &Source,
    base: &Path,
    key: &str,
    raw: RawBuild,
) -> Result<Build, ManifestError> {
    if raw.command.get_ref().trim().is_empty() {
        let location = Some(source.key_at(&raw.command.span()));
        return Err(source.invalid(
            location,
            format!("{key}.build.command"),
            "must not be empty",
        ));
    }
    let workdir = match raw.workdir {
        // `tern.toml` given bare: its directory is the current one.
        None if base.as_os_str().is_empty() => PathBuf::from("."),
        None => base.to_owned(),
        Some(workdir) => {
            let dir = base.join(workdir.get_ref());
            if !dir.is_dir() {
                let location = Some(source.key_at(&workdir.span()));
                let message = format!("directory not found: {}", dir.display());
                return Err(source.invalid(location, format!("{key}.build.workdir"), message));
            }
            dir
        }
    };
    let mut watch = Vec::with_capacity(raw.watch.len());
    for pattern in raw.watch {
        if let Err(error) = globset::Glob::new(pattern.get_ref()) {
            let location = Some(source.key_at(&pattern.span()));
            let message = format!("invalid glob: {}", error.kind());
            return Err(source.invalid(location, format!("{key}.build.watch"), message));
        }
        watch.push(pattern.into_inner());
    }
    Ok(Build {
        command: raw.command.into_inner(),
        workdir,
        watch,
    })
}

fn resolve_mount(
    source: &Source,
    base: &Path,
    key: &str,
    raw: RawFileMount,
    boundary: &mut Boundary,
    component: &str,
) -> Result<FileMount, ManifestError> {
    let dir = base.join(raw.source.get_ref());
    let problem = match fs::metadata(&dir) {
        Ok(meta) if !meta.is_dir() => Some("not a directory".to_owned()),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some("directory not found".to_owned()),
        Err(e) => Some(describe_io(&e)),
    };
    let location = source.key_at(&raw.source.span());
    if let Some(problem) = problem {
        let message = format!("{problem}: {}", dir.display());
        return Err(source.invalid(Some(location), format!("{key}.source"), message));
    }
    boundary.check(
        source,
        location,
        &format!("{key}.source"),
        raw.source.get_ref(),
        &dir,
        (component, OutsideGrant::Files),
    )?;

    let destination = raw.destination.get_ref();
    if !destination.starts_with('/') {
        let location = Some(source.key_at(&raw.destination.span()));
        let message = format!(
            "\"{destination}\" must be an absolute guest path such as \"/{}\"",
            destination.trim_start_matches("./")
        );
        return Err(source.invalid(location, format!("{key}.destination"), message));
    }

    Ok(FileMount {
        source: dir,
        destination: raw.destination.into_inner(),
    })
}

fn resolve_limits(
    source: &Source,
    key: &str,
    raw: RawLimits,
) -> Result<LimitsConfig, ManifestError> {
    if let Some(memory) = &raw.memory
        && *memory.get_ref() < MIN_MEMORY
    {
        let location = Some(source.key_at(&memory.span()));
        let message = format!("must be at least {MIN_MEMORY}, got {}", memory.get_ref());
        return Err(source.invalid(location, format!("{key}.limits.memory"), message));
    }
    if let Some(max) = &raw.max_concurrent
        && *max.get_ref() == 0
    {
        let location = Some(source.key_at(&max.span()));
        return Err(source.invalid(
            location,
            format!("{key}.limits.max_concurrent"),
            "must be at least 1",
        ));
    }
    Ok(LimitsConfig {
        memory: raw.memory.map(Spanned::into_inner),
        timeout: raw.timeout,
        max_body: raw.max_body,
        max_concurrent: raw.max_concurrent.map(Spanned::into_inner),
        outbound_connect_timeout: raw.outbound_connect_timeout,
        outbound_timeout: raw.outbound_timeout,
        max_outbound_requests: raw.max_outbound_requests,
        cpu_time: raw.cpu_time,
    })
}

fn resolve_instances(
    source: &Source,
    key: &str,
    raw: RawInstances,
) -> Result<InstancesConfig, ManifestError> {
    let at_least_one = |value: &Option<Spanned<u32>>, name: &str| match value {
        Some(v) if *v.get_ref() == 0 => Err(source.invalid(
            Some(source.key_at(&v.span())),
            format!("{key}.instances.{name}"),
            "must be at least 1",
        )),
        _ => Ok(()),
    };
    at_least_one(&raw.reuse, "reuse")?;
    at_least_one(&raw.concurrent, "concurrent")?;
    let reuse = raw
        .reuse
        .map_or(InstancesConfig::DEFAULT_REUSE, Spanned::into_inner);
    if let Some(concurrent) = &raw.concurrent
        && *concurrent.get_ref() > reuse
    {
        return Err(source.invalid(
            Some(source.key_at(&concurrent.span())),
            format!("{key}.instances.concurrent"),
            format!(
                "must be at most `reuse` ({reuse}): an instance serves no more than `reuse` requests in all"
            ),
        ));
    }
    Ok(InstancesConfig {
        reuse,
        concurrent: raw
            .concurrent
            .map_or(InstancesConfig::DEFAULT_CONCURRENT, Spanned::into_inner),
        idle: raw.idle.unwrap_or(InstancesConfig::DEFAULT_IDLE),
    })
}

/// The app directory, which a component's `source` and `files`, and a
/// model's `path`, must stay inside unless the operator allows otherwise,
/// and the entries allowed out.
pub(crate) struct Boundary {
    /// The manifest's directory as given, made absolute.
    given: PathBuf,
    /// The same with symlinks followed, resolved when first needed.
    real: std::cell::OnceCell<PathBuf>,
    allow: bool,
    outside: Vec<OutsideAppDir>,
}

impl Boundary {
    fn new(dir: &Path, allow: bool) -> Boundary {
        Boundary {
            given: std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()),
            real: std::cell::OnceCell::new(),
            allow,
            outside: Vec::new(),
        }
    }

    /// The app directory, symlinks followed.
    fn real_dir(&self) -> &Path {
        self.real
            .get_or_init(|| fs::canonicalize(&self.given).unwrap_or_else(|_| self.given.clone()))
    }

    /// Whether `path` is the app directory joined with plain names, none
    /// of them a symlink (a name not there yet cannot be one): such a path
    /// stays inside without resolving every directory above the app's,
    /// which `tern host` would do on each cold start.
    fn plainly_inside(&self, path: &Path) -> bool {
        let Ok(absolute) = std::path::absolute(path) else {
            return false;
        };
        let Ok(rest) = absolute.strip_prefix(&self.given) else {
            return false;
        };
        let (mut at, mut exists) = (self.given.clone(), true);
        for part in rest.components() {
            let PathPart::Normal(name) = part else {
                return false;
            };
            if !exists {
                continue;
            }
            at.push(name);
            match fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => exists = false,
                Err(_) => return false,
            }
        }
        true
    }

    /// Checks that `path`, written as `written` under `key`, leads inside
    /// the app directory. When it does not and the operator allows it, it
    /// is recorded as a grant of `component` (or of the model so named).
    pub(crate) fn check(
        &mut self,
        source: &Source,
        location: Location,
        key: &str,
        written: &str,
        path: &Path,
        (component, grant): (&str, OutsideGrant),
    ) -> Result<(), ManifestError> {
        if self.plainly_inside(path) {
            return Ok(());
        }
        let real = real_path(path);
        if real.starts_with(self.real_dir()) {
            return Ok(());
        }
        if self.allow {
            self.outside.push(OutsideAppDir {
                component: component.to_owned(),
                grant,
                path: real,
            });
            return Ok(());
        }
        let shown = written.escape_debug();
        let place = if Path::new(written) == real {
            format!("\"{shown}\" is")
        } else {
            format!("\"{shown}\" leads to {},", real.display())
        };
        let message = format!(
            "{place} outside the app directory {}; an operator can allow it with --allow-outside-app-dir (or `allow_outside_app_dir = true` in the runtime config)",
            self.real_dir().display()
        );
        Err(source.invalid(Some(location), key, message))
    }
}

/// Where `path` leads once symlinks are followed, as an absolute path. A
/// path that does not exist yet (a binary not built yet) leads to its
/// deepest ancestor that does, resolved, joined with the rest; a `..` in
/// the rest undoes the name before it, as it will once those names exist.
fn real_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    for ancestor in absolute.ancestors() {
        let Ok(mut real) = fs::canonicalize(ancestor) else {
            continue;
        };
        let rest = absolute.strip_prefix(ancestor).unwrap_or(Path::new(""));
        for part in rest.components() {
            match part {
                PathPart::ParentDir => {
                    real.pop();
                }
                PathPart::Normal(name) => real.push(name),
                PathPart::CurDir | PathPart::RootDir | PathPart::Prefix(_) => {}
            }
        }
        return real;
    }
    absolute
}

/// Store names follow the component id rule.
pub(crate) fn is_valid_store_name(name: &str) -> bool {
    is_valid_id(name)
}

/// Lowercase ASCII letters, digits, `-` and `_`, starting with a letter.
pub(crate) fn is_valid_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Whether `name` is a host name of DNS labels (letters, digits, inner
/// hyphens; lowercase), or `*.` and one.
fn is_host_pattern(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An io error's description without the `(os error N)` suffix.
pub(crate) fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "file not found".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_ids() {
        for id in ["a", "hello", "hello-world_2", "a1"] {
            assert!(is_valid_id(id), "{id}");
        }
        for id in ["", "1a", "-a", "_a", "Hello", "a.b", "a b", "é"] {
            assert!(!is_valid_id(id), "{id}");
        }
    }
}
