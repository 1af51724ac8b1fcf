//! The route table: one list that drives both the router ([`crate::api`]) and the OpenAPI
//! document ([`crate::openapi`]), so neither can forget a route, a parameter or an error.

use crate::auth::Capability;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Pool and application status of a task.
    Status,
    /// Start pools.
    Start,
    /// Stop pools.
    Stop,
    /// Recycle pools.
    Recycle,
    /// Push an application as a zip.
    Upload,
    /// PNG of the site.
    Screenshot,
    /// Memory dump of a worker.
    Procdump,
    /// Download a file or a folder (zip).
    FsGet,
    /// Write a file or extract a zip, pools stopped meanwhile.
    FsPut,
    /// Same as PUT without stopping pools (hot patch).
    FsPatch,
    /// Delete a file or folder, or clean a folder (`/*`).
    FsDelete,
    /// Every tracked task and what was left behind.
    Debug,
    /// This API's OpenAPI document.
    OpenApi,
}

/// How a route finds its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `{allocId}` only: the allocation must run exactly one iis task (else 409).
    Alloc,
    /// `{allocId}/{taskName}`.
    Task,
    /// No task.
    None,
}

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    /// Name.
    pub name: &'static str,
    /// What it means.
    pub description: &'static str,
    /// Allowed values, when it is an enumeration.
    pub values: &'static [&'static str],
}

/// One route: a method on a path.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path in OpenAPI form (`{allocId}`); the fs routes' `{path}` takes the rest of the URL.
    pub path: &'static str,
    /// What it does.
    pub op: Op,
    /// How it finds its task.
    pub target: Target,
    /// What a token needs; `None`: any valid credential.
    pub capability: Option<Capability>,
    /// One line for people.
    pub summary: &'static str,
    /// Query parameters.
    pub query: &'static [QueryParam],
    /// Request body content type and description.
    pub body: Option<(&'static str, &'static str)>,
    /// Success response content type and description.
    pub ok: (&'static str, &'static str),
    /// Error statuses besides 401 (always possible when credentials are configured).
    pub errors: &'static [u16],
}

const POOL: QueryParam = QueryParam {
    name: "appPoolName",
    description: "act on this pool only (default: every pool of the task)",
    values: &[],
};
const DUMP_POOL: QueryParam = QueryParam {
    name: "appPoolName",
    description: "the pool whose worker is dumped (default: the pool of the root application)",
    values: &[],
};
const DUMP_TYPE: QueryParam = QueryParam {
    name: "type",
    description: "full: an ELF core of all memory (default); mini: a minidump",
    values: &["full", "mini"],
};
const ALIAS: QueryParam = QueryParam {
    name: "appAlias",
    description: "alias of the application to replace (default /)",
    values: &[],
};
const SHOT_PATH: QueryParam = QueryParam {
    name: "path",
    description: "path and query of the page to load (default /)",
    values: &[],
};
const CLEAN: QueryParam = QueryParam {
    name: "clean",
    description: "true: empty the target folder before writing",
    values: &["true", "false"],
};

const STATUS_JSON: (&str, &str) = ("application/json", "the task's pools after the operation");
const ZIP_BODY: (&str, &str) = ("application/zip", "a zip archive of the application");
const LIFECYCLE_ERRORS: &[u16] = &[403, 404, 409, 502, 504];
const ALLOC_LIFECYCLE_ERRORS: &[u16] = &[403, 404, 409, 502, 504];
const UPLOAD_ERRORS: &[u16] = &[400, 403, 404, 409, 411, 413, 500, 502, 504];
const SHOT_ERRORS: &[u16] = &[400, 403, 404, 409, 500, 501, 502, 503, 504];
const DUMP_ERRORS: &[u16] = &[400, 403, 404, 409, 500, 501, 502, 504];

