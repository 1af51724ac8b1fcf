//! The environment of a task's workers.
//!
//! Nomad's `meta` can produce variable names that differ only in case (issue #149 of the
//! original). Windows treats those as one variable; we keep one too, so an application
//! ported from IIS sees what it saw there: among names equal ignoring case, the first in
//! bytewise order wins, which is the most upper-case spelling (`FOO` before `Foo` before
//! `foo`). Names that cannot be set in a process environment (empty, or containing `=` or
//! NUL) are dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Variables pointing at the task's temporary folder. `TMP` and `TEMP` as on Windows, and
/// `TMPDIR`, which Linux programs read.
pub const TEMP_VARIABLES: [&str; 3] = ["TMP", "TEMP", "TMPDIR"];

/// Removes names that differ only in case from an earlier (bytewise smaller) name, and names
/// that cannot be set.
pub fn dedupe_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut seen = BTreeSet::new();
    let mut out = BTreeMap::new();
    // BTreeMap iterates in bytewise key order, so the first spelling seen is the one kept.
    for (name, value) in env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            continue;
        }
        if seen.insert(name.to_uppercase()) {
            out.insert(name.clone(), value.clone());
        }
    }
    out
}

/// The workers' environment: the task's variables de-duplicated, with `TMP`, `TEMP` and
/// `TMPDIR` set to `tmp_dir` (replacing any spelling of them).
pub fn task_env(env: &BTreeMap<String, String>, tmp_dir: &Path) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = env
        .iter()
        .filter(|(name, _)| {
            !TEMP_VARIABLES
                .iter()
                .any(|temp| name.eq_ignore_ascii_case(temp))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tmp = tmp_dir.to_string_lossy().into_owned();
    for name in TEMP_VARIABLES {
        env.insert(name.to_owned(), tmp.clone());
    }
    dedupe_env(&env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keeps_the_most_upper_case_spelling() {
        let deduped = dedupe_env(&env(&[
            ("foo", "3"),
            ("Foo", "2"),
            ("FOO", "1"),
            ("bar", "x"),
            ("NOMAD_META_owner", "a"),
            ("NOMAD_META_OWNER", "b"),
        ]));
        assert_eq!(
            deduped,
            env(&[("FOO", "1"), ("NOMAD_META_OWNER", "b"), ("bar", "x")])
        );
    }

    #[test]
    fn drops_names_that_cannot_be_set() {
        let deduped = dedupe_env(&env(&[("", "x"), ("A=B", "x"), ("OK", "")]));
        assert_eq!(deduped, env(&[("OK", "")]));
    }

    #[test]
    fn points_temp_variables_at_the_task_tmp_dir() {
        let out = task_env(
            &env(&[("tmp", "/elsewhere"), ("Temp", "/x"), ("PATH", "/bin")]),
            Path::new("/alloc/web/tmp"),
        );
        assert_eq!(
            out,
            env(&[
                ("PATH", "/bin"),
                ("TEMP", "/alloc/web/tmp"),
                ("TMP", "/alloc/web/tmp"),
                ("TMPDIR", "/alloc/web/tmp"),
            ])
        );
    }
}
