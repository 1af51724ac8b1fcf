//! `…/{taskName}/fs/{path}`: the task folder over HTTP, confined to it. A path is refused when
//! it is absolute (400), climbs with `..` (400), hides separators in percent-encoding (400), or
//! runs through a symbolic link that leads outside the task folder (403).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use control::{Command, RegisteredTask};
use http::header;
use serde_json::json;

use crate::api::{Api, Call, attachment, send};
use crate::error::ApiError;
use crate::routes::Op;
use crate::upload::{Scratch, archive_error, receive, unique};

/// A confined path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confined {
    /// Absolute path inside the task folder (symbolic links inside it resolved).
    pub path: PathBuf,
    /// The request ended in `/*`: act on the folder's contents.
    pub contents_only: bool,
    /// The path is the task folder itself.
    pub is_root: bool,
}

/// Resolves the raw (still percent-encoded) path below `root`.
pub fn confine(root: &Path, raw: &str) -> Result<Confined, ApiError> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") {
        return Err(ApiError::bad_request(
            "encoded path separators are not allowed: use / between segments",
        ));
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("the path is not UTF-8"))?;
    let mut text: &str = &decoded;
    let mut contents_only = false;
    if text == "*" {
        text = "";
        contents_only = true;
    } else if let Some(stripped) = text.strip_suffix("/*") {
        text = stripped;
        contents_only = true;
    }
    if text.starts_with('/') {
        return Err(ApiError::bad_request(format!(
            "absolute path {text:?}: paths are relative to the task folder"
        )));
    }
    if text.contains('\\') || text.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "path {text:?} holds a backslash or NUL"
        )));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ApiError::bad_request(format!(
                    "path {text:?} climbs out with '..'"
                )));
            }
            part => parts.push(part),
        }
    }
    let root = std::fs::canonicalize(root)
        .map_err(|e| ApiError::internal(format!("task folder {}: {e}", root.display())))?;
    let mut current = root.clone();
    for (index, part) in parts.iter().enumerate() {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let real = std::fs::canonicalize(&current).map_err(|_| {
                    ApiError::forbidden(format!("{part:?} is a symbolic link that leads nowhere"))
                })?;
                if !real.starts_with(&root) {
                    return Err(ApiError::forbidden(format!(
                        "{part:?} is a symbolic link that leads outside the task folder"
                    )));
                }
                current = real;
            }
            Ok(_) => {}
            Err(_) => {
                current.extend(&parts[index + 1..]);
                break;
            }
        }
    }
    Ok(Confined {
        is_root: current == root,
        path: current,
        contents_only,
    })
}

/// The raw path after `…/fs/` in the request URI.
fn raw_tail(uri: &http::Uri) -> &str {
    uri.path().splitn(8, '/').nth(7).unwrap_or("")
}

/// A `Write` that feeds a response body from a blocking thread.
struct ChannelWriter(tokio::sync::mpsc::Sender<io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn empty_folder(folder: &Path) -> io::Result<u64> {
    let mut removed = 0;
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
        removed += 1;
    }
    Ok(removed)
}

/// Moves everything in `from` into `into`, replacing what is there (folders are merged).
fn merge_into(from: &Path, into: &Path) -> io::Result<()> {
    std::fs::create_dir_all(into)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = into.join(entry.file_name());
        let source_is_dir = entry.file_type()?.is_dir();
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() && source_is_dir => merge_into(&entry.path(), &target)?,
            Ok(meta) if meta.is_dir() => {
                std::fs::remove_dir_all(&target)?;
                std::fs::rename(entry.path(), &target)?;
            }
            Ok(_) => {
                std::fs::remove_file(&target)?;
                std::fs::rename(entry.path(), &target)?;
            }
            Err(_) => std::fs::rename(entry.path(), &target)?,
        }
    }
    Ok(())
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> ApiError + '_ {
    move |e| match e.kind() {
        io::ErrorKind::NotFound => {
            ApiError::not_found(format!("{} does not exist", path.display()))
        }
        _ => ApiError::internal(format!("{}: {e}", path.display())),
    }
}