macro_rules! lifecycle {
    ($method:literal, $verb:literal, $op:expr, $summary:literal) => {
        [
            Route {
                method: $method,
                path: concat!("/api/v1/allocs/{allocId}/", $verb),
                op: $op,
                target: Target::Alloc,
                capability: Some(Capability::AppPoolLifecycle),
                summary: $summary,
                query: &[],
                body: None,
                ok: STATUS_JSON,
                errors: ALLOC_LIFECYCLE_ERRORS,
            },
            Route {
                method: $method,
                path: concat!("/api/v1/allocs/{allocId}/{taskName}/", $verb),
                op: $op,
                target: Target::Task,
                capability: Some(Capability::AppPoolLifecycle),
                summary: $summary,
                query: &[POOL],
                body: None,
                ok: STATUS_JSON,
                errors: LIFECYCLE_ERRORS,
            },
        ]
    };
}

const START_GET: [Route; 2] = lifecycle!("GET", "start", Op::Start, "start the pools");
const START_PUT: [Route; 2] = lifecycle!("PUT", "start", Op::Start, "start the pools");
const STOP_GET: [Route; 2] = lifecycle!(
    "GET",
    "stop",
    Op::Stop,
    "stop the pools; the allocation keeps running and answers 503"
);
const STOP_PUT: [Route; 2] = lifecycle!(
    "PUT",
    "stop",
    Op::Stop,
    "stop the pools; the allocation keeps running and answers 503"
);
const RECYCLE_GET: [Route; 2] = lifecycle!("GET", "recycle", Op::Recycle, "recycle the pools");
const RECYCLE_PUT: [Route; 2] = lifecycle!("PUT", "recycle", Op::Recycle, "recycle the pools");

const FS_PATH: &str = "/api/v1/allocs/{allocId}/{taskName}/fs/{path}";
const FS_ERRORS: &[u16] = &[400, 403, 404, 409, 413, 500, 502, 504];

