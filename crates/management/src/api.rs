//! The router and the request pipeline: every route of [`crate::routes`] goes through
//! authentication, the capability check, task resolution (404 / 409 / 403 on scope), then its
//! operation. Pool operations talk to hosts only through [`control::Client`] with
//! [`control::command_deadline`], and report through the registry's task events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Path, Query, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use control::{Command, HostStatus, RegisteredTask, TaskRegistry};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::archive::ExtractLimits;
use crate::auth::{self, Credentials, Principal, Scope};
use crate::capture::{CaptureBackend, DumpKind, ScreenshotRequest};
use crate::error::ApiError;
use crate::routes::{self, Op, Route, Target};

/// Size limits of uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body of an upload or a file write (413 above).
    pub max_upload: u64,
    /// What an archive may expand to.
    pub extract: ExtractLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload: 1 << 30,
            extract: ExtractLimits::default(),
        }
    }
}

/// Whether process dumps are allowed right now (the flag, or the driver config's
/// `procdump { accept_eula = true }`, which may change with each SetConfig).
pub type DumpOptIn = Arc<dyn Fn() -> bool + Send + Sync>;

/// Everything the routes need. Build one, then [`Api::router`].
pub struct Api {
    pub(crate) registry: Arc<dyn TaskRegistry>,
    pub(crate) capture: Arc<dyn CaptureBackend>,
    pub(crate) credentials: Credentials,
    pub(crate) limits: Limits,
    pub(crate) dump_opt_in: DumpOptIn,
    /// One lock per application folder, so two uploads to one app never interleave.
    pub(crate) folder_locks: Mutex<HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// The OpenAPI document, built once.
    openapi: Value,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("credentials", &self.credentials)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Screenshots give up after this long (→ 504).
pub const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from a dump file at a time while streaming it.
const DUMP_READ_SIZE: usize = 1 << 20;

impl Api {
    /// An API over `registry`.
    pub fn new(
        registry: Arc<dyn TaskRegistry>,
        capture: Arc<dyn CaptureBackend>,
        credentials: Credentials,
        limits: Limits,
        dump_opt_in: DumpOptIn,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            capture,
            credentials,
            limits,
            dump_opt_in,
            folder_locks: Mutex::new(HashMap::new()),
            openapi: crate::openapi::document(&routes::all()),
        })
    }

    /// The router: one handler per row of the route table, and a JSON 404 for the rest.
    pub fn router(self: &Arc<Self>) -> Router {
        let mut by_path: Vec<(String, MethodRouter)> = Vec::new();
        for route in routes::all() {
            let api = self.clone();
            let filter = match route.method {
                "GET" => MethodFilter::GET,
                "PUT" => MethodFilter::PUT,
                "PATCH" => MethodFilter::PATCH,
                "DELETE" => MethodFilter::DELETE,
                _ => MethodFilter::POST,
            };
            let handler = on(filter, move |request: Request| async move {
                api.handle(route, request).await
            });
            let path = route.axum_path();
            match by_path.iter_mut().find(|(p, _)| *p == path) {
                Some((_, existing)) => {
                    let merged = std::mem::take(existing).merge(handler);
                    *existing = merged;
                }
                None => by_path.push((path, handler)),
            }
        }
        let mut router = Router::new();
        for (path, methods) in by_path {
            router = router.route(&path, methods);
        }
        let api = self.clone();
        router.fallback(move |request: Request| async move {
            match api.authenticate(&request) {
                Err(e) => e.into_response(),
                Ok(_) => ApiError::not_found(format!("no route {}", request.uri().path()))
                    .into_response(),
            }
        })
    }

    fn authenticate(&self, request: &Request) -> Result<Principal, ApiError> {
        let headers = request.headers();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        auth::authenticate(
            &self.credentials,
            headers.get("x-api-key").map(HeaderValue::as_bytes),
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            now,
        )
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
    }

    async fn handle(self: Arc<Self>, route: Route, request: Request) -> Response {
        let method = route.method;
        let uri = request.uri().path().to_owned();
        match self.run(route, request).await {
            Ok(response) => response,
            Err(e) => {
                if e.status.is_server_error() {
                    tracing::warn!(method, path = %uri, status = e.status.as_u16(), error = %e.message, "management API request failed");
                } else {
                    tracing::debug!(method, path = %uri, status = e.status.as_u16(), error = %e.message, "management API request refused");
                }
                e.into_response()
            }
        }
    }

    async fn run(&self, route: Route, request: Request) -> Result<Response, ApiError> {
        let principal = self.authenticate(&request)?;
        if let Some(capability) = route.capability
            && !principal.has(capability)
        {
            return Err(ApiError::forbidden(format!(
                "the token lacks the capability {}",
                capability.name()
            )));
        }
        let (mut parts, body) = request.into_parts();
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let Query(query) = Query::<HashMap<String, String>>::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let call = Call {
            route,
            params,
            query,
            parts,
        };
        let request = Request::from_parts(call.parts.clone(), body);
        let task = match route.target {
            Target::None => None,
            Target::Alloc | Target::Task => Some(self.resolve(&principal, &call)?),
        };
        match (route.op, task) {
            (Op::OpenApi, _) => Ok(Json(self.openapi.clone()).into_response()),
            (Op::Debug, _) => Ok(self.debug(&principal).await),
            (Op::Status, Some(task)) => Ok(Json(self.status(&task).await).into_response()),
            (Op::Start | Op::Stop | Op::Recycle, Some(task)) => self.lifecycle(&call, &task).await,
            (Op::Upload, Some(task)) => self.upload(&call, &task, request).await,
            (Op::Screenshot, Some(task)) => self.screenshot(&call, &task).await,
            (Op::Procdump, Some(task)) => self.procdump(&call, &task).await,
            (Op::FsGet | Op::FsPut | Op::FsPatch | Op::FsDelete, Some(task)) => {
                self.fs(&call, &task, request).await
            }
            (_, None) => Err(ApiError::internal("route without a task")),
        }
    }

    /// The task a route acts on, or 404 (unknown allocation or task), 409 (the allocation runs
    /// several tasks and the route does not say which), 403 (outside the token's scope).
    fn resolve(&self, principal: &Principal, call: &Call) -> Result<RegisteredTask, ApiError> {
        let alloc_id = call.param("allocId");
        let mut tasks = self.registry.tasks_of(alloc_id);
        tasks.sort_by(|a, b| a.task_name.cmp(&b.task_name));
        if tasks.is_empty() {
            return Err(ApiError::not_found(format!(
                "allocation {alloc_id} runs no iis task on this node"
            )));
        }
        let names = || {
            tasks
                .iter()
                .map(|t| t.task_name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let task = match call.route.target {
            Target::Task => {
                let name = call.param("taskName");
                tasks
                    .iter()
                    .find(|t| t.task_name == name)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::not_found(format!(
                            "allocation {alloc_id} has no iis task {name:?} (tasks: {})",
                            names()
                        ))
                    })?
            }
            _ if tasks.len() > 1 => {
                let verb = call.route.path.rsplit('/').next().unwrap_or_default();
                return Err(ApiError::conflict(format!(
                    "allocation {alloc_id} runs several iis tasks ({}): use /api/v1/allocs/{alloc_id}/{{taskName}}/{verb}",
                    names()
                )));
            }
            _ => tasks.remove(0),
        };
        if !principal.covers(scope_of(&task)) {
            return Err(ApiError::forbidden(format!(
                "the token does not cover namespace {:?}, job {:?}, allocation {}",
                task.namespace, task.job_name, task.alloc_id
            )));
        }
        Ok(task)
    }

    // === status and pools ===

    /// A host's status, or `None` when it does not answer.
    pub(crate) async fn host_status(&self, task: &RegisteredTask) -> Option<HostStatus> {
        send(task, &Command::Status).await.ok()
    }

    async fn status(&self, task: &RegisteredTask) -> Value {
        let status = self.host_status(task).await;
        status_json(task, status.as_ref())
    }

    async fn lifecycle(&self, call: &Call, task: &RegisteredTask) -> Result<Response, ApiError> {
        let pool = call.query.get("appPoolName").cloned();
        if let Some(name) = &pool
            && !task.spec.pools.iter().any(|p| &p.name == name)
        {
            return Err(ApiError::not_found(format!(
                "task {} has no pool {name:?} (pools: {})",
                task.task_name,
                pool_names(task)
            )));
        }
        let (command, verb) = match call.route.op {
            Op::Start => (Command::StartPool { pool: pool.clone() }, "started"),
            Op::Stop => (Command::StopPool { pool: pool.clone() }, "stopped"),
            _ => (Command::RecyclePool { pool: pool.clone() }, "recycled"),
        };
        let status = send(task, &command).await.map_err(|e| ApiError::host(&e))?;
        let which = match &pool {
            Some(name) => format!("Application pool {name}"),
            None => "Application pools".to_owned(),
        };
        self.registry.emit_event(
            &task.alloc_id,
            &task.task_name,
            &format!("{which} {verb} via the Management API"),
        );
        Ok(Json(status_json(task, Some(&status))).into_response())
    }

    async fn debug(&self, principal: &Principal) -> Response {
        let mut tasks = Vec::new();
        for task in self.registry.tasks() {
            if !principal.covers(scope_of(&task)) {
                continue;
            }
            let status = self.host_status(&task).await;
            tasks.push(json!({
                "allocId": task.alloc_id,
                "taskName": task.task_name,
                "namespace": task.namespace,
                "jobName": task.job_name,
                "siteName": task.spec.site_name,
                "recovered": task.recovered,
                "runtimeDir": task.spec.runtime_dir,
                "taskDir": task.spec.task_dir,
                "host": status.as_ref().map(|s| json!({
                    "pid": s.pid,
                    "protocol": s.protocol,
                    "listening": s.listening,
                    "warnings": s.warnings,
                })),
                "hostReachable": status.is_some(),
            }));
        }
        let leftovers = if principal.covers_all() {
            self.registry.leftovers()
        } else {
            Vec::new()
        };
        Json(json!({ "tasks": tasks, "leftovers": leftovers })).into_response()
    }

    // === capture ===

    async fn screenshot(&self, call: &Call, task: &RegisteredTask) -> Result<Response, ApiError> {
        let path = call.query.get("path").map_or("/", String::as_str);
        if !path.starts_with('/') || path.contains(['\r', '\n', ' ']) {
            return Err(ApiError::bad_request(format!(
                "path {path:?} must start with / and hold no spaces"
            )));
        }
        let request = screenshot_request(task, path)?;
        let png = self.capture.screenshot(request).await?;
        let name = format!("screenshot_{}_{}.png", task.alloc_id, file_stamp());
        Ok((
            [
                (header::CONTENT_TYPE, "image/png".to_owned()),
                (header::CONTENT_DISPOSITION, attachment(&name)),
            ],
            png,
        )
            .into_response())
    }

    async fn procdump(&self, call: &Call, task: &RegisteredTask) -> Result<Response, ApiError> {
        if !(self.dump_opt_in)() {
            return Err(ApiError::forbidden(
                "process dumps are off: they hold the process's secrets. Enable them with the plugin argument --procdump-accept-eula=true or the driver config procdump { accept_eula = true }",
            ));
        }
        let kind = match call.query.get("type").map(String::as_str) {
            None | Some("full") => DumpKind::Full,
            Some("mini") => DumpKind::Mini,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "type {other:?}: expected full or mini"
                )));
            }
        };
        let pool = match call.query.get("appPoolName") {
            Some(name) => name.clone(),
            None => default_pool(task),
        };
        if !task.spec.pools.iter().any(|p| p.name == pool) {
            return Err(ApiError::not_found(format!(
                "task {} has no pool {pool:?} (pools: {})",
                task.task_name,
                pool_names(task)
            )));
        }
        let status = send(task, &Command::Status)
            .await
            .map_err(|e| ApiError::host(&e))?;
        let pid = dump_target(&status, &pool)?;
        let dump = self.capture.dump(pid, kind).await?;
        let name = format!("procdump_{}_{}.dmp", task.alloc_id, file_stamp());
        // Large reads: a dump is hundreds of MB, and each read of a tokio file is one trip to
        // the blocking pool (4 KiB reads made a full dump stream 6× slower than gcore wrote it).
        let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            dump.reader,
            DUMP_READ_SIZE,
        ));
        Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, dump.len.to_string()),
                (header::CONTENT_DISPOSITION, attachment(&name)),
            ],
            body,
        )
            .into_response())
    }
}

