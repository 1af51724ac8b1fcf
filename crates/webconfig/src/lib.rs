//! Reads an application's `web.config` the way IIS's ASP.NET Core Module (ANCM) and
//! HttpPlatformHandler do, and turns it into the command that starts the application's worker
//! process on Linux.
//!
//! # Layout
//! - [`parse`]: XML → [`WorkerDefinition`] (`None` when the file names no worker module), with
//!   each module's documented defaults applied. Pure: no file system, no environment.
//! - [`resolve_command`]: [`WorkerDefinition`] → [`ResolvedCommand`] for one application folder
//!   and port: placeholders substituted, Windows paths and command lines translated, the
//!   program found (the only I/O: whether files exist, and the `PATH`).
//!
//! Where the element may sit: `configuration/system.webServer/(aspNetCore|httpPlatform)`, or the
//! same inside `configuration/location` when the location applies to the application itself
//! (`path` absent, empty or `.`), which is how `dotnet publish` writes it.
//!
//! # Errors
//! One [`WebConfigError`]; its message names the element and attribute
//! (`aspNetCore.processPath: ...`) so a StartTask error tells the user what to fix.

#![forbid(unsafe_code)]

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// A worker module's settings from `web.config`, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDefinition {
    /// Which element defined the worker.
    pub module: Module,
    /// `processPath` as written (placeholders and backslashes included).
    pub process_path: String,
    /// `arguments` as written; empty when absent.
    pub arguments: String,
    /// `<environmentVariables>` in document order; a repeated name keeps its last value in the
    /// position of its first.
    pub env: Vec<(String, String)>,
    /// `stdoutLogEnabled`.
    pub stdout_log_enabled: bool,
    /// `stdoutLogFile`: a path prefix; the module appends `_<timestamp>_<pid>.log`.
    pub stdout_log_file: String,
    /// `startupTimeLimit`.
    pub startup_time_limit: Duration,
    /// `shutdownTimeLimit` (ANCM's; HttpPlatformHandler has none and gets ANCM's default).
    pub shutdown_time_limit: Duration,
    /// `requestTimeout`, written `hh:mm:ss`.
    pub request_timeout: Duration,
    /// `rapidFailsPerMinute`.
    pub rapid_fails_per_minute: u32,
    /// `startupRetryCount` (HttpPlatformHandler's; ANCM has none: 0).
    pub startup_retry_count: u32,
    /// `hostingModel="inprocess"`: the app asked to run inside IIS's worker. We run it out of
    /// process anyway; the caller says so in a task event.
    pub inprocess: bool,
}

/// The IIS module a worker definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    /// `<aspNetCore>`: the ASP.NET Core Module (v1 or v2), out of process.
    AspNetCore,
    /// `<httpPlatform>`: HttpPlatformHandler.
    HttpPlatform,
}

impl Module {
    /// The element's name, as error messages use it.
    pub fn element(self) -> &'static str {
        match self {
            Module::AspNetCore => "aspNetCore",
            Module::HttpPlatform => "httpPlatform",
        }
    }
}

/// The program and arguments that start a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCommand {
    /// An absolute path, or a path found on `PATH`.
    pub program: PathBuf,
    /// The arguments, split like a Windows command line, placeholders substituted.
    pub args: Vec<String>,
    /// `<environmentVariables>` with `%HTTP_PLATFORM_PORT%`/`%ASPNETCORE_PORT%` substituted in
    /// the values (HttpPlatformHandler's documentation passes the port to apps this way, e.g.
    /// `PORT=%HTTP_PLATFORM_PORT%`) and other `%VAR%` expanded as in `arguments`.
    pub env: Vec<(String, String)>,
}

/// What can be wrong with a `web.config` or the command it names.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// The file is not XML.
    #[error("web.config is not well-formed xml: {0}")]
    Xml(#[source] roxmltree::Error),
    /// An attribute's value cannot be used; `attribute` is `element.attribute`.
    #[error("{attribute}: {message}")]
    Invalid {
        /// `aspNetCore.processPath`, `httpPlatform.requestTimeout`, …
        attribute: String,
        /// What is wrong, for a person.
        message: String,
    },
    /// Both modules in one application.
    #[error("system.webServer: both <aspNetCore> and <httpPlatform> are configured; keep only one")]
    BothModules,
}

