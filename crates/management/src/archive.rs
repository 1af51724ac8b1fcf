//! Zip archives: validated before anything is written (zip-slip, absolute paths, symlinks, zip
//! bombs by size and ratio), extracted into a fresh folder with every entry's real size checked
//! against what it declared; and folders written as a zip stream for downloads.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// Limits on what an archive may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total uncompressed bytes.
    pub max_total: u64,
    /// Entries.
    pub max_entries: usize,
    /// Largest uncompressed/compressed ratio of an entry bigger than [`RATIO_FLOOR`].
    pub max_ratio: u64,
}

/// Entries up to this size may have any ratio (a small file of zeros compresses very well).
pub const RATIO_FLOOR: u64 = 1 << 20;

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_total: 4 << 30,
            max_entries: 100_000,
            max_ratio: 200,
        }
    }
}

/// Why an archive was refused (400) or could not be written (500).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not a readable zip.
    #[error("not a valid zip archive: {0}")]
    NotZip(String),
    /// An entry names an absolute path.
    #[error("entry {0:?} has an absolute path")]
    AbsolutePath(String),
    /// An entry would land outside the target (zip-slip).
    #[error("entry {0:?} leads outside the target folder (zip-slip)")]
    Escapes(String),
    /// An entry is a symbolic link.
    #[error("entry {0:?} is a symbolic link; links are not extracted")]
    Symlink(String),
    /// Too many entries.
    #[error("the archive has {count} entries, more than the limit of {limit}")]
    TooManyEntries {
        /// Entries found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The archive expands to too much.
    #[error("the archive expands to {total} bytes, more than the limit of {limit} (zip bomb?)")]
    TooLarge {
        /// Declared total.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry compresses suspiciously well.
    #[error("entry {name:?} expands {ratio}x, more than the limit of {limit}x (zip bomb?)")]
    Ratio {
        /// Entry.
        name: String,
        /// Its ratio.
        ratio: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry holds more than it declared.
    #[error("entry {0:?} holds more data than its header declares (zip bomb?)")]
    SizeMismatch(String),
    /// Writing the files failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

impl ArchiveError {
    /// Whether the archive itself is at fault (400) rather than the machine (500).
    pub fn is_bad_archive(&self) -> bool {
        !matches!(self, Self::Io { .. })
    }
}

/// What an extraction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Files written.
    pub files: u64,
    /// Folders created.
    pub folders: u64,
    /// Bytes written.
    pub bytes: u64,
}

const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The relative path of an entry name, or why it is refused.
fn entry_path(name: &str) -> Result<PathBuf, ArchiveError> {
    let bytes = name.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if name.starts_with('/') || name.starts_with('\\') || drive {
        return Err(ArchiveError::AbsolutePath(name.to_owned()));
    }
    let mut path = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(ArchiveError::Escapes(name.to_owned())),
            part if part.contains('\0') => return Err(ArchiveError::Escapes(name.to_owned())),
            part => path.push(part),
        }
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(ArchiveError::Escapes(name.to_owned()));
    }
    Ok(path)
}

/// Checks every entry of the archive at `zip_path`, then extracts it into `dest`, which must not
/// exist yet. On error `dest` may hold part of the archive; the caller removes it.
pub fn extract(
    zip_path: &Path,
    dest: &Path,
    limits: ExtractLimits,
) -> Result<Extracted, ArchiveError> {
    let file = File::open(zip_path).map_err(io_at(zip_path))?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
    if archive.len() > limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            count: archive.len(),
            limit: limits.max_entries,
        });
    }
    // First pass: refuse the archive before a single byte is written.
    let mut total: u64 = 0;
    let mut plan = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?
            .into_owned();
        let path = entry_path(&name)?;
        // `enclosed_name` is the zip crate's own guard; both must agree.
        if entry.enclosed_name().is_none() {
            return Err(ArchiveError::Escapes(name));
        }
        if entry.unix_mode().is_some_and(|m| m & S_IFMT == S_IFLNK) || entry.is_symlink() {
            return Err(ArchiveError::Symlink(name));
        }
        let size = entry.size();
        total = total.saturating_add(size);
        if total > limits.max_total {
            return Err(ArchiveError::TooLarge {
                total,
                limit: limits.max_total,
            });
        }
        if size > RATIO_FLOOR {
            let ratio = size / entry.compressed_size().max(1);
            if ratio > limits.max_ratio {
                return Err(ArchiveError::Ratio {
                    name,
                    ratio,
                    limit: limits.max_ratio,
                });
            }
        }
        plan.push((path, entry.is_dir(), size, entry.unix_mode()));
    }
    std::fs::create_dir(dest).map_err(io_at(dest))?;
    let mut done = Extracted::default();
    for (index, (path, is_dir, size, mode)) in plan.into_iter().enumerate() {
        let target = dest.join(&path);
        if is_dir {
            std::fs::create_dir_all(&target).map_err(io_at(&target))?;
            done.folders += 1;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_at(parent))?;
        }
        let mut entry = archive
            .by_index(index)
            .map_err(|e| ArchiveError::NotZip(e.to_string()))?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(io_at(&target))?;
        // One byte more than declared tells a lying header from an honest one.
        let written = io::copy(&mut (&mut entry).take(size.saturating_add(1)), &mut out).map_err(
            |e| match e.kind() {
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                    ArchiveError::NotZip(format!("{}: {e}", path.display()))
                }
                _ => ArchiveError::Io {
                    path: target.clone(),
                    source: e,
                },
            },
        )?;
        if written > size {
            return Err(ArchiveError::SizeMismatch(path.display().to_string()));
        }
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            // Keep the execute bits (worker binaries), never set-id or world-writable bits.
            let perms = std::fs::Permissions::from_mode((mode & 0o755) | 0o600);
            std::fs::set_permissions(&target, perms).map_err(io_at(&target))?;
        }
        done.files += 1;
        done.bytes += written;
    }
    Ok(done)
}

