//! IIS's request filtering, as its default `applicationHost.config` sets it up: hidden segments and
//! denied file extensions, answered 404 — plus recognising a classic ASP.NET (.NET Framework)
//! application folder, which cannot run on Linux and is served as static files behind these filters.
//!
//! A path is denied when any of its segments is a hidden segment (`bin`, `App_Code`, `App_Data`,
//! `App_GlobalResources`, `App_LocalResources`, `App_WebReferences`, `App_Browsers`, `web.config`)
//! or its last segment has a denied extension ([`DENIED_EXTENSIONS`]: IIS's defaults, plus
//! `.cshtml` and `.vbhtml`, which IIS never serves as files because ASP.NET Web Pages handles them).
//! Both compare ASCII case-insensitively, as IIS does.
//!
//! Checked twice: on the decoded request segments before any file system access, and on the path of
//! the file actually found (lexical and canonical, relative to the root), so that no spelling that
//! reaches the file system — percent-encoding, case, a symbolic link, a default document — gets past.
//! Before comparing, a segment loses what Windows would ignore when it opens a file: trailing dots
//! and spaces and an NTFS stream suffix (`::$DATA`). On Linux those spellings name other files, but a
//! site copied from Windows may hold such names, and refusing them costs nothing.

use std::path::{Component, Path};

/// Segments IIS hides wherever they appear in a path (`<hiddenSegments>`).
pub const HIDDEN_SEGMENTS: &[&str] = &[
    "web.config",
    "bin",
    "App_Code",
    "App_GlobalResources",
    "App_LocalResources",
    "App_WebReferences",
    "App_Data",
    "App_Browsers",
];

/// Extensions IIS's default request filtering denies (`<fileExtensions allowUnlisted="true">` with
/// `allowed="false"` entries), plus Razor pages.
pub const DENIED_EXTENSIONS: &[&str] = &[
    "asa",
    "asax",
    "ascx",
    "master",
    "skin",
    "browser",
    "sitemap",
    "config",
    "cs",
    "csproj",
    "vb",
    "vbproj",
    "webinfo",
    "licx",
    "resx",
    "resources",
    "mdb",
    "vjsproj",
    "java",
    "jsl",
    "ldb",
    "dsdgm",
    "ssdgm",
    "lsad",
    "ssmap",
    "cd",
    "dsprototype",
    "lsaprototype",
    "sdm",
    "sdmDocument",
    "mdf",
    "ldf",
    "ad",
    "dd",
    "ldd",
    "sd",
    "adprototype",
    "lddprototype",
    "exclude",
    "refresh",
    "compiled",
    "msgx",
    "vsdisco",
    "rules",
    "cshtml",
    "vbhtml",
];

/// What Windows would open for `segment`: without an NTFS stream suffix and trailing dots and
/// spaces.
fn as_windows_opens(segment: &str) -> &str {
    let without_stream = match segment.find(':') {
        // `name::$DATA` or `name:stream:$DATA`; a leading colon is no stream suffix.
        Some(colon) if colon > 0 => &segment[..colon],
        _ => segment,
    };
    without_stream.trim_end_matches(['.', ' '])
}

/// Whether `segment` is one IIS hides.
fn is_hidden_segment(segment: &str) -> bool {
    let segment = as_windows_opens(segment);
    HIDDEN_SEGMENTS
        .iter()
        .any(|hidden| hidden.eq_ignore_ascii_case(segment))
}

/// Whether the file name `name` has an extension IIS denies.
fn has_denied_extension(name: &str) -> bool {
    let name = as_windows_opens(name);
    let lower = name.to_ascii_lowercase();
    DENIED_EXTENSIONS.iter().any(|extension| {
        let extension = extension.to_ascii_lowercase();
        lower.len() > extension.len() + 1
            && lower.ends_with(&extension)
            && lower.as_bytes()[lower.len() - extension.len() - 1] == b'.'
    })
}

/// Whether a path given as decoded segments (the last one the file name) is denied.
pub fn denies_segments<S: AsRef<str>>(segments: &[S]) -> bool {
    segments.iter().any(|s| is_hidden_segment(s.as_ref()))
        || segments
            .last()
            .is_some_and(|name| has_denied_extension(name.as_ref()))
}

/// Whether a path relative to the site root is denied; a path that is not valid UTF-8 is checked
/// on its lossy reading.
pub fn denies_relative(path: &Path) -> bool {
    let segments: Vec<String> = path
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    denies_segments(&segments)
}

/// What a folder holds of a classic ASP.NET (.NET Framework) application.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassicAspNet {
    /// `web.config` has `<system.web>` with a `targetFramework`.
    pub system_web: bool,
    /// `Global.asax` exists.
    pub global_asax: bool,
    /// `bin/` holds at least one `.dll`.
    pub bin_dlls: bool,
}

