//! `tern apps`: lists, shows, deletes and rolls back the apps of a running
//! `tern host`, and sets their variables, through its admin API.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;
use tern_runtime::{Error, Result};

use crate::admin_client::{self, Admin, AdminArgs, field, items};
use crate::deploy::{host_lines, print, print_deployed, route_lines};

/// Arguments of `tern apps`.
#[derive(Args)]
#[command(after_help = "\
Each command asks the admin API of a running `tern host` (--to), with the token of
--token-file, else $TERN_ADMIN_TOKEN, else ~/.local/share/tern/host/admin-token.

Examples:
  tern apps list --to http://127.0.0.1:3001
  tern apps rollback shop --to http://127.0.0.1:3001
  tern apps variables set shop api_host=api.example.com --file api_token=token.txt --to http://127.0.0.1:3001")]
pub struct AppsArgs {
    #[command(subcommand)]
    command: AppsCommand,
}

#[derive(Subcommand)]
enum AppsCommand {
    /// List the apps: version, state, traffic and host names
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one app: its versions, state, traffic, host names and routes
    Show {
        /// The app's name
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an app; its data is kept unless --purge
    Rm {
        /// The app's name
        name: String,
        /// Delete the app's data (its stores) too
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Serve an app's previous version again
    Rollback {
        /// The app's name
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List, set and unset an app's variables (each app has its own)
    #[command(subcommand)]
    Variables(VariablesCommand),
}

#[derive(Subcommand)]
enum VariablesCommand {
    /// List the names of the variables set for an app (never their values)
    List {
        /// The app's name
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set variables of an app, which is loaded again with them (an app
    /// not deployed yet gets them at its first deploy)
    #[command(after_help = "\
A value given as KEY=VALUE is visible to other users of this machine while the command runs
(in the process list): give secrets with --file KEY=PATH, whose content (less one trailing
newline) is the value.")]
    Set {
        /// The app's name
        name: String,
        /// A variable's value, KEY=VALUE
        #[arg(value_name = "KEY=VALUE")]
        values: Vec<String>,
        /// A variable's value read from a file, KEY=PATH (repeatable)
        #[arg(long = "file", value_name = "KEY=PATH")]
        files: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove variables of an app, which is loaded again without them
    Unset {
        /// The app's name
        name: String,
        /// The variables' names
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub fn main(args: AppsArgs) -> Result<ExitCode> {
    match args.command {
        AppsCommand::List { admin } => list(&admin.admin()?),
        AppsCommand::Show { name, admin } => show(&admin.admin()?, &name),
        AppsCommand::Rm { name, purge, admin } => rm(&admin.admin()?, &name, purge),
        AppsCommand::Rollback { name, admin } => rollback(&admin.admin()?, &name),
        AppsCommand::Variables(VariablesCommand::List { name, admin }) => {
            list_variables(&admin.admin()?, &name)
        }
        AppsCommand::Variables(VariablesCommand::Set {
            name,
            values,
            files,
            admin,
        }) => {
            let change = assignments(&values, &files)?;
            if change.is_empty() {
                return Err(Error::msg(
                    "nothing to set: give KEY=VALUE or --file KEY=PATH",
                ));
            }
            change_variables(&admin.admin()?, &name, change)
        }
        AppsCommand::Variables(VariablesCommand::Unset { name, keys, admin }) => {
            let change = keys.into_iter().map(|key| (key, Value::Null)).collect();
            change_variables(&admin.admin()?, &name, change)
        }
    }?;
    Ok(ExitCode::SUCCESS)
}

fn list(admin: &Admin) -> Result<()> {
    let answer = success(None, "the request", admin.call("GET", "/v1/apps", None)?)?;
    let header = [
        "NAME",
        "VERSION",
        "STATE",
        "REQUESTS",
        "LAST REQUEST",
        "HOSTS",
    ];
    let mut rows = vec![header.map(String::from)];
    for app in items(&answer, "apps") {
        let hosts: Vec<&str> = items(app, "hosts").filter_map(Value::as_str).collect();
        rows.push([
            field(app, "name"),
            field(app, "version"),
            field(app, "state"),
            field(app, "requests"),
            field(app, "last_request"),
            hosts.join(","),
        ]);
    }
    if rows.len() == 1 {
        crate::log::say("tern: no apps on the host");
        return Ok(());
    }
    print(&table(&rows))
}

fn show(admin: &Admin, name: &str) -> Result<()> {
    let path = admin_client::app_path(name, "");
    let app = success(Some(name), "the request", admin.call("GET", &path, None)?)?;
    let versions: Vec<String> = items(&app, "versions").map(Value::to_string).collect();
    let mut lines = vec![
        ("name", field(&app, "name")),
        ("version", field(&app, "version")),
        ("versions", versions.join(", ")),
        (
            "state",
            format!(
                "{}, {} in flight",
                field(&app, "state"),
                field(&app, "in_flight")
            ),
        ),
        ("requests", field(&app, "requests")),
        ("last request", field(&app, "last_request")),
    ];
    if app.get("error").is_some() {
        // Held: not served, and why.
        lines.push(("held", field(&app, "error")));
    }
    for (label, values) in [("hosts", host_lines(&app)), ("routes", route_lines(&app))] {
        if values.is_empty() {
            lines.push((label, "-".to_owned()));
        }
        // The label on the first line only.
        let labels = std::iter::once(label).chain(std::iter::repeat(""));
        lines.extend(labels.zip(values));
    }
    let mut out = String::new();
    for (label, value) in lines {
        let line = format!("{label:<14}{value}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    print(&out)
}

fn rm(admin: &Admin, name: &str, purge: bool) -> Result<()> {
    let path = admin_client::app_path(name, if purge { "?purge=true" } else { "" });
    let what = format!("to delete `{name}`");
    let answer = success(Some(name), &what, admin.call("DELETE", &path, None)?)?;
    let purged = answer
        .get("purged")
        .and_then(Value::as_bool)
        .unwrap_or(purge);
    let data = if purged {
        "data and variables purged"
    } else {
        "data and variables kept"
    };
    print(&format!("deleted {name} ({data})\n"))
}

fn rollback(admin: &Admin, name: &str) -> Result<()> {
    let path = admin_client::app_path(name, "/rollback");
    let answer = success(Some(name), "the rollback", admin.call("POST", &path, None)?)?;
    let headline = format!("{name} is back at version {}", field(&answer, "version"));
    print_deployed(&headline, &answer)
}

fn list_variables(admin: &Admin, name: &str) -> Result<()> {
    let path = admin_client::app_path(name, "/variables");
    let answer = success(Some(name), "the request", admin.call("GET", &path, None)?)?;
    let names: Vec<String> = items(&answer, "variables")
        .filter_map(Value::as_str)
        .map(|name| format!("{name}\n"))
        .collect();
    if names.is_empty() {
        crate::log::say(&format!("tern: no variables set for `{name}`"));
        return Ok(());
    }
    print(&names.concat())
}

/// Sends `change` (names to values, `null` to remove) and says what the
/// host did with it.
fn change_variables(
    admin: &Admin,
    name: &str,
    change: serde_json::Map<String, Value>,
) -> Result<()> {
    let answer = send_variables(admin, name, change)?;
    let count = items(&answer, "variables").count();
    let set = match count {
        1 => "1 variable set".to_owned(),
        n => format!("{n} variables set"),
    };
    let line = match answer.get("version").and_then(Value::as_u64) {
        Some(version) => format!("{name} version {version} reloaded ({set})\n"),
        None => format!("{name} is not deployed yet; its first deploy gets them ({set})\n"),
    };
    print(&line)
}

/// Sends `change` to `name`'s variables; the host's answer, after a
/// warning for each name the served version does not declare.
pub(crate) fn send_variables(
    admin: &Admin,
    name: &str,
    change: serde_json::Map<String, Value>,
) -> Result<Value> {
    let path = admin_client::app_path(name, "/variables");
    let body = serde_json::to_vec(&change)?;
    let what = format!("the change to `{name}`'s variables");
    let answer = success(None, &what, admin.call("PATCH", &path, Some(&body))?)?;
    let version = field(&answer, "version");
    for undeclared in items(&answer, "undeclared").filter_map(Value::as_str) {
        crate::log::say(&format!(
            "tern: warning: `{name}` version {version} declares no variable `{undeclared}`"
        ));
    }
    Ok(answer)
}

/// The values of `KEY=VALUE` and `--file KEY=PATH` arguments, as a JSON
/// object.
pub(crate) fn assignments(
    values: &[String],
    files: &[String],
) -> Result<serde_json::Map<String, Value>> {
    let split = |arg: &str, form: &str| {
        arg.split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .map(|(key, rest)| (key.to_owned(), rest.to_owned()))
            .ok_or_else(|| Error::msg(format!("`{arg}` is not {form}")))
    };
    let mut change = serde_json::Map::new();
    for arg in values {
        let (key, value) = split(arg, "KEY=VALUE")?;
        change.insert(key, Value::String(value));
    }
    for arg in files {
        let (key, path) = split(arg, "KEY=PATH")?;
        let mut value = std::fs::read_to_string(&path)
            .map_err(|e| Error::from(e).context(format!("cannot read {path}")))?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        change.insert(key, Value::String(value));
    }
    Ok(change)
}

/// A successful answer's body, or the error an error answer to `what` (a
/// call about the app `name`, if any) means.
fn success(name: Option<&str>, what: &str, (status, answer): (u16, Value)) -> Result<Value> {
    match (status, name) {
        (200..=299, _) => Ok(answer),
        (404, Some(name)) => Err(Error::msg(format!("no app named `{name}` on the host"))),
        _ => Err(admin_client::refused(what, status, &answer)),
    }
}

/// `rows` in columns two spaces apart; the last column is not padded.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up() {
        let rows = [
            ["NAME", "VERSION", "HOSTS"].map(String::from),
            ["shop", "12", "shop.localhost"].map(String::from),
            ["blog-admin", "1", ""].map(String::from),
        ];
        assert_eq!(
            table(&rows),
            "NAME        VERSION  HOSTS\n\
             shop        12       shop.localhost\n\
             blog-admin  1\n"
        );
    }

    #[test]
    fn assignments_are_read_from_arguments_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let files = [format!("api_token={}", file.display())];
        let change = assignments(&["host=a=b".into()], &files).unwrap();
        assert_eq!(change["host"], "a=b");
        assert_eq!(change["api_token"], "s3cret");
        let error = assignments(&["=x".into()], &[]).unwrap_err();
        assert_eq!(error.to_string(), "`=x` is not KEY=VALUE");
    }

    #[test]
    fn missing_apps_are_named() {
        let error = success(Some("shop"), "the request", (404, Value::Null)).unwrap_err();
        assert_eq!(error.to_string(), "no app named `shop` on the host");
    }
}