const OTHERS: &[Route] = &[
    Route {
        method: "PUT",
        path: "/api/v1/allocs/{allocId}/upload",
        op: Op::Upload,
        target: Target::Alloc,
        capability: Some(Capability::FilesystemAccess),
        summary: "replace an application's files with a zip: extracted beside it, then swapped in while its pool restarts",
        query: &[ALIAS],
        body: Some(ZIP_BODY),
        ok: ("application/json", "what was extracted"),
        errors: UPLOAD_ERRORS,
    },
    Route {
        method: "PUT",
        path: "/api/v1/allocs/{allocId}/{taskName}/upload",
        op: Op::Upload,
        target: Target::Task,
        capability: Some(Capability::FilesystemAccess),
        summary: "replace an application's files with a zip: extracted beside it, then swapped in while its pool restarts",
        query: &[ALIAS],
        body: Some(ZIP_BODY),
        ok: ("application/json", "what was extracted"),
        errors: UPLOAD_ERRORS,
    },
    Route {
        method: "GET",
        path: "/api/v1/allocs/{allocId}/screenshot",
        op: Op::Screenshot,
        target: Target::Alloc,
        capability: Some(Capability::Screenshots),
        summary: "a full-page 1920x1080 PNG of the site, taken by a local headless Chromium",
        query: &[SHOT_PATH],
        body: None,
        ok: ("image/png", "the screenshot"),
        errors: SHOT_ERRORS,
    },
    Route {
        method: "GET",
        path: "/api/v1/allocs/{allocId}/{taskName}/screenshot",
        op: Op::Screenshot,
        target: Target::Task,
        capability: Some(Capability::Screenshots),
        summary: "a full-page 1920x1080 PNG of the site, taken by a local headless Chromium",
        query: &[SHOT_PATH],
        body: None,
        ok: ("image/png", "the screenshot"),
        errors: SHOT_ERRORS,
    },
    Route {
        method: "GET",
        path: "/api/v1/allocs/{allocId}/procdump",
        op: Op::Procdump,
        target: Target::Alloc,
        capability: Some(Capability::ProcDump),
        summary: "a memory dump of the default pool's worker (the site host for a static pool); needs --procdump-accept-eula=true",
        query: &[DUMP_TYPE],
        body: None,
        ok: (
            "application/octet-stream",
            "the dump, streamed with its length",
        ),
        errors: DUMP_ERRORS,
    },
    Route {
        method: "GET",
        path: "/api/v1/allocs/{allocId}/{taskName}/procdump",
        op: Op::Procdump,
        target: Target::Task,
        capability: Some(Capability::ProcDump),
        summary: "a memory dump of a pool's worker (the site host for a static pool); needs --procdump-accept-eula=true",
        query: &[DUMP_POOL, DUMP_TYPE],
        body: None,
        ok: (
            "application/octet-stream",
            "the dump, streamed with its length",
        ),
        errors: DUMP_ERRORS,
    },
    Route {
        method: "GET",
        path: "/api/v1/allocs/{allocId}/{taskName}/status",
        op: Op::Status,
        target: Target::Task,
        capability: Some(Capability::Status),
        summary: "the task's pools (status Starting, Started, Stopping, Stopped or Unknown) and applications",
        query: &[],
        body: None,
        ok: ("application/json", "the status"),
        errors: &[403, 404],
    },
    Route {
        method: "GET",
        path: FS_PATH,
        op: Op::FsGet,
        target: Target::Task,
        capability: Some(Capability::FilesystemAccess),
        summary: "download a file of the task folder, or a folder as a streamed zip",
        query: &[],
        body: None,
        ok: (
            "application/octet-stream",
            "the file, or application/zip for a folder",
        ),
        errors: &[400, 403, 404, 500],
    },
    Route {
        method: "PUT",
        path: FS_PATH,
        op: Op::FsPut,
        target: Target::Task,
        capability: Some(Capability::FilesystemAccess),
        summary: "write a file, or extract a zip (Content-Type: application/zip) into a folder, with the task's pools stopped meanwhile",
        query: &[CLEAN],
        body: Some((
            "application/octet-stream",
            "the file, or application/zip to extract",
        )),
        ok: ("application/json", "what was written"),
        errors: FS_ERRORS,
    },
    Route {
        method: "PATCH",
        path: FS_PATH,
        op: Op::FsPatch,
        target: Target::Task,
        capability: Some(Capability::FilesystemAccess),
        summary: "like PUT, without stopping the pools (hot patch)",
        query: &[CLEAN],
        body: Some((
            "application/octet-stream",
            "the file, or application/zip to extract",
        )),
        ok: ("application/json", "what was written"),
        errors: FS_ERRORS,
    },
    Route {
        method: "DELETE",
        path: FS_PATH,
        op: Op::FsDelete,
        target: Target::Task,
        capability: Some(Capability::FilesystemAccess),
        summary: "delete a file or folder; a path ending in /* empties the folder and keeps it",
        query: &[],
        body: None,
        ok: ("application/json", "what was deleted"),
        errors: &[400, 403, 404, 500],
    },
    Route {
        method: "GET",
        path: "/api/v1/debug",
        op: Op::Debug,
        target: Target::None,
        capability: Some(Capability::Debug),
        summary: "the tracked tasks (recovered or not) and hosts or runtime folders left with no task",
        query: &[],
        body: None,
        ok: ("application/json", "the debug view"),
        errors: &[403],
    },
    Route {
        method: "GET",
        path: "/api/v1/openapi.json",
        op: Op::OpenApi,
        target: Target::None,
        capability: None,
        summary: "this document",
        query: &[],
        body: None,
        ok: ("application/json", "the OpenAPI 3 document"),
        errors: &[],
    },
];

/// Every route of the API.
pub fn all() -> Vec<Route> {
    let mut routes = Vec::new();
    for group in [
        START_GET,
        START_PUT,
        STOP_GET,
        STOP_PUT,
        RECYCLE_GET,
        RECYCLE_PUT,
    ] {
        routes.extend(group);
    }
    routes.extend_from_slice(OTHERS);
    routes
}

impl Route {
    /// The path in axum's syntax (`{path}` of the fs routes is a wildcard).
    pub fn axum_path(&self) -> String {
        self.path.replace("{path}", "{*path}")
    }

    /// Names of the path parameters.
    pub fn path_params(&self) -> Vec<&'static str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_routes_share_a_method_and_path() {
        let routes = all();
        let mut seen = std::collections::HashSet::new();
        for route in &routes {
            assert!(seen.insert((route.method, route.path)), "{route:?}");
        }
        assert!(routes.len() >= 25, "{}", routes.len());
    }
}
