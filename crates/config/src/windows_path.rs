//! Paths written for Windows fail clearly: a job migrated from the original driver with
//! `path = "C:\\inetpub\\wwwroot"` would otherwise create a folder literally named
//! `C:\inetpub\wwwroot` in the task folder and answer 404. Drive paths (`C:\…`, `C:/…`, `C:`), UNC
//! paths (`\\server\share`) and backslash separators are refused with an error that names the
//! field and says what to write on Linux.

use crate::error::ConfigError;
use crate::task::TaskConfig;

/// What kind of Windows path `value` is, for the message; `None` for a Linux path.
pub fn windows_path_kind(value: &str) -> Option<&'static str> {
    let bytes = value.as_bytes();
    if value.starts_with("\\\\") {
        return Some("a Windows UNC path");
    }
    if bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes.len() == 2 || bytes[2] == b'\\' || bytes[2] == b'/')
    {
        return Some("a Windows drive path");
    }
    value
        .contains('\\')
        .then_some("a path with Windows separators (\\)")
}

/// The last folder or file name of a Windows path, for a suggestion (`C:\inetpub\wwwroot` →
/// `wwwroot`).
fn last_name(value: &str) -> Option<&str> {
    value
        .split(['\\', '/'])
        .rev()
        .find(|s| !(s.is_empty() || s.len() == 2 && s.ends_with(':')))
}

/// Fails at `field` when `value` is a Windows path. `relative_example` is what a path relative to
/// the task folder looks like for this field (`local/site`); `None` for fields that take only
/// absolute paths (the driver's `placeholder_app_path`).
pub fn check(field: &str, value: &str, relative_example: Option<&str>) -> Result<(), ConfigError> {
    let Some(kind) = windows_path_kind(value) else {
        return Ok(());
    };
    let name = last_name(value).unwrap_or("site");
    let advice = match relative_example {
        Some(example) => format!(
            "on Linux write a path relative to the task folder, e.g. \"local/{name}\" (the job's \
             artifact or template destination; {example}), or an absolute Linux path such as \
             \"/srv/{name}\""
        ),
        None => format!("on Linux write an absolute Linux path, e.g. \"/srv/{name}\""),
    };
    Err(ConfigError::new(
        field,
        format!("{value:?} is {kind}; {advice}"),
    ))
}

/// Checks every path field of a task: application and virtual directory folders, certificate
/// files.
pub fn check_task(task: &TaskConfig) -> Result<(), ConfigError> {
    for (i, app) in task.applications.iter().enumerate() {
        check(
            &format!("application[{i}].path"),
            &app.path,
            Some("folders are relative to the task folder"),
        )?;
        for (j, dir) in app.virtual_directories.iter().enumerate() {
            check(
                &format!("application[{i}].virtual_directory[{j}].path"),
                &dir.path,
                Some("folders are relative to the task folder"),
            )?;
        }
    }
    for (i, binding) in task.bindings.iter().enumerate() {
        let Some(certificate) = &binding.certificate else {
            continue;
        };
        for (name, value) in [
            ("pfx_file", &certificate.pfx_file),
            ("cert_file", &certificate.cert_file),
            ("key_file", &certificate.key_file),
        ] {
            if let Some(value) = value {
                check(
                    &format!("binding[{i}].certificate.{name}"),
                    value,
                    Some("Nomad's secrets/ folder suits certificates"),
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_are_recognised_and_linux_ones_are_not() {
        for (path, kind) in [
            ("C:\\inetpub\\wwwroot", "a Windows drive path"),
            ("c:/inetpub/wwwroot", "a Windows drive path"),
            ("D:", "a Windows drive path"),
            ("\\\\server\\share\\site", "a Windows UNC path"),
            ("local\\site", "a path with Windows separators (\\)"),
        ] {
            assert_eq!(windows_path_kind(path), Some(kind), "{path}");
        }
        for path in [
            "local/site",
            "/srv/www",
            "local/a:b",
            "//srv/www",
            "ab:/x",
            "C",
        ] {
            assert_eq!(windows_path_kind(path), None, "{path}");
        }
    }

    #[test]
    fn the_error_names_the_field_and_says_what_to_write() {
        let error = check(
            "application[0].path",
            "C:\\inetpub\\wwwroot",
            Some("folders are relative to the task folder"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("application[0].path: \"C:\\\\inetpub\\\\wwwroot\" is a Windows drive path; on Linux write a path relative to the task folder, e.g. \"local/wwwroot\""),
            "{error}"
        );
        assert!(error.contains("\"/srv/wwwroot\""), "{error}");
        let error = check("placeholder_app_path", "\\\\fs\\placeholder", None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "placeholder_app_path: \"\\\\\\\\fs\\\\placeholder\" is a Windows UNC path; on Linux write an absolute Linux path, e.g. \"/srv/placeholder\""
        );
    }

    #[test]
    fn the_originals_sample_job_fails_validation_and_resolution() {
        use crate::{DriverConfig, ResolveContext, resolve};
        let body = serde_json::json!({
            "application": {"path": "C:\\inetpub\\wwwroot"},
            "binding": {"type": "http", "port": "httplabel"},
        });
        let task = TaskConfig::from_json(&body).unwrap();
        let error = task.validate(&DriverConfig::default()).unwrap_err();
        assert_eq!(error.path, "application[0].path");
        let ctx = ResolveContext {
            task_dir: "/alloc/web".into(),
            ports: [("httplabel".to_owned(), 25001)].into(),
            ..ResolveContext::default()
        };
        assert!(resolve(&task, &ctx).is_err());

        let body = serde_json::json!({
            "application": {"path": "local/site"},
            "binding": {"type": "https", "port": "httplabel", "certificate": {"pfx_file": "D:\\certs\\site.pfx"}},
        });
        let error = TaskConfig::from_json(&body)
            .unwrap()
            .validate(&DriverConfig::default())
            .unwrap_err();
        assert_eq!(error.path, "binding[0].certificate.pfx_file");
        assert!(error.message.contains("\"local/site.pfx\""), "{error}");

        let driver = serde_json::json!({"placeholder_app_path": "C:\\inetpub\\placeholder"});
        let error = DriverConfig::from_json(&driver).unwrap_err();
        assert_eq!(error.path, "placeholder_app_path");
    }
}