/// Writes the folder `root` as a zip into `out` (a stream: no seeking). Symbolic links are
/// left out, so a download never leaves the folder.
pub fn write_folder_zip(root: &Path, out: impl Write) -> io::Result<()> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let folder = root.join(&relative);
        let mut entries: Vec<_> = std::fs::read_dir(&folder)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let kind = entry.file_type()?;
            let rel = relative.join(entry.file_name());
            let name = rel.to_string_lossy().into_owned();
            if kind.is_dir() {
                zip.add_directory(format!("{name}/"), options)
                    .map_err(io::Error::other)?;
                stack.push(rel);
            } else if kind.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let mode = entry.metadata()?.permissions().mode();
                zip.start_file(name, options.unix_permissions(mode & 0o777))
                    .map_err(io::Error::other)?;
                let mut file = File::open(entry.path())?;
                io::copy(&mut file, &mut zip)?;
            }
        }
    }
    zip.finish().map_err(io::Error::other)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    /// An archive from (name, contents) pairs; names are written as given.
    pub(crate) fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            if name.ends_with('/') {
                zip.add_directory(*name, SimpleFileOptions::default())
                    .unwrap();
            } else {
                zip.start_file(*name, SimpleFileOptions::default()).unwrap();
                zip.write_all(data).unwrap();
            }
        }
        zip.finish().unwrap().into_inner()
    }

    fn try_extract(
        bytes: &[u8],
        limits: ExtractLimits,
    ) -> (Result<Extracted, ArchiveError>, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let zip = tmp.path().join("a.zip");
        std::fs::write(&zip, bytes).unwrap();
        (extract(&zip, &tmp.path().join("out"), limits), tmp)
    }

    #[test]
    fn good_archives_extract_with_folders_and_modes() {
        let bytes = zip_of(&[
            ("index.html", b"hello"),
            ("css/", b""),
            ("css/a.css", b"x{}"),
        ]);
        let (result, tmp) = try_extract(&bytes, ExtractLimits::default());
        let done = result.unwrap();
        assert_eq!((done.files, done.bytes), (2, 8));
        assert_eq!(
            std::fs::read(tmp.path().join("out/css/a.css")).unwrap(),
            b"x{}"
        );
    }

    #[test]
    fn bad_archives_are_refused_before_writing() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not a zip at all".to_vec(), "not a valid zip"),
            (zip_of(&[("../evil", b"x")]), "zip-slip"),
            (zip_of(&[("a/../../evil", b"x")]), "zip-slip"),
            (zip_of(&[("/etc/evil", b"x")]), "absolute"),
            (zip_of(&[("C:\\evil", b"x")]), "absolute"),
        ];
        for (bytes, reason) in cases {
            let (result, tmp) = try_extract(&bytes, ExtractLimits::default());
            let err = result.unwrap_err();
            assert!(
                err.is_bad_archive() && err.to_string().contains(reason),
                "{err}"
            );
            assert!(!tmp.path().join("out").exists());
        }
    }

    #[test]
    fn symlinks_and_bombs_are_refused() {
        let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        zip.add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        let (result, _tmp) = try_extract(&bytes, ExtractLimits::default());
        assert!(matches!(result, Err(ArchiveError::Symlink(_))));

        let zeros = vec![0u8; 8 << 20];
        let bomb = {
            let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
            let options =
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            zip.start_file("zeros", options).unwrap();
            zip.write_all(&zeros).unwrap();
            zip.finish().unwrap().into_inner()
        };
        let (result, _tmp) = try_extract(&bomb, ExtractLimits::default());
        assert!(
            matches!(result, Err(ArchiveError::Ratio { .. })),
            "{result:?}"
        );
        let small = ExtractLimits {
            max_total: 1000,
            ..ExtractLimits::default()
        };
        let (result, _tmp) = try_extract(&zip_of(&[("a", &[1u8; 2000])]), small);
        assert!(
            matches!(result, Err(ArchiveError::TooLarge { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn folders_zip_and_extract_back() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), b"a").unwrap();
        std::fs::write(src.join("sub/b.txt"), b"bb").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("escape")).unwrap();
        let mut bytes = Vec::new();
        write_folder_zip(&src, &mut bytes).unwrap();
        let zip = tmp.path().join("x.zip");
        std::fs::write(&zip, &bytes).unwrap();
        let done = extract(&zip, &tmp.path().join("back"), ExtractLimits::default()).unwrap();
        assert_eq!(done.files, 2);
        assert_eq!(
            std::fs::read(tmp.path().join("back/sub/b.txt")).unwrap(),
            b"bb"
        );
        assert!(!tmp.path().join("back/escape").exists());
    }
}
