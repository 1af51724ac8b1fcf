//! IIS-style names of sites and application pools.
//!
//! A task's site is `nomad-{allocId}-{taskName}`; its pools are `nomad-{allocId}-{taskName}`
//! for the `default` pool and `nomad-{allocId}-{taskName}-{poolName}` for the others.
//! Characters IIS refuses in site or pool names (`\ / ? ; : @ & = + $ , | " < > * [ ] '`),
//! whitespace and control characters become `_`. Names longer than 64 characters are an
//! error: the original once truncated them, and two tasks ended up sharing a pool.

use crate::error::ConfigError;

/// Prefix of every name the driver creates.
pub const NAME_PREFIX: &str = "nomad-";
/// Longest site or pool name accepted (IIS's limit for pool names).
pub const MAX_NAME_LEN: usize = 64;
/// The pool an application uses when it names none, created implicitly when needed.
pub const DEFAULT_POOL: &str = "default";

/// Characters IIS rejects in site names or application pool names.
const INVALID_CHARS: &[char] = &[
    '\\', '/', '?', ';', ':', '@', '&', '=', '+', '$', ',', '|', '"', '<', '>', '*', '[', ']', '\'',
];

/// Replaces every character IIS would reject, and whitespace and control characters, by `_`.
pub fn sanitize_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if INVALID_CHARS.contains(&c) || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn checked(kind: &str, raw: String) -> Result<String, ConfigError> {
    let name = sanitize_name(&raw);
    let length = name.chars().count();
    if length > MAX_NAME_LEN {
        return Err(ConfigError::new(
            "",
            format!(
                "{kind} name {name:?} is {length} characters long, over the limit of {MAX_NAME_LEN}: \
                 shorten the task name by {} characters",
                length - MAX_NAME_LEN
            ),
        ));
    }
    Ok(name)
}

/// The site name of a task: `nomad-{allocId}-{taskName}`, sanitised, at most 64 characters.
pub fn site_name(alloc_id: &str, task_name: &str) -> Result<String, ConfigError> {
    checked("site", format!("{NAME_PREFIX}{alloc_id}-{task_name}"))
}

/// The full name of a pool: `nomad-{allocId}-{taskName}` for `default`, else with
/// `-{poolName}` appended; sanitised, at most 64 characters.
pub fn pool_full_name(
    alloc_id: &str,
    task_name: &str,
    pool_name: &str,
) -> Result<String, ConfigError> {
    let suffix = if pool_name == DEFAULT_POOL {
        String::new()
    } else {
        format!("-{pool_name}")
    };
    checked(
        "application pool",
        format!("{NAME_PREFIX}{alloc_id}-{task_name}{suffix}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOC: &str = "5b3a9e0c-2f41-4d6a-9c1e-7a8b9c0d1e2f";

    #[test]
    fn builds_site_and_pool_names() {
        assert_eq!(
            site_name(ALLOC, "web").as_deref(),
            Ok("nomad-5b3a9e0c-2f41-4d6a-9c1e-7a8b9c0d1e2f-web")
        );
        assert_eq!(
            pool_full_name(ALLOC, "web", "default").as_deref(),
            Ok("nomad-5b3a9e0c-2f41-4d6a-9c1e-7a8b9c0d1e2f-web")
        );
        assert_eq!(
            pool_full_name(ALLOC, "web", "api").as_deref(),
            Ok("nomad-5b3a9e0c-2f41-4d6a-9c1e-7a8b9c0d1e2f-web-api")
        );
    }

    #[test]
    fn replaces_invalid_characters() {
        assert_eq!(
            sanitize_name("a b/c:d*e\tf[g]h'i\"j"),
            "a_b_c_d_e_f_g_h_i_j"
        );
        assert_eq!(sanitize_name("ok-name_1.2%#é"), "ok-name_1.2%#é");
        assert_eq!(site_name("a", "my task").as_deref(), Ok("nomad-a-my_task"));
    }

    #[test]
    fn refuses_names_over_64_characters() {
        // 6 + 36 + 1 + 21 = 64 characters: the longest task name that fits.
        let fits = "t".repeat(21);
        assert_eq!(site_name(ALLOC, &fits).map(|n| n.len()), Ok(64));
        let err = site_name(ALLOC, &"t".repeat(23)).expect_err("66 characters");
        assert_eq!(
            err.to_string(),
            format!(
                "site name \"nomad-{ALLOC}-{}\" is 66 characters long, over the limit of 64: \
                 shorten the task name by 2 characters",
                "t".repeat(23)
            )
        );
        let err = pool_full_name(ALLOC, &fits, "api").expect_err("68 characters");
        assert!(err.message.starts_with("application pool name"), "{err}");
        assert!(
            err.message
                .ends_with("shorten the task name by 4 characters"),
            "{err}"
        );
    }
}
