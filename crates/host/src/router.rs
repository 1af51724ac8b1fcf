//! Maps a request (accepting listener, host, path) to an application, an optional virtual
//! directory below it, and the path remainder the handler serves.
//!
//! Rules, in order:
//! 1. **Host.** The host is the request URI's authority (HTTP/2 `:authority`, absolute-form
//!    HTTP/1.1) or else the `Host` header, without its port, without a trailing dot, compared
//!    ASCII case-insensitively. A listener accepts it when one of its bindings has that host
//!    name, or a wildcard `*.rest` matching `label.rest` (one label), or no host name at all.
//!    A request without any host only matches bindings without a host name. No match: 404.
//! 2. **Application.** The application with the longest alias whose segments are a prefix of the
//!    path's segments wins: `/api` matches `/api` and `/api/x`, never `/apix`; `/` matches
//!    everything. Segments are percent-decoded and compared ASCII case-insensitively, as IIS
//!    does. No match (only possible without a `/` application): 404.
//! 3. **Virtual directory.** Below the application, the virtual directory (alias relative to
//!    the application) with the longest matching alias serves the request instead of the
//!    application root.
//! 4. **Remainder.** What follows the matched alias in the raw (still percent-encoded) path:
//!    empty or starting with `/`. The query string is not part of it.
//!
//! Every application belongs to the one site of this host, so all listeners reach all
//! applications; bindings only decide which hosts are answered.

use control::{BindingSpec, HostSpec};

use crate::plan::{ListenerPlan, normalised_alias, normalised_hostname};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target<'p> {
    /// Index into [`HostSpec::applications`].
    pub application: usize,
    /// Index into that application's virtual directories.
    pub virtual_directory: Option<usize>,
    /// The raw path below the matched alias.
    pub remainder: &'p str,
}

/// Why a request has no target. Both answer 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No binding of the listener answers for the host.
    UnknownHost,
    /// No application alias matches the path.
    NoApplication,
}

/// The routing table of one host.
#[derive(Debug)]
pub(crate) struct Router {
    /// Per listener (same order as the listener plans): the hosts its bindings answer.
    listeners: Vec<HostPatterns>,
    /// Applications, longest alias first.
    applications: Vec<ApplicationRoute>,
}

#[derive(Debug, Default)]
struct HostPatterns {
    /// Exact lowercase host names.
    exact: Vec<String>,
    /// `rest` of `*.rest` patterns.
    wildcard: Vec<String>,
    /// A binding without a host name answers every host.
    any: bool,
}

#[derive(Debug)]
struct ApplicationRoute {
    index: usize,
    segments: Vec<Vec<u8>>,
    /// Virtual directories, longest alias first: (index, segments).
    directories: Vec<(usize, Vec<Vec<u8>>)>,
}

impl Router {
    /// Builds the table from a checked spec and its listener plans.
    pub fn new(spec: &HostSpec, listeners: &[ListenerPlan]) -> Self {
        let listeners = listeners
            .iter()
            .map(|plan| host_patterns(plan.bindings.iter().map(|&i| &spec.bindings[i])))
            .collect();
        let mut applications: Vec<ApplicationRoute> = spec
            .applications
            .iter()
            .enumerate()
            .map(|(index, app)| {
                let mut directories: Vec<(usize, Vec<Vec<u8>>)> = app
                    .virtual_directories
                    .iter()
                    .enumerate()
                    .map(|(i, vdir)| (i, alias_segments(&vdir.alias)))
                    .collect();
                directories.sort_by_key(|(_, segments)| std::cmp::Reverse(segments.len()));
                ApplicationRoute {
                    index,
                    segments: alias_segments(&app.alias),
                    directories,
                }
            })
            .collect();
        applications.sort_by_key(|a| std::cmp::Reverse(a.segments.len()));
        Self {
            listeners,
            applications,
        }
    }

    /// Routes one request accepted by listener `listener`.
    pub fn route<'p>(
        &self,
        listener: usize,
        host: Option<&str>,
        path: &'p str,
    ) -> Result<Target<'p>, Miss> {
        let patterns = self.listeners.get(listener).ok_or(Miss::UnknownHost)?;
        if !patterns.accepts(host) {
            return Err(Miss::UnknownHost);
        }
        for app in &self.applications {
            let Some(remainder) = strip_alias(&app.segments, path) else {
                continue;
            };
            for (index, segments) in &app.directories {
                if let Some(below) = strip_alias(segments, remainder) {
                    return Ok(Target {
                        application: app.index,
                        virtual_directory: Some(*index),
                        remainder: below,
                    });
                }
            }
            return Ok(Target {
                application: app.index,
                virtual_directory: None,
                remainder,
            });
        }
        Err(Miss::NoApplication)
    }
}

fn host_patterns<'a>(bindings: impl Iterator<Item = &'a BindingSpec>) -> HostPatterns {
    let mut patterns = HostPatterns::default();
    for binding in bindings {
        match normalised_hostname(binding.hostname.as_deref()) {
            None => patterns.any = true,
            Some(name) => match name.strip_prefix("*.") {
                Some(rest) => patterns.wildcard.push(rest.to_string()),
                None => patterns.exact.push(name),
            },
        }
    }
    patterns
}

