//! The file system side of a cache miss (blocking; run on tokio's blocking pool): finding the file a
//! request names, then reading it into a cache entry or opening it for streaming.
//!
//! Containment: the requested path is canonicalized (all symlinks resolved) and must lie below the
//! canonical root, else the answer is 404, the same as for a missing file, so probing reveals nothing.
//! Files are then opened by their canonical path with `O_NOFOLLOW`, so a symlink swapped in after the
//! check is refused rather than followed. Someone who can write into the site's folder can still race a
//! directory swap between the check and the open; they could publish any file there anyway.
//!
//! Only regular files are served (never a FIFO, device or socket, which could block or leak), and a
//! file IIS's request filtering would hide (`filter`: `web.config`, `bin/`, `App_Data/`, `.cs`, …) is
//! 404, checked by the name asked for and by the canonical name.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http::HeaderValue;
use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::cache::{CachedVariant, Dependency, Entry, FileIdentity, Fingerprint, Validation};
use crate::negotiate::{Encoding, Preference};
use crate::request_path::RequestPath;
use crate::response::{Representation, header_value};
use crate::watch::Watcher;

/// Where a request path leads.
#[derive(Debug)]
pub(crate) enum Resolution {
    NotFound,
    Forbidden,
    /// A directory named without its trailing slash: redirect to this relative location.
    Redirect(String),
    File(Found),
}

/// A regular file inside the root, with its precompressed siblings.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) content_type: HeaderValue,
    /// The file first, then the siblings that exist, as `stat` saw them.
    pub(crate) variants: Vec<FoundVariant>,
    /// Paths whose creation would change the answer: absent siblings, and for a folder request every
    /// default document.
    pub(crate) may_appear: Vec<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct FoundVariant {
    pub(crate) encoding: Encoding,
    /// The path as requested (below the root, possibly through symlinks).
    pub(crate) lexical: PathBuf,
    pub(crate) canonical: PathBuf,
    pub(crate) metadata: Metadata,
}

impl Found {
    /// The identity of the files found, to compare with a cached entry's.
    pub(crate) fn fingerprint(&self) -> Fingerprint {
        Fingerprint(
            self.variants
                .iter()
                .map(|variant| identity(&variant.canonical, &variant.metadata))
                .collect(),
        )
    }
}

/// What a miss produced.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// A small file, read whole, ready for the cache.
    Cached(Entry),
    /// A large file, opened for streaming the variant the request prefers.
    Stream {
        file: std::sync::Arc<File>,
        representation: Representation,
        content_type: HeaderValue,
        vary: bool,
    },
}

/// The settings a miss needs.
pub(crate) struct Settings<'a> {
    pub(crate) root: &'a Path,
    pub(crate) default_documents: &'a [String],
    pub(crate) cache_max_file_size: u64,
    pub(crate) cache_max_total: u64,
    pub(crate) watcher: Option<&'a Watcher>,
    /// The site clock (milliseconds) after which a `Revalidate` entry is first checked.
    pub(crate) next_check: u64,
}

/// Finds the file `path` names below `settings.root`.
pub(crate) fn resolve(settings: &Settings<'_>, path: &RequestPath) -> io::Result<Resolution> {
    let mut lexical = settings.root.to_path_buf();
    lexical.extend(&path.segments);
    let (canonical, metadata) = match canonical_inside(settings.root, &lexical) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(Resolution::NotFound),
        Err(error) => return classify(error),
    };
    // Paths that may not exist but whose appearance would change the answer.
    let mut may_appear = Vec::new();
    let (lexical, canonical, metadata) = if metadata.is_dir() {
        if !path.trailing_slash {
            // `./` keeps a segment such as `a:b` from reading as a URI scheme.
            let last = path.last_raw_segment.as_deref().unwrap_or("");
            return Ok(Resolution::Redirect(format!("./{last}/")));
        }
        may_appear.extend(
            settings
                .default_documents
                .iter()
                .map(|document| lexical.join(document)),
        );
        match default_document(settings, &lexical)? {
            Some(found) => found,
            None => return Ok(Resolution::NotFound),
        }
    } else if metadata.is_file() && !path.trailing_slash {
        (lexical, canonical, metadata)
    } else {
        return Ok(Resolution::NotFound);
    };
    // The file actually found, by the name asked for and by the name it really has (a default
    // document, a symbolic link), both below the root: IIS's request filtering (filter.rs).
    let denied = |path: &Path| {
        path.strip_prefix(settings.root)
            .map_or(true, crate::filter::denies_relative)
    };
    if denied(&lexical) || denied(&canonical) {
        return Ok(Resolution::NotFound);
    }
    let mut variants = vec![FoundVariant {
        encoding: Encoding::Identity,
        lexical: lexical.clone(),
        canonical,
        metadata,
    }];
    for encoding in Encoding::COMPRESSED {
        let sibling = with_suffix(&lexical, encoding.file_suffix());
        match canonical_inside(settings.root, &sibling) {
            Ok(Some((canonical, metadata))) if metadata.is_file() => variants.push(FoundVariant {
                encoding,
                lexical: sibling,
                canonical,
                metadata,
            }),
            Ok(_) => may_appear.push(sibling),
            Err(error) if is_absence(&error) => may_appear.push(sibling),
            Err(error) => return classify(error),
        }
    }
    Ok(Resolution::File(Found {
        content_type: content_type(&lexical),
        variants,
        may_appear,
    }))
}