/// Defaults of each module, from their documentation.
struct Defaults {
    startup_time_limit: u64,
    shutdown_time_limit: u64,
    request_timeout: Duration,
    rapid_fails_per_minute: u32,
    startup_retry_count: u32,
    stdout_log_file: &'static str,
}

const ASPNETCORE_DEFAULTS: Defaults = Defaults {
    startup_time_limit: 120,
    shutdown_time_limit: 10,
    request_timeout: Duration::from_secs(120),
    rapid_fails_per_minute: 10,
    startup_retry_count: 0,
    stdout_log_file: "aspnetcore-stdout",
};

const HTTPPLATFORM_DEFAULTS: Defaults = Defaults {
    startup_time_limit: 10,
    shutdown_time_limit: 10,
    request_timeout: Duration::from_secs(120),
    rapid_fails_per_minute: 10,
    startup_retry_count: 10,
    stdout_log_file: "httpplatform-stdout",
};

/// Reads the worker definition of a `web.config`; `None` when it configures no `<aspNetCore>`
/// or `<httpPlatform>` for the application itself.
pub fn parse(xml: &str) -> Result<Option<WorkerDefinition>, WebConfigError> {
    let xml = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let document =
        roxmltree::Document::parse_with_options(xml, options).map_err(WebConfigError::Xml)?;
    let root = document.root_element();
    if !root.has_tag_name("configuration") {
        return Ok(None);
    }
    let mut web_servers: Vec<roxmltree::Node> = children(root, "system.webServer").collect();
    for location in children(root, "location") {
        let applies_here = matches!(
            location.attribute("path").map(str::trim),
            None | Some("" | ".")
        );
        if applies_here {
            web_servers.extend(children(location, "system.webServer"));
        }
    }
    let mut found = None;
    for web_server in web_servers {
        for node in web_server.children().filter(|n| n.is_element()) {
            let module = match node.tag_name().name() {
                "aspNetCore" => Module::AspNetCore,
                "httpPlatform" => Module::HttpPlatform,
                _ => continue,
            };
            match found {
                Some((m, _)) if m != module => return Err(WebConfigError::BothModules),
                // A later element of the same module overrides, as IIS merges configuration.
                _ => found = Some((module, node)),
            }
        }
    }
    found
        .map(|(module, node)| definition(module, node))
        .transpose()
}

fn children<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> {
    node.children().filter(move |n| n.has_tag_name(name))
}

fn definition(module: Module, node: roxmltree::Node) -> Result<WorkerDefinition, WebConfigError> {
    let defaults = match module {
        Module::AspNetCore => &ASPNETCORE_DEFAULTS,
        Module::HttpPlatform => &HTTPPLATFORM_DEFAULTS,
    };
    let attr = |name: &str| node.attribute(name).map(str::trim);
    let invalid = |name: &str, message: String| WebConfigError::Invalid {
        attribute: format!("{}.{name}", module.element()),
        message,
    };
    let process_path = match attr("processPath") {
        Some(p) if !p.is_empty() => p.to_owned(),
        _ => {
            return Err(invalid(
                "processPath",
                "missing; it names the program that runs the application".into(),
            ));
        }
    };
    let seconds = |name: &str, default: u64| -> Result<Duration, WebConfigError> {
        match attr(name) {
            None | Some("") => Ok(Duration::from_secs(default)),
            Some(v) => v
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| invalid(name, format!("{v:?} is not a whole number of seconds"))),
        }
    };
    let count = |name: &str, default: u32| -> Result<u32, WebConfigError> {
        match attr(name) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| invalid(name, format!("{v:?} is not a whole number"))),
        }
    };
    let stdout_log_enabled = match attr("stdoutLogEnabled") {
        None | Some("") => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(invalid(
                "stdoutLogEnabled",
                format!("{v:?} is not true or false"),
            ));
        }
    };
    let request_timeout = match attr("requestTimeout") {
        None | Some("") => defaults.request_timeout,
        Some(v) => parse_timespan(v).ok_or_else(|| {
            invalid(
                "requestTimeout",
                format!("{v:?} is not a time span like 00:02:00 (hh:mm:ss)"),
            )
        })?,
    };
    let inprocess = match (module, attr("hostingModel")) {
        (Module::AspNetCore, Some(v)) if v.eq_ignore_ascii_case("inprocess") => true,
        (Module::AspNetCore, Some(v)) if v.is_empty() || v.eq_ignore_ascii_case("outofprocess") => {
            false
        }
        (Module::AspNetCore, Some(v)) => {
            return Err(invalid(
                "hostingModel",
                format!("{v:?} is neither inprocess nor outofprocess"),
            ));
        }
        _ => false,
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for variables in children(node, "environmentVariables") {
        for variable in variables.children().filter(|n| n.is_element()) {
            match variable.tag_name().name() {
                "environmentVariable" | "add" => {
                    let Some(name) = variable.attribute("name").filter(|n| !n.is_empty()) else {
                        return Err(invalid(
                            "environmentVariables",
                            "an <environmentVariable> has no name".into(),
                        ));
                    };
                    let value = variable.attribute("value").unwrap_or_default().to_owned();
                    match env.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                        Some(existing) => existing.1 = value,
                        None => env.push((name.to_owned(), value)),
                    }
                }
                "remove" => {
                    if let Some(name) = variable.attribute("name") {
                        env.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                    }
                }
                "clear" => env.clear(),
                _ => {}
            }
        }
    }
    Ok(WorkerDefinition {
        module,
        process_path,
        arguments: attr("arguments").unwrap_or_default().to_owned(),
        env,
        stdout_log_enabled,
        stdout_log_file: match attr("stdoutLogFile") {
            Some(f) if !f.is_empty() => f.to_owned(),
            _ => defaults.stdout_log_file.to_owned(),
        },
        startup_time_limit: seconds("startupTimeLimit", defaults.startup_time_limit)?,
        shutdown_time_limit: seconds("shutdownTimeLimit", defaults.shutdown_time_limit)?,
        request_timeout,
        rapid_fails_per_minute: count("rapidFailsPerMinute", defaults.rapid_fails_per_minute)?,
        startup_retry_count: count("startupRetryCount", defaults.startup_retry_count)?,
        inprocess,
    })
}