impl HostPatterns {
    fn accepts(&self, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let Some(host) = host.map(host_without_port) else {
            return false;
        };
        let host = host.trim_end_matches('.');
        if self.exact.iter().any(|e| e.eq_ignore_ascii_case(host)) {
            return true;
        }
        host.split_once('.')
            .is_some_and(|(_, rest)| self.wildcard.iter().any(|w| w.eq_ignore_ascii_case(rest)))
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
pub(crate) fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn alias_segments(alias: &str) -> Vec<Vec<u8>> {
    normalised_alias(alias)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

/// The rest of `path` after the alias segments, or `None` when the alias does not match.
fn strip_alias<'p>(segments: &[Vec<u8>], path: &'p str) -> Option<&'p str> {
    let mut rest = path;
    for segment in segments {
        let after_slash = rest.strip_prefix('/')?;
        let end = after_slash.find('/').unwrap_or(after_slash.len());
        let decoded = percent_decode(&after_slash[..end])?;
        if !decoded.eq_ignore_ascii_case(segment) {
            return None;
        }
        rest = &after_slash[end..];
    }
    if segments.is_empty() && !(rest.is_empty() || rest.starts_with('/')) {
        // `OPTIONS *` and other non-path targets match no alias, not even `/`.
        return None;
    }
    Some(rest)
}

/// Decodes `%XX` escapes; `None` for a malformed escape.
pub(crate) fn percent_decode(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::{ApplicationSpec, BindingKind, VirtualDirectorySpec};
    use std::net::IpAddr;
    use std::path::PathBuf;

    fn binding(hostname: Option<&str>) -> BindingSpec {
        BindingSpec {
            kind: BindingKind::Http,
            ip_address: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            hostname: hostname.map(str::to_string),
            require_sni: false,
            certificate: None,
        }
    }

    fn app(alias: &str, vdirs: &[&str]) -> ApplicationSpec {
        ApplicationSpec {
            alias: alias.into(),
            path: PathBuf::from("/srv"),
            pool: "default".into(),
            virtual_directories: vdirs
                .iter()
                .map(|a| VirtualDirectorySpec {
                    alias: (*a).into(),
                    path: PathBuf::from("/srv/v"),
                })
                .collect(),
            process: None,
        }
    }

    fn router(bindings: Vec<BindingSpec>, apps: Vec<ApplicationSpec>) -> Router {
        let plans = vec![ListenerPlan {
            address: "127.0.0.1:0".parse().unwrap(),
            kind: BindingKind::Http,
            bindings: (0..bindings.len()).collect(),
        }];
        let spec = HostSpec {
            bindings,
            applications: apps,
            ..crate::test_support::host_spec()
        };
        Router::new(&spec, &plans)
    }

    fn target(app: usize, vdir: Option<usize>, remainder: &str) -> Result<Target<'_>, Miss> {
        Ok(Target {
            application: app,
            virtual_directory: vdir,
            remainder,
        })
    }

    #[test]
    fn host_names_match_case_insensitively_without_port() {
        let r = router(
            vec![binding(Some("a.test")), binding(Some("*.w.test"))],
            vec![app("/", &[])],
        );
        assert_eq!(r.route(0, Some("A.Test:8080"), "/x"), target(0, None, "/x"));
        assert_eq!(r.route(0, Some("a.test."), "/"), target(0, None, "/"));
        assert_eq!(r.route(0, Some("x.w.test"), "/"), target(0, None, "/"));
        assert_eq!(r.route(0, Some("w.test"), "/"), Err(Miss::UnknownHost));
        assert_eq!(r.route(0, Some("b.test"), "/"), Err(Miss::UnknownHost));
        assert_eq!(r.route(0, None, "/"), Err(Miss::UnknownHost));
        assert_eq!(r.route(1, Some("a.test"), "/"), Err(Miss::UnknownHost));
    }

    #[test]
    fn a_binding_without_host_name_answers_every_host() {
        let r = router(
            vec![binding(Some("a.test")), binding(None)],
            vec![app("/", &[])],
        );
        assert_eq!(r.route(0, Some("zzz"), "/"), target(0, None, "/"));
        assert_eq!(r.route(0, None, "/"), target(0, None, "/"));
    }

    #[test]
    fn longest_alias_wins_segment_wise() {
        let r = router(
            vec![binding(None)],
            vec![app("/", &[]), app("/api", &[]), app("/api/v2", &[])],
        );
        assert_eq!(r.route(0, None, "/api"), target(1, None, ""));
        assert_eq!(r.route(0, None, "/api/x"), target(1, None, "/x"));
        assert_eq!(r.route(0, None, "/apix"), target(0, None, "/apix"));
        assert_eq!(r.route(0, None, "/API/V2/a"), target(2, None, "/a"));
        assert_eq!(r.route(0, None, "/%61pi/"), target(1, None, "/"));
        assert_eq!(r.route(0, None, "*"), Err(Miss::NoApplication));
    }

    #[test]
    fn without_a_root_application_other_paths_miss() {
        let r = router(vec![binding(None)], vec![app("/api", &[])]);
        assert_eq!(r.route(0, None, "/"), Err(Miss::NoApplication));
        assert_eq!(r.route(0, None, "/other"), Err(Miss::NoApplication));
    }

    #[test]
    fn virtual_directories_win_below_their_application() {
        let r = router(
            vec![binding(None)],
            vec![app("/", &["/img", "/img/big"]), app("/api", &["/docs"])],
        );
        assert_eq!(r.route(0, None, "/img/a.png"), target(0, Some(0), "/a.png"));
        assert_eq!(r.route(0, None, "/img/big/b"), target(0, Some(1), "/b"));
        assert_eq!(r.route(0, None, "/imgx"), target(0, None, "/imgx"));
        assert_eq!(r.route(0, None, "/api/docs/"), target(1, Some(0), "/"));
        assert_eq!(r.route(0, None, "/docs"), target(0, None, "/docs"));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("a:1"), "a");
        assert_eq!(host_without_port("a"), "a");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    #[test]
    fn percent_decoding_refuses_bad_escapes() {
        assert_eq!(percent_decode("a%20b").unwrap(), b"a b");
        assert!(percent_decode("a%2").is_none());
        assert!(percent_decode("a%zz").is_none());
    }
}
