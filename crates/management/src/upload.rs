//! `PUT …/upload`: the body is streamed to a file beside the application folder (never held in
//! memory), checked and extracted into a staging folder beside it, and only then is the pool
//! stopped, the folders swapped by rename, and the pool started. Any failure before the swap
//! changes nothing; the old application serves until its pool stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use control::{Command, RegisteredTask};
use futures::StreamExt as _;
use http::{StatusCode, header};
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use crate::api::{Api, Call, send};
use crate::archive::{self, ArchiveError};
use crate::error::ApiError;

/// A file or folder removed when dropped, unless kept.
pub(crate) struct Scratch {
    path: Option<PathBuf>,
}

impl Scratch {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path: Some(path) }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Keeps the path (it was renamed into place).
    pub(crate) fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a scratch file");
            }
        }
    }
}

/// A name no other upload of this process uses.
pub(crate) fn unique(prefix: &str, name: &str, suffix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{prefix}-{}-{n}{suffix}", std::process::id())
}

/// Streams the request body into a new file at `path`, refusing more than `limit` bytes (413).
pub(crate) async fn receive(request: Request, path: &Path, limit: u64) -> Result<u64, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit
    {
        return Err(too_large());
    }
    let io = |e: std::io::Error| ApiError::internal(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(io)?;
    let mut stream = request.into_body().into_data_stream();
    let mut received: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        received += chunk.len() as u64;
        if received > limit {
            return Err(too_large());
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok(received)
}

/// Turns an archive failure into 400 (the archive) or 500 (the machine).
pub(crate) fn archive_error(e: ArchiveError) -> ApiError {
    if e.is_bad_archive() {
        ApiError::bad_request(format!("rejected archive: {e}"))
    } else {
        ApiError::internal(format!("extracting: {e}"))
    }
}

/// Normalises an alias the way the config does: leading `/`, no trailing `/`.
fn normalise_alias(alias: &str) -> String {
    let trimmed = alias.trim_matches('/');
    format!("/{trimmed}")
}

impl Api {
    pub(crate) fn folder_lock(&self, folder: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.folder_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(folder.to_owned()).or_default().clone()
    }

    pub(crate) async fn upload(
        &self,
        call: &Call,
        task: &RegisteredTask,
        request: Request,
    ) -> Result<Response, ApiError> {
        let alias = normalise_alias(call.query.get("appAlias").map_or("/", String::as_str));
        let app = task
            .spec
            .applications
            .iter()
            .find(|a| a.alias == alias)
            .ok_or_else(|| {
                let aliases: Vec<&str> = task
                    .spec
                    .applications
                    .iter()
                    .map(|a| a.alias.as_str())
                    .collect();
                ApiError::not_found(format!(
                    "task {} has no application {alias:?} (aliases: {})",
                    task.task_name,
                    aliases.join(", ")
                ))
            })?;
        let folder = app.path.clone();
        let (Some(parent), Some(name)) = (folder.parent(), folder.file_name()) else {
            return Err(ApiError::conflict(format!(
                "application {alias} has no replaceable folder ({})",
                folder.display()
            )));
        };
        let name = name.to_string_lossy().into_owned();
        let lock = self.folder_lock(&folder);
        let _guard = lock.lock().await;

        let zip = Scratch::new(parent.join(unique("upload", &name, ".zip")));
        let size = receive(request, zip.path(), self.limits.max_upload).await?;
        let staging = Scratch::new(parent.join(unique("staging", &name, "")));
        let (zip_path, staging_path, limits) = (
            zip.path().to_owned(),
            staging.path().to_owned(),
            self.limits.extract,
        );
        let extracted =
            tokio::task::spawn_blocking(move || archive::extract(&zip_path, &staging_path, limits))
                .await
                .map_err(|e| ApiError::internal(format!("extraction task: {e}")))?
                .map_err(archive_error)?;
        drop(zip);
        // The new folder gets the old one's permissions (the driver may have restricted them).
        if let Ok(meta) = std::fs::metadata(&folder) {
            let _ = std::fs::set_permissions(staging.path(), meta.permissions());
        }

        // Nothing has changed so far. Now: stop, swap, start.
        let pool = Some(app.pool.clone());
        send(task, &Command::StopPool { pool: pool.clone() })
            .await
            .map_err(|e| ApiError::host(&e))?;
        let old = Scratch::new(parent.join(unique("old", &name, "")));
        let swapped = swap(&folder, staging.path(), old.path());
        let started = send(task, &Command::StartPool { pool: pool.clone() }).await;
        if let Err(e) = swapped {
            return Err(ApiError::internal(format!(
                "swapping {} failed, the old files stay: {e}",
                folder.display()
            )));
        }
        staging.keep();
        // The old files go in the background: a large app must not delay the answer.
        tokio::task::spawn_blocking(move || drop(old));
        let message = format!(
            "Application {alias} replaced via the Management API ({} files, {} bytes from a {size}-byte archive); pool {} restarted",
            extracted.files, extracted.bytes, app.pool
        );
        self.registry
            .emit_event(&task.alloc_id, &task.task_name, &message);
        started.map_err(|e| {
            ApiError::host(&e).with_prefix(&format!(
                "files replaced, but pool {} did not start",
                app.pool
            ))
        })?;
        Ok(Json(json!({
            "allocId": task.alloc_id,
            "taskName": task.task_name,
            "appAlias": alias,
            "appPool": app.pool,
            "path": folder,
            "archiveBytes": size,
            "files": extracted.files,
            "folders": extracted.folders,
            "bytes": extracted.bytes,
        }))
        .into_response())
    }
}

/// Moves `folder` to `old` and `staging` to `folder`; on failure puts `folder` back.
fn swap(folder: &Path, staging: &Path, old: &Path) -> std::io::Result<()> {
    let had_folder = folder.exists();
    if had_folder {
        std::fs::rename(folder, old)?;
    }
    if let Err(e) = std::fs::rename(staging, folder) {
        if had_folder {
            let _ = std::fs::rename(old, folder);
        }
        return Err(e);
    }
    Ok(())
}

impl ApiError {
    /// The same error with `prefix: ` before its message.
    pub(crate) fn with_prefix(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}