/// Reads `found` into a cache entry when it is small enough, else opens the preferred variant.
pub(crate) fn load(
    settings: &Settings<'_>,
    found: Found,
    preference: Preference,
) -> io::Result<Loaded> {
    let sizes: Vec<u64> = found.variants.iter().map(|v| v.metadata.len()).collect();
    let cacheable = sizes
        .iter()
        .all(|size| *size <= settings.cache_max_file_size)
        && sizes.iter().sum::<u64>() <= settings.cache_max_total;
    if cacheable && let Some(entry) = read_entry(settings, &found)? {
        return Ok(Loaded::Cached(entry));
    }
    let encoding = preference.pick(|encoding| {
        found
            .variants
            .iter()
            .any(|variant| variant.encoding == encoding)
    });
    let vary = found.variants.len() > 1;
    let Some(variant) = found
        .variants
        .into_iter()
        .find(|variant| variant.encoding == encoding)
    else {
        return Err(io::Error::other(
            "the chosen variant vanished from the list",
        ));
    };
    let (file, metadata) = open_regular(&variant.canonical)?;
    // Shared right away, on this blocking thread: a burst of requests for one file then holds
    // one descriptor, not one per request waiting for its response to be built.
    let file = crate::budget::share(file);
    Ok(Loaded::Stream {
        representation: Representation::new(&metadata, metadata.len(), encoding),
        file,
        content_type: found.content_type,
        vary,
    })
}

/// Reads every variant whole. `None` when a file grew past the cache limit since `stat` (stream it).
fn read_entry(settings: &Settings<'_>, found: &Found) -> io::Result<Option<Entry>> {
    // Watches go up before the files are read, so a change during the read is seen (see `cache`).
    let watched = settings
        .watcher
        .and_then(|watcher| watch_dependencies(watcher, settings.root, found));
    let mut variants = Vec::with_capacity(found.variants.len());
    let mut identities = Vec::with_capacity(found.variants.len());
    for variant in &found.variants {
        let (file, metadata) = match open_regular(&variant.canonical) {
            Ok(opened) => opened,
            // A sibling removed since `stat` is simply absent; its removal also refuses this insert.
            Err(error) if variant.encoding != Encoding::Identity && is_absence(&error) => continue,
            Err(error) => return Err(error),
        };
        let limit = settings.cache_max_file_size;
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.len().min(limit)).unwrap_or(0));
        file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Ok(None);
        }
        identities.push(identity(&variant.canonical, &metadata));
        variants.push(CachedVariant {
            representation: Representation::new(&metadata, bytes.len() as u64, variant.encoding),
            bytes: Bytes::from(bytes),
        });
    }
    let (validation, dependencies) = match watched {
        Some(dependencies) => (Validation::Watched, dependencies),
        None => (
            Validation::Revalidate {
                fingerprint: Fingerprint(identities),
                next_check: AtomicU64::new(settings.next_check),
            },
            Vec::new(),
        ),
    };
    Ok(Some(Entry::new(
        found.content_type.clone(),
        variants,
        validation,
        dependencies,
    )))
}

/// Watches the directories along every path the answer depends on, each for the name of the next path
/// component: for each variant its requested and its canonical path (so renaming or replacing any
/// folder on the way is noticed, and a symlink's target as well as the link), and the paths in
/// `may_appear`. `None` if a watch cannot be set up (e.g. the user's watch limit is reached); the entry
/// is then revalidated by `stat`.
fn watch_dependencies(watcher: &Watcher, root: &Path, found: &Found) -> Option<Vec<Dependency>> {
    let mut descriptors = HashMap::new();
    let mut dependencies = Vec::new();
    let existing = found
        .variants
        .iter()
        .flat_map(|variant| [&variant.lexical, &variant.canonical])
        .map(|path| (path, true));
    let possible = found.may_appear.iter().map(|path| (path, false));
    for (path, exists) in existing.chain(possible) {
        for (dir, name) in path_steps(root, path) {
            let descriptor = match descriptors.get(&dir) {
                Some(descriptor) => *descriptor,
                None => match watcher.watch(&dir) {
                    Ok(descriptor) => *descriptors.entry(dir).or_insert(descriptor),
                    // A folder on a path that may appear later does not exist yet: the step before
                    // already depends on its name, so its creation is noticed.
                    Err(Errno::ENOENT | Errno::ENOTDIR) if !exists => break,
                    Err(errno) => {
                        tracing::debug!(dir = %dir.display(), error = %errno, "cannot watch directory, revalidating by stat");
                        return None;
                    }
                },
            };
            let dependency = Dependency {
                dir: descriptor,
                name,
            };
            if !dependencies.contains(&dependency) {
                dependencies.push(dependency);
            }
        }
    }
    Some(dependencies)
}