/// One request's route, parameters and head.
pub(crate) struct Call {
    pub(crate) route: Route,
    pub(crate) params: HashMap<String, String>,
    pub(crate) query: HashMap<String, String>,
    pub(crate) parts: http::request::Parts,
}

impl Call {
    pub(crate) fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }
}

pub(crate) fn scope_of(task: &RegisteredTask) -> Scope<'_> {
    Scope {
        namespace: &task.namespace,
        job_name: &task.job_name,
        alloc_id: &task.alloc_id,
    }
}

/// Sends one command to a task's host with the contract's deadline.
pub(crate) async fn send(
    task: &RegisteredTask,
    command: &Command,
) -> Result<HostStatus, control::ClientError> {
    control::Client::new(task.control_socket())
        .with_timeout(control::command_deadline(command, &task.spec))
        .send(command)
        .await
}

pub(crate) fn pool_names(task: &RegisteredTask) -> String {
    task.spec
        .pools
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pool of the root application, else the first pool.
pub(crate) fn default_pool(task: &RegisteredTask) -> String {
    task.spec
        .applications
        .iter()
        .find(|a| a.alias == "/")
        .map(|a| a.pool.clone())
        .or_else(|| task.spec.pools.first().map(|p| p.name.clone()))
        .unwrap_or_else(|| "default".into())
}

/// The reference's status shape, with more fields.
pub(crate) fn status_json(task: &RegisteredTask, status: Option<&HostStatus>) -> Value {
    let pools: Vec<Value> = task
        .spec
        .pools
        .iter()
        .map(|spec| {
            let live = status.and_then(|s| s.pools.iter().find(|p| p.name == spec.name));
            match live {
                Some(p) => json!({
                    "name": p.name,
                    "fullName": p.full_name,
                    "status": format!("{:?}", p.state),
                    "isWorkerProcessRunning": p.is_worker_running(),
                    "workerPids": p.worker_pids,
                    "isStatic": p.is_static,
                    "recycles": p.recycles,
                    "workerStarts": p.worker_starts,
                    "workerFailures": p.worker_failures,
                    "lastWorkerExit": p.last_worker_exit,
                }),
                None => json!({
                    "name": spec.name,
                    "fullName": spec.full_name,
                    "status": "Unknown",
                    "isWorkerProcessRunning": false,
                }),
            }
        })
        .collect();
    // A version 1 host reports no applications: the spec's are the truth then.
    let applications: Vec<Value> = match status {
        Some(s) if !s.applications.is_empty() => s
            .applications
            .iter()
            .map(|a| json!({"alias": a.alias, "pool": a.pool, "path": a.path, "kind": a.kind}))
            .collect(),
        _ => task
            .spec
            .applications
            .iter()
            .map(|a| json!({"alias": a.alias, "pool": a.pool, "path": a.path}))
            .collect(),
    };
    json!({
        "allocId": task.alloc_id,
        "taskName": task.task_name,
        "namespace": task.namespace,
        "jobName": task.job_name,
        "siteName": task.spec.site_name,
        "recovered": task.recovered,
        "hostReachable": status.is_some(),
        "hostPid": status.map(|s| s.pid),
        "listening": status.map(|s| s.listening.clone()).unwrap_or_default(),
        "defaultApplicationPool": default_pool(task),
        "applicationPools": pools,
        "applications": applications,
    })
}

/// What a screenshot of `task` loads: the first http binding, else the first https one with
/// certificate errors ignored; the binding's host name resolved to the loopback address.
pub(crate) fn screenshot_request(
    task: &RegisteredTask,
    path: &str,
) -> Result<ScreenshotRequest, ApiError> {
    use control::BindingKind;
    let binding = task
        .spec
        .bindings
        .iter()
        .find(|b| b.kind == BindingKind::Http)
        .or_else(|| {
            task.spec
                .bindings
                .iter()
                .find(|b| b.kind == BindingKind::Https)
        })
        .ok_or_else(|| ApiError::conflict(format!("task {} has no binding", task.task_name)))?;
    let scheme = match binding.kind {
        BindingKind::Http => "http",
        BindingKind::Https => "https",
    };
    let ip = binding.ip_address;
    let (host, map_host) = match &binding.hostname {
        Some(name) if !name.starts_with('*') && (ip.is_unspecified() || ip.is_loopback()) => {
            (name.clone(), Some(name.clone()))
        }
        _ if ip.is_unspecified() || ip.is_loopback() => ("127.0.0.1".to_owned(), None),
        _ if ip.is_ipv6() => (format!("[{ip}]"), None),
        _ => (ip.to_string(), None),
    };
    Ok(ScreenshotRequest {
        url: format!("{scheme}://{host}:{}{path}", binding.port),
        map_host,
        ignore_certificate_errors: binding.kind == BindingKind::Https,
        timeout: SCREENSHOT_TIMEOUT,
    })
}

/// The process a dump of `pool` targets: its first worker, or the host for a static pool (and
/// for hosts from before worker processes).
pub(crate) fn dump_target(status: &HostStatus, pool: &str) -> Result<u32, ApiError> {
    let live = status
        .pools
        .iter()
        .find(|p| p.name == pool)
        .ok_or_else(|| ApiError::not_found(format!("the host reports no pool {pool:?}")))?;
    if let Some(pid) = live.worker_pids.first() {
        return Ok(*pid);
    }
    if live.is_static || status.protocol < 2 {
        return Ok(status.pid);
    }
    Err(ApiError::conflict(format!(
        "pool {pool} has no running worker process (state {:?}); start it or send it a request first",
        live.state
    )))
}

/// `yyyy-MM-dd-HH-mm-ss` in UTC, as in the original's file names.
pub(crate) fn file_stamp() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]-[hour]-[minute]-[second]");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "0000-00-00-00-00-00".into())
}