impl Api {
    pub(crate) async fn fs(
        &self,
        call: &Call,
        task: &RegisteredTask,
        request: Request,
    ) -> Result<Response, ApiError> {
        let target = confine(&task.spec.task_dir, raw_tail(&call.parts.uri))?;
        match call.route.op {
            Op::FsGet => download(&target).await,
            Op::FsDelete => delete(task, &target).await,
            op => {
                let stop_pools = op == Op::FsPut;
                if stop_pools {
                    send(task, &Command::StopPool { pool: None })
                        .await
                        .map_err(|e| ApiError::host(&e))?;
                }
                let written = self.write(call, &target, request).await;
                if stop_pools {
                    let started = send(task, &Command::StartPool { pool: None }).await;
                    if written.is_ok() {
                        started.map_err(|e| ApiError::host(&e))?;
                    }
                }
                let what = written?;
                self.registry.emit_event(
                    &task.alloc_id,
                    &task.task_name,
                    &format!(
                        "{} written via the Management API{}",
                        target.path.display(),
                        if stop_pools {
                            " (pools restarted)"
                        } else {
                            " (hot patch)"
                        }
                    ),
                );
                Ok(Json(what).into_response())
            }
        }
    }

    async fn write(
        &self,
        call: &Call,
        target: &Confined,
        request: Request,
    ) -> Result<serde_json::Value, ApiError> {
        let is_zip = call
            .parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.starts_with("application/zip") || v.starts_with("application/x-zip")
            });
        let clean = target.contents_only
            || call
                .query
                .get("clean")
                .is_some_and(|v| v == "true" || v == "1");
        let path = target.path.clone();
        let parent = path
            .parent()
            .ok_or_else(|| ApiError::bad_request("no parent folder"))?
            .to_owned();
        let name = path
            .file_name()
            .map_or_else(|| "root".into(), |n| n.to_string_lossy().into_owned());
        if !is_zip && target.contents_only {
            return Err(ApiError::bad_request(
                "a path ending in /* names a folder's contents: send Content-Type: application/zip to fill it",
            ));
        }
        // A zip fills the folder `path`; anything else becomes the file `path`. `clean` empties
        // that folder (for a file: its folder) first, keeping only our own scratch files.
        let folder = if is_zip { path.clone() } else { parent.clone() };
        if !is_zip && path.is_dir() {
            return Err(ApiError::conflict(format!(
                "{} is a folder: send Content-Type: application/zip to extract into it",
                path.display()
            )));
        }
        tokio::fs::create_dir_all(&folder)
            .await
            .map_err(io_error(&folder))?;
        let body_file = Scratch::new(folder.join(unique("body", &name, "")));
        let size = receive(request, body_file.path(), self.limits.max_upload).await?;
        let staging = Scratch::new(folder.join(unique("staging", &name, "")));
        let (body, stage, dest, limits) = (
            body_file.path().to_owned(),
            staging.path().to_owned(),
            folder.clone(),
            self.limits.extract,
        );
        let file_target = path.clone();
        let extracted = tokio::task::spawn_blocking(move || {
            let done = if is_zip {
                Some(crate::archive::extract(&body, &stage, limits).map_err(archive_error)?)
            } else {
                None
            };
            let io = |e: io::Error| ApiError::internal(format!("{}: {e}", dest.display()));
            if clean {
                for entry in std::fs::read_dir(&dest).map_err(io)? {
                    let entry = entry.map_err(io)?;
                    let p = entry.path();
                    if p == body || p == stage {
                        continue;
                    }
                    if entry.file_type().map_err(io)?.is_dir() {
                        std::fs::remove_dir_all(&p).map_err(io)?;
                    } else {
                        std::fs::remove_file(&p).map_err(io)?;
                    }
                }
            }
            match done {
                Some(_) => merge_into(&stage, &dest).map_err(io)?,
                None => std::fs::rename(&body, &file_target).map_err(io)?,
            }
            Ok::<_, ApiError>(done)
        })
        .await
        .map_err(|e| ApiError::internal(format!("extraction task: {e}")))??;
        match extracted {
            Some(done) => Ok(json!({
                "path": path, "archiveBytes": size, "files": done.files,
                "folders": done.folders, "bytes": done.bytes, "cleaned": clean,
            })),
            None => {
                body_file.keep();
                Ok(json!({"path": path, "bytes": size, "cleaned": clean}))
            }
        }
    }
}