/// The steps from `root` down to `path`: each folder on the way with the name of the next component.
fn path_steps(root: &Path, path: &Path) -> Vec<(PathBuf, OsString)> {
    let Ok(relative) = path.strip_prefix(root) else {
        return Vec::new();
    };
    let mut dir = root.to_path_buf();
    let mut steps = Vec::new();
    for component in relative {
        steps.push((dir.clone(), component.to_os_string()));
        dir.push(component);
    }
    steps
}

/// The first default document in directory `dir` that is a regular file inside the root.
fn default_document(
    settings: &Settings<'_>,
    dir: &Path,
) -> io::Result<Option<(PathBuf, PathBuf, Metadata)>> {
    for document in settings.default_documents {
        let lexical = dir.join(document);
        match canonical_inside(settings.root, &lexical) {
            Ok(Some((canonical, metadata))) if metadata.is_file() => {
                return Ok(Some((lexical, canonical, metadata)));
            }
            Ok(_) => {}
            Err(error) if is_absence(&error) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// Canonicalizes `path` and stats it; `None` when it resolves outside `root`.
fn canonical_inside(root: &Path, path: &Path) -> io::Result<Option<(PathBuf, Metadata)>> {
    let canonical = std::fs::canonicalize(path)?;
    if !canonical.starts_with(root) {
        return Ok(None);
    }
    let metadata = std::fs::metadata(&canonical)?;
    Ok(Some((canonical, metadata)))
}

/// Opens a regular file without following a final symlink and without blocking on a FIFO.
fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is no longer a regular file", path.display()),
        ));
    }
    Ok((file, metadata))
}

fn identity(path: &Path, metadata: &Metadata) -> FileIdentity {
    FileIdentity {
        path: path.to_path_buf(),
        device: metadata.dev(),
        inode: metadata.ino(),
        len: metadata.len(),
        modified: (metadata.mtime(), metadata.mtime_nsec()),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// The `Content-Type` for a file name; text types are declared UTF-8.
///
/// Common types are static header values, whose clones share no reference count between threads.
fn content_type(path: &Path) -> HeaderValue {
    let essence = mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let with_charset = match essence {
        "text/html" => Some("text/html; charset=utf-8"),
        "text/css" => Some("text/css; charset=utf-8"),
        "text/javascript" | "application/javascript" => Some("text/javascript; charset=utf-8"),
        "text/plain" => Some("text/plain; charset=utf-8"),
        "text/xml" => Some("text/xml; charset=utf-8"),
        "text/csv" => Some("text/csv; charset=utf-8"),
        "application/json" => Some("application/json; charset=utf-8"),
        "application/xml" => Some("application/xml; charset=utf-8"),
        "image/svg+xml" => Some("image/svg+xml; charset=utf-8"),
        _ => None,
    };
    let text = match with_charset {
        Some(text) => text,
        None if essence.starts_with("text/") => {
            return header_value(format!("{essence}; charset=utf-8"));
        }
        None => essence,
    };
    HeaderValue::from_maybe_shared(Bytes::from_static(text.as_bytes()))
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// Errors that mean "there is no such file here" rather than a failure.
pub(crate) fn is_absence(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) || matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::ELOOP | Errno::ENAMETOOLONG)
    )
}

/// Maps an I/O error during resolution to an answer, or passes on a real failure (500).
fn classify(error: io::Error) -> io::Result<Resolution> {
    if is_absence(&error) {
        Ok(Resolution::NotFound)
    } else if error.kind() == io::ErrorKind::PermissionDenied {
        Ok(Resolution::Forbidden)
    } else {
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_steps_cover_the_path_down_from_the_root() {
        let root = Path::new("/srv/site");
        let step = |dir: &str, name: &str| (PathBuf::from(dir), OsString::from(name));
        assert_eq!(
            path_steps(root, Path::new("/srv/site/a/b/c.txt")),
            [
                step("/srv/site", "a"),
                step("/srv/site/a", "b"),
                step("/srv/site/a/b", "c.txt"),
            ]
        );
        assert_eq!(
            path_steps(root, Path::new("/srv/site/index.html")),
            [step("/srv/site", "index.html")]
        );
        assert!(path_steps(root, Path::new("/elsewhere/x")).is_empty());
    }

    #[test]
    fn text_types_declare_utf8() {
        assert_eq!(
            content_type(Path::new("a.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
        assert_eq!(
            content_type(Path::new("a.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(
            content_type(Path::new("noextension")),
            "application/octet-stream"
        );
    }
}