pub(crate) fn attachment(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("attachment; filename=\"{safe}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(bindings: serde_json::Value) -> RegisteredTask {
        let spec: control::HostSpec = serde_json::from_value(json!({
            "alloc_id": "a1", "task_name": "web", "site_name": "s", "runtime_dir": "/r",
            "task_dir": "/t", "stdout_path": "/dev/null", "stderr_path": "/dev/null",
            "bindings": bindings, "pools": [], "applications": []
        }))
        .unwrap();
        RegisteredTask {
            alloc_id: "a1".into(),
            task_name: "web".into(),
            namespace: "default".into(),
            job_name: "j".into(),
            spec,
            recovered: false,
        }
    }

    #[test]
    fn screenshots_prefer_http_and_map_the_binding_host_name() {
        let both = task(json!([
            {"kind": "https", "ip_address": "0.0.0.0", "port": 8443, "hostname": "shop.example"},
            {"kind": "http", "ip_address": "0.0.0.0", "port": 8080, "hostname": "shop.example"},
        ]));
        let request = screenshot_request(&both, "/cart?x=1").unwrap();
        assert_eq!(request.url, "http://shop.example:8080/cart?x=1");
        assert_eq!(request.map_host.as_deref(), Some("shop.example"));
        assert!(!request.ignore_certificate_errors);
        let https = task(json!([{"kind": "https", "ip_address": "127.0.0.1", "port": 8443}]));
        let request = screenshot_request(&https, "/").unwrap();
        assert_eq!(request.url, "https://127.0.0.1:8443/");
        assert!(request.ignore_certificate_errors && request.map_host.is_none());
        assert_eq!(
            screenshot_request(&task(json!([])), "/")
                .unwrap_err()
                .status,
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn dumps_target_the_first_worker_or_the_host_of_a_static_pool() {
        let status = |pools: serde_json::Value, protocol: u32| -> HostStatus {
            serde_json::from_value(json!({
                "pid": 100, "site_name": "s", "listening": [], "pools": pools, "protocol": protocol
            }))
            .unwrap()
        };
        let pool = |pids: serde_json::Value, is_static: bool| {
            json!([{"name": "default", "full_name": "f", "state": "Started",
                    "worker_pids": pids, "recycles": 0, "is_static": is_static}])
        };
        assert_eq!(
            dump_target(&status(pool(json!([7, 8]), false), 2), "default").unwrap(),
            7
        );
        assert_eq!(
            dump_target(&status(pool(json!([]), true), 2), "default").unwrap(),
            100
        );
        assert_eq!(
            dump_target(&status(pool(json!([]), false), 1), "default").unwrap(),
            100
        );
        let idle = dump_target(&status(pool(json!([]), false), 2), "default").unwrap_err();
        assert_eq!(idle.status, StatusCode::CONFLICT);
        assert_eq!(
            dump_target(&status(pool(json!([]), true), 2), "x")
                .unwrap_err()
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(file_stamp().len(), "yyyy-MM-dd-HH-mm-ss".len());
    }
}