async fn download(target: &Confined) -> Result<Response, ApiError> {
    let path = target.path.clone();
    let meta = tokio::fs::metadata(&path).await.map_err(io_error(&path))?;
    let name = path
        .file_name()
        .map_or_else(|| "task".into(), |n| n.to_string_lossy().into_owned());
    if meta.is_file() {
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(io_error(&path))?;
        let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
        return Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, meta.len().to_string()),
                (header::CONTENT_DISPOSITION, attachment(&name)),
            ],
            body,
        )
            .into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let error_tx = tx.clone();
        let writer = io::BufWriter::with_capacity(64 * 1024, ChannelWriter(tx));
        if let Err(e) = crate::archive::write_folder_zip(&path, writer) {
            tracing::warn!(path = %path.display(), error = %e, "folder download failed");
            // Ends the body with an error, so the client sees a broken download.
            let _ = error_tx.blocking_send(Err(e));
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                attachment(&format!("{name}.zip")),
            ),
        ],
        body,
    )
        .into_response())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn delete(task: &RegisteredTask, target: &Confined) -> Result<Response, ApiError> {
    let path = target.path.clone();
    if target.is_root && !target.contents_only {
        return Err(ApiError::bad_request(
            "refusing to delete the task folder itself; use fs/* to empty it",
        ));
    }
    let meta = tokio::fs::symlink_metadata(&path)
        .await
        .map_err(io_error(&path))?;
    let contents_only = target.contents_only;
    let p = path.clone();
    let removed = tokio::task::spawn_blocking(move || {
        if contents_only {
            if !meta.is_dir() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a folder"));
            }
            empty_folder(&p)
        } else if meta.is_dir() {
            std::fs::remove_dir_all(&p).map(|()| 1)
        } else {
            std::fs::remove_file(&p).map(|()| 1)
        }
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(io_error(&path))?;
    tracing::info!(alloc_id = %task.alloc_id, task = %task.task_name, path = %path.display(), "deleted via the Management API");
    Ok(
        Json(json!({"path": path, "removed": removed, "contentsOnly": contents_only}))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement_refuses_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("task");
        std::fs::create_dir_all(root.join("local/site")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("local/out")).unwrap();
        std::os::unix::fs::symlink("site", root.join("local/in")).unwrap();
        let ok = confine(&root, "local/site/index.html").unwrap();
        assert!(ok.path.ends_with("local/site/index.html"));
        assert!(
            confine(&root, "local/in/x")
                .unwrap()
                .path
                .ends_with("local/site/x")
        );
        let star = confine(&root, "local/site/*").unwrap();
        assert!(star.contents_only && star.path.ends_with("local/site"));
        assert!(confine(&root, "*").unwrap().is_root);
        for (raw, status) in [
            ("../x", 400),
            ("local/../../x", 400),
            ("local%2F..%2F..%2Fx", 400),
            ("local%5cx", 400),
            ("%2Fetc/passwd", 400),
            ("/etc/passwd", 400),
            ("local/out/passwd", 403),
            ("local/%2e%2e/%2e%2e/x", 400),
        ] {
            let err = confine(&root, raw).unwrap_err();
            assert_eq!(err.status.as_u16(), status, "{raw}: {err}");
        }
    }
}