/// A .NET `TimeSpan` as IIS writes it: `[d.]hh:mm:ss[.fraction]`.
fn parse_timespan(text: &str) -> Option<Duration> {
    let (days, rest) = match text.split_once('.') {
        Some((d, rest)) if !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, text),
    };
    let mut parts = rest.split(':');
    let hours: u64 = parts.next()?.parse().ok()?;
    let minutes: u64 = parts.next()?.parse().ok()?;
    let seconds_text = parts.next()?;
    if parts.next().is_some() || minutes >= 60 {
        return None;
    }
    let (whole, fraction) = match seconds_text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (seconds_text, None),
    };
    let seconds: u64 = whole.parse().ok()?;
    if seconds >= 60 {
        return None;
    }
    let mut nanos = 0u32;
    if let Some(f) = fraction {
        if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{f:0<9}").parse().ok()?;
    }
    let total = days
        .checked_mul(86_400)?
        .checked_add(hours.checked_mul(3600)?)?
        .checked_add(minutes * 60 + seconds)?;
    Some(Duration::new(total, nanos))
}

/// The program, arguments and environment that start `def`'s worker in `app_dir` (also its
/// working directory), listening on `port`.
///
/// - `%LAUNCHER_PATH%`/`%LAUNCHER_ARGS%`: an error (a development web.config).
/// - `%HTTP_PLATFORM_PORT%` and `%ASPNETCORE_PORT%` become `port`; any other `%VAR%` is
///   expanded from this process's environment, or left as it is when unset (as Windows does).
/// - `arguments` is split like a Windows command line (double quotes group, `\"` is a quote);
///   an argument starting `.\` or `..\`, or naming an existing file with backslashes, gets
///   forward slashes.
/// - `processPath`: backslashes become slashes; a path with a slash is relative to `app_dir`
///   unless absolute; a bare name is looked up on `PATH` (then in `app_dir`); a missing
///   `X.exe` falls back to `X`, which is how an apphost is published for Linux.
pub fn resolve_command(
    def: &WorkerDefinition,
    app_dir: &Path,
    port: u16,
) -> Result<ResolvedCommand, WebConfigError> {
    resolve_with(def, app_dir, port, &|name| std::env::var(name).ok())
}