/// The largest `web.config` read to look for `<system.web>`.
const WEB_CONFIG_LIMIT: u64 = 1 << 20;

/// Recognises a classic ASP.NET application in `root`: any of `<system.web>` with a
/// `targetFramework` in `web.config`, `Global.asax`, `bin/*.dll`, and no ASP.NET Core or
/// HttpPlatformHandler configuration (`<aspNetCore`, `<httpPlatform` in `web.config`), which
/// would make it an application the host may run. `None` for anything else, also for a folder
/// that cannot be read.
pub fn detect_classic_aspnet(root: &Path) -> Option<ClassicAspNet> {
    let entries: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    let find = |name: &str| {
        entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| p.clone())
    };
    let mut found = ClassicAspNet::default();
    if let Some(web_config) = find("web.config") {
        let text = read_limited(&web_config)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if text.contains("<aspnetcore") || text.contains("<httpplatform") {
            return None;
        }
        found.system_web = text.contains("<system.web>") && text.contains("targetframework");
    }
    found.global_asax = find("Global.asax").is_some_and(|p| p.is_file());
    found.bin_dlls = find("bin").is_some_and(|bin| {
        std::fs::read_dir(bin).is_ok_and(|mut entries| {
            entries.any(|e| {
                e.ok().is_some_and(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".dll"))
                })
            })
        })
    });
    (found.system_web || found.global_asax || found.bin_dlls).then_some(found)
}

fn read_limited(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(WEB_CONFIG_LIMIT)
        .read_to_end(&mut text)
        .ok()?;
    Some(String::from_utf8_lossy(&text).into_owned())
}

/// The warning for a task's status and events when `root` holds a classic ASP.NET application;
/// `field` names the folder's configuration field (e.g. `application[0].path`).
pub fn classic_aspnet_warning(field: &str, root: &Path) -> Option<String> {
    let found = detect_classic_aspnet(root)?;
    let mut signs = Vec::new();
    if found.system_web {
        signs.push("web.config with <system.web targetFramework>");
    }
    if found.global_asax {
        signs.push("Global.asax");
    }
    if found.bin_dlls {
        signs.push("bin/*.dll");
    }
    Some(format!(
        "{field}: {} looks like a classic ASP.NET (.NET Framework) application ({}); it cannot run \
         on Linux and is served as static files, with IIS's request filtering hiding bin, App_Data, \
         web.config, .cshtml, .asax and the like (404)",
        root.display(),
        signs.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_segments_and_extensions_are_denied_in_any_case_and_windows_spelling() {
        for denied in [
            &["bin", "AspNetSampleApp.dll"][..],
            &["BIN", "x.dll"],
            &["App_Data", "db.mdf"],
            &["app_data", "readme.txt"],
            &["Views", "Home", "Index.cshtml"],
            &["Global.asax"],
            &["global.ASAX"],
            &["web.config"],
            &["Web.Config. "],
            &["web.config::$DATA"],
            &["sub", "web.config"],
            &["db.MDF.."],
            &["x.sdmdocument"],
            &["App_Browsers", "b"],
        ] {
            assert!(denies_segments(denied), "{denied:?}");
        }
        for allowed in [
            &["index.html"][..],
            &["binary", "a.txt"],
            &["css", "site.css"],
            &["config"],
            &[".cs"],
            &["a.csx"],
            &["App_Data2", "x.txt"],
            &["scripts", "app.js"],
        ] {
            assert!(!denies_segments(allowed), "{allowed:?}");
        }
        assert!(denies_relative(Path::new("a/App_Code/x.txt")));
        assert!(!denies_relative(Path::new("a/b/x.txt")));
    }

    #[test]
    fn classic_aspnet_folders_are_recognised_and_core_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(detect_classic_aspnet(root), None);
        std::fs::write(
            root.join("web.config"),
            r#"<configuration><system.web><compilation targetFramework="4.8" /></system.web></configuration>"#,
        )
        .unwrap();
        std::fs::create_dir(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/AspNetSampleApp.dll"), "MZ").unwrap();
        std::fs::write(root.join("Global.asax"), "<%@ Application %>").unwrap();
        assert_eq!(
            detect_classic_aspnet(root),
            Some(ClassicAspNet {
                system_web: true,
                global_asax: true,
                bin_dlls: true
            })
        );
        let warning = classic_aspnet_warning("application[0].path", root).unwrap();
        assert!(
            warning.starts_with("application[0].path: ")
                && warning.contains("classic ASP.NET")
                && warning.contains("Global.asax, bin/*.dll"),
            "{warning}"
        );

        std::fs::write(
            root.join("web.config"),
            r#"<configuration><system.webServer><aspNetCore processPath="dotnet" /></system.webServer></configuration>"#,
        )
        .unwrap();
        assert_eq!(detect_classic_aspnet(root), None);
    }
}
