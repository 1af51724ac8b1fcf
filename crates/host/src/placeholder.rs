//! Prepares application folders before anything is served: a missing folder is created, and
//! an empty one gets a copy of the placeholder application (as the original driver does), or,
//! without a `placeholder_app_path`, a built-in start page (`iisstart.htm`, as IIS shows its
//! start page), so a freshly scheduled site answers with a page instead of 404 until its
//! content is uploaded.
//!
//! The copy takes folders and regular files; symbolic links and special files in the
//! placeholder are skipped, so a placeholder can never make the host copy from outside it.

use std::io;
use std::path::Path;

use control::HostSpec;

use crate::error::{StartupError, describe_io};

/// Creates missing application folders and fills empty ones with the placeholder.
pub(crate) fn prepare_application_folders(spec: &HostSpec) -> Result<(), StartupError> {
    for (index, app) in spec.applications.iter().enumerate() {
        let field = format!("application[{index}].path");
        let empty = match std::fs::read_dir(&app.path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&app.path).map_err(|e| {
                    StartupError::invalid(
                        &field,
                        format!("cannot create {}: {}", app.path.display(), describe_io(&e)),
                    )
                })?;
                true
            }
            Err(e) => {
                return Err(StartupError::invalid(
                    &field,
                    format!("cannot read {}: {}", app.path.display(), describe_io(&e)),
                ));
            }
        };
        if empty && spec.placeholder_app_path.is_none() {
            write_start_page(&app.path);
        }
        if let (true, Some(placeholder)) = (empty, spec.placeholder_app_path.as_deref()) {
            copy_tree(placeholder, &app.path).map_err(|(path, e)| {
                StartupError::invalid(
                    &field,
                    format!(
                        "cannot copy placeholder_app_path {} into {}: {}: {}",
                        placeholder.display(),
                        app.path.display(),
                        path,
                        describe_io(&e)
                    ),
                )
            })?;
        }
    }
    Ok(())
}

/// The file name of the built-in start page: IIS's own start page file name, last in IIS's and the
/// static handler's default document lists, so any `index.html` or `default.htm` uploaded later
/// wins over it.
pub(crate) const START_PAGE: &str = "iisstart.htm";

/// The built-in start page for an empty application folder when the driver has no
/// `placeholder_app_path` (IIS shows its start page there).
const START_PAGE_HTML: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<title>Site is running</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f4f6f8; color: #1b2733; }
main { max-width: 40em; margin: 15vh auto; padding: 2em; background: #fff; border-radius: 6px; }
h1 { font-weight: 400; color: #0b5cad; }
</style>
</head>
<body>
<main>
<h1>This site is running</h1>
<p>The application folder is empty. Deploy your content into it (for example with an
<code>artifact</code> block) and it is served here.</p>
<p><small>nomad_iis</small></p>
</main>
</body>
</html>
";

/// Writes the built-in start page into an empty application folder. A folder that cannot be
/// written (a read-only mount) stays empty and answers 404, as before: not worth failing the task.
fn write_start_page(folder: &Path) {
    if let Err(e) = std::fs::write(folder.join(START_PAGE), START_PAGE_HTML) {
        tracing::warn!(folder = %folder.display(), error = %e, "cannot write the start page");
    }
}

/// Copies the folders and regular files below `from` into `to`; the error names the path.
fn copy_tree(from: &Path, to: &Path) -> Result<(), (String, io::Error)> {
    fn at(path: &Path) -> impl FnOnce(io::Error) -> (String, io::Error) + '_ {
        move |e| (path.display().to_string(), e)
    }
    for entry in std::fs::read_dir(from).map_err(at(from))? {
        let entry = entry.map_err(at(from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(at(&source))?;
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(at(&target))?;
            copy_tree(&source, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target).map_err(at(&source))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::ApplicationSpec;
    use std::path::PathBuf;

    fn spec(apps: Vec<PathBuf>, placeholder: Option<PathBuf>) -> HostSpec {
        HostSpec {
            applications: apps
                .into_iter()
                .enumerate()
                .map(|(i, path)| ApplicationSpec {
                    alias: format!("/a{i}"),
                    path,
                    pool: "default".into(),
                    virtual_directories: vec![],
                    process: None,
                })
                .collect(),
            placeholder_app_path: placeholder,
            ..crate::test_support::host_spec()
        }
    }

    #[test]
    fn empty_and_missing_folders_get_the_placeholder_and_full_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let placeholder = dir.path().join("placeholder");
        std::fs::create_dir_all(placeholder.join("css")).unwrap();
        std::fs::write(placeholder.join("index.html"), "placeholder").unwrap();
        std::fs::write(placeholder.join("css/site.css"), "body{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", placeholder.join("link")).unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let missing = dir.path().join("missing/app");
        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("index.html"), "mine").unwrap();

        let spec = spec(
            vec![empty.clone(), missing.clone(), full.clone()],
            Some(placeholder),
        );
        prepare_application_folders(&spec).unwrap();

        for app in [&empty, &missing] {
            assert_eq!(
                std::fs::read_to_string(app.join("index.html")).unwrap(),
                "placeholder"
            );
            assert_eq!(
                std::fs::read_to_string(app.join("css/site.css")).unwrap(),
                "body{}"
            );
            assert!(!app.join("link").exists());
        }
        assert_eq!(
            std::fs::read_to_string(full.join("index.html")).unwrap(),
            "mine"
        );
        assert!(!full.join("css").exists());
    }

    #[test]
    fn without_a_placeholder_empty_folders_get_the_start_page_and_full_ones_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let missing = dir.path().join("missing");
        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("default.htm"), "mine").unwrap();
        prepare_application_folders(&spec(
            vec![empty.clone(), missing.clone(), full.clone()],
            None,
        ))
        .unwrap();
        for app in [&empty, &missing] {
            let page = std::fs::read_to_string(app.join(START_PAGE)).unwrap();
            assert!(page.contains("This site is running"), "{page}");
        }
        assert!(!full.join(START_PAGE).exists());
    }

    #[test]
    fn a_missing_placeholder_names_the_application() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(vec![dir.path().join("app")], Some(dir.path().join("nope")));
        let error = prepare_application_folders(&spec).unwrap_err().to_string();
        assert!(
            error.starts_with("application[0].path: cannot copy placeholder_app_path"),
            "{error}"
        );
        assert!(error.ends_with("No such file or directory"), "{error}");
    }
}