/// [`resolve_command`] against the worker's environment instead of this process's: `PATH`
/// and `%VAR%` expansion read `env` first (the task's variables, which the worker gets), then
/// this process's environment for names the task does not set.
pub fn resolve_command_in(
    def: &WorkerDefinition,
    app_dir: &Path,
    port: u16,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedCommand, WebConfigError> {
    resolve_with(def, app_dir, port, &|name| {
        env(name).or_else(|| std::env::var(name).ok())
    })
}

/// [`resolve_command`] with the environment as a function, for tests.
fn resolve_with(
    def: &WorkerDefinition,
    app_dir: &Path,
    port: u16,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedCommand, WebConfigError> {
    let element = def.module.element();
    let invalid = |name: &str, message: String| WebConfigError::Invalid {
        attribute: format!("{element}.{name}"),
        message,
    };
    for (name, value) in [
        ("processPath", &def.process_path),
        ("arguments", &def.arguments),
    ] {
        let upper = value.to_ascii_uppercase();
        if upper.contains("%LAUNCHER_PATH%") || upper.contains("%LAUNCHER_ARGS%") {
            return Err(invalid(
                name,
                format!(
                    "{value:?} comes from a development web.config (Visual Studio fills in \
                     %LAUNCHER_PATH%/%LAUNCHER_ARGS%); publish the app with `dotnet publish` \
                     and deploy the published folder"
                ),
            ));
        }
    }
    let process_path = expand(&def.process_path, port, env).replace('\\', "/");
    let program = find_program(&process_path, app_dir, &|n| env(n))
        .ok_or_else(|| invalid("processPath", program_not_found(&process_path, app_dir)))?;
    let args = split_command_line(&expand(&def.arguments, port, env))
        .map_err(|message| invalid("arguments", message))?
        .into_iter()
        .map(|arg| unix_path_argument(arg, app_dir))
        .collect();
    let env = def
        .env
        .iter()
        .map(|(name, value)| (name.clone(), expand(value, port, env)))
        .collect();
    Ok(ResolvedCommand { program, args, env })
}

fn program_not_found(path: &str, app_dir: &Path) -> String {
    if is_bare_name(path) {
        format!(
            "{path:?} is not on PATH nor in the application folder {}",
            app_dir.display()
        )
    } else {
        let mut message = format!(
            "{path:?} does not exist in the application folder {}",
            app_dir.display()
        );
        if let Some(stem) = strip_exe(path) {
            message.push_str(&format!(" (nor does {stem:?})"));
        }
        message
    }
}

/// `%NAME%` placeholders: the port ones, then the environment; unknown ones stay.
fn expand(text: &str, port: u16, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let valid_name = !name.is_empty() && !name.contains(char::is_whitespace);
        let value = if !valid_name {
            None
        } else if name.eq_ignore_ascii_case("HTTP_PLATFORM_PORT")
            || name.eq_ignore_ascii_case("ASPNETCORE_PORT")
        {
            Some(port.to_string())
        } else {
            env(name)
        };
        match value {
            Some(v) => {
                out.push_str(&v);
                rest = &after[end + 1..];
            }
            None => {
                // Left as written; the closing `%` may open the next placeholder.
                out.push('%');
                out.push_str(name);
                rest = &after[end..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits a command line the way Windows programs' C runtime does.
fn split_command_line(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_arg = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let mut backslashes = 1;
                while chars.peek() == Some(&'\\') {
                    chars.next();
                    backslashes += 1;
                }
                in_arg = true;
                if chars.peek() == Some(&'"') {
                    // 2n backslashes + quote: n backslashes, the quote delimits;
                    // 2n+1: n backslashes and a literal quote.
                    current.extend(std::iter::repeat_n('\\', backslashes / 2));
                    if backslashes % 2 == 1 {
                        chars.next();
                        current.push('"');
                    }
                } else {
                    current.extend(std::iter::repeat_n('\\', backslashes));
                }
            }
            '"' => {
                in_arg = true;
                if quoted && chars.peek() == Some(&'"') {
                    chars.next();
                    current.push('"');
                } else {
                    quoted = !quoted;
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_arg {
                    args.push(std::mem::take(&mut current));
                    in_arg = false;
                }
            }
            c => {
                in_arg = true;
                current.push(c);
            }
        }
    }
    if quoted {
        return Err(format!("{line:?} has an unclosed double quote"));
    }
    if in_arg {
        args.push(current);
    }
    Ok(args)
}

/// `.\MyApp.dll` → `./MyApp.dll`; `bin\app.js` → `bin/app.js` when that file exists.
fn unix_path_argument(arg: String, app_dir: &Path) -> String {
    if !arg.contains('\\') {
        return arg;
    }
    let unix = arg.replace('\\', "/");
    let relative_prefix = arg.starts_with(".\\") || arg.starts_with("..\\");
    if relative_prefix
        || app_dir.join(&unix).exists()
        || Path::new(&unix).is_absolute() && Path::new(&unix).exists()
    {
        unix
    } else {
        arg
    }
}

fn is_bare_name(path: &str) -> bool {
    !path.contains('/')
}

/// `X.exe` → `X` (any case of `.exe`).
fn strip_exe(path: &str) -> Option<&str> {
    let cut = path.len().checked_sub(4)?;
    (path.is_char_boundary(cut) && path[cut..].eq_ignore_ascii_case(".exe")).then(|| &path[..cut])
}

fn find_program(
    path: &str,
    app_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    let candidates: Vec<&str> = std::iter::once(path).chain(strip_exe(path)).collect();
    if is_bare_name(path) {
        let search = env("PATH").unwrap_or_default();
        for candidate in &candidates {
            for dir in std::env::split_paths(&search) {
                let full = dir.join(candidate);
                if full.is_file() {
                    return Some(full);
                }
            }
        }
    }
    candidates
        .iter()
        .map(|c| join_normal(app_dir, c))
        .find(|p| p.is_file())
}

/// `app_dir` joined with a relative path without `.` components; absolute paths as they are.
fn join_normal(app_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let mut out = app_dir.to_path_buf();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        split_command_line(line).unwrap()
    }

    #[test]
    fn command_lines_split_like_windows() {
        assert_eq!(args(r#".\MyApp.dll"#), [r".\MyApp.dll"]);
        assert_eq!(args(r#"  a   b  "#), ["a", "b"]);
        assert_eq!(
            args(r#""C:\Program Files\app" --x "two words""#),
            [r"C:\Program Files\app", "--x", "two words"]
        );
        assert_eq!(args(r#"a\\\"b c\\"d e" f"#), [r#"a\"b"#, r"c\d e", "f"]);
        assert_eq!(args(r#""say ""hi""""#), [r#"say "hi""#]);
        assert_eq!(args(r#""""#), [""]);
        assert!(split_command_line(r#""open"#).is_err());
    }

    #[test]
    fn placeholders_expand_ports_and_environment_and_keep_unknown_ones() {
        let env = |name: &str| (name == "HOME_DIR").then(|| "/home/app".to_owned());
        assert_eq!(
            expand("--port %HTTP_PLATFORM_PORT%", 5001, &env),
            "--port 5001"
        );
        assert_eq!(expand("%aspnetcore_port%", 7, &env), "7");
        assert_eq!(
            expand("%HOME_DIR%/x %UNSET% 100%", 1, &env),
            "/home/app/x %UNSET% 100%"
        );
        assert_eq!(expand("%UNSET%HOME_DIR%", 1, &env), "%UNSET/home/app");
        assert_eq!(expand("50% off %HTTP_PLATFORM_PORT%", 9, &env), "50% off 9");
    }

    #[test]
    fn time_spans_read_like_dotnet() {
        assert_eq!(parse_timespan("00:02:00"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timespan("01:00:30"), Some(Duration::from_secs(3630)));
        assert_eq!(
            parse_timespan("1.00:00:00"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_timespan("00:00:01.5"),
            Some(Duration::from_millis(1500))
        );
        for bad in [
            "120",
            "00:60:00",
            "00:00:60",
            "a:b:c",
            "00:00",
            "00:00:00:00",
            "00:00:01.",
        ] {
            assert_eq!(parse_timespan(bad), None, "{bad}");
        }
    }

    #[test]
    fn bare_names_are_found_on_the_given_path() {
        let bin = tempfile::tempdir().unwrap();
        let app = tempfile::tempdir().unwrap();
        std::fs::write(bin.path().join("runtime"), "").unwrap();
        let path = bin.path().to_str().unwrap().to_owned();
        let env = move |name: &str| (name == "PATH").then(|| path.clone());
        assert_eq!(
            find_program("runtime", app.path(), &env),
            Some(bin.path().join("runtime"))
        );
        assert_eq!(
            find_program("runtime.exe", app.path(), &env),
            Some(bin.path().join("runtime"))
        );
        assert_eq!(find_program("missing", app.path(), &env), None);
        // Not on PATH but in the application folder.
        std::fs::write(app.path().join("local"), "").unwrap();
        assert_eq!(
            find_program("local", app.path(), &env),
            Some(app.path().join("local"))
        );
    }
}
