//! The OpenAPI 3 document, generated from the route table so it always lists every route,
//! parameter, body and error the router serves.

use serde_json::{Map, Value, json};

use crate::routes::{Op, Route, Target};

fn reason(status: u16) -> &'static str {
    match status {
        400 => "bad request: a parameter, path or archive is refused (the message says why)",
        401 => "missing or invalid credentials",
        403 => {
            "the token does not cover this task or capability, the path leaves the task folder, or dumps are not enabled"
        }
        404 => "unknown allocation, task, pool, application alias or file",
        409 => {
            "the allocation runs several iis tasks (use the task-scoped route), or the host refused the command"
        }
        411 => "length required",
        413 => "the body is larger than the upload limit",
        500 => "the operation failed on this machine",
        501 => "the dump tool (gdb) is missing or this build has no capture engine",
        502 => "the site host did not answer",
        503 => "no Chromium on this machine",
        504 => "the site host or the capture took too long",
        _ => "error",
    }
}

fn operation_id(route: &Route) -> String {
    let op = match route.op {
        Op::Status => "status",
        Op::Start => "start",
        Op::Stop => "stop",
        Op::Recycle => "recycle",
        Op::Upload => "upload",
        Op::Screenshot => "screenshot",
        Op::Procdump => "procdump",
        Op::FsGet => "fsGet",
        Op::FsPut => "fsPut",
        Op::FsPatch => "fsPatch",
        Op::FsDelete => "fsDelete",
        Op::Debug => "debug",
        Op::OpenApi => "openapi",
    };
    let scope = match route.target {
        Target::Alloc => "Alloc",
        Target::Task => "Task",
        Target::None => "",
    };
    format!("{op}{scope}{}", route.method.to_ascii_lowercase())
}

fn parameters(route: &Route) -> Vec<Value> {
    let mut list = Vec::new();
    for name in route.path_params() {
        let description = match name {
            "allocId" => "Nomad allocation id",
            "taskName" => "the iis task's name in the allocation",
            _ => {
                "path below the task folder; / between segments (encoded separators are refused); a trailing /* means the folder's contents"
            }
        };
        list.push(json!({
            "name": name, "in": "path", "required": true, "description": description,
            "schema": {"type": "string"},
        }));
    }
    for query in route.query {
        let mut schema = json!({"type": "string"});
        if !query.values.is_empty() {
            schema["enum"] = json!(query.values);
        }
        list.push(json!({
            "name": query.name, "in": "query", "required": false,
            "description": query.description, "schema": schema,
        }));
    }
    list
}

fn operation(route: &Route) -> Value {
    let mut responses = Map::new();
    let (content_type, description) = route.ok;
    let schema = match content_type {
        "application/json" => json!({"type": "object"}),
        _ => json!({"type": "string", "format": "binary"}),
    };
    let schema = match route.op {
        Op::Status | Op::Start | Op::Stop | Op::Recycle => {
            json!({"$ref": "#/components/schemas/TaskStatus"})
        }
        _ => schema,
    };
    responses.insert(
        "200".into(),
        json!({"description": description, "content": {content_type: {"schema": schema}}}),
    );
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    let mut statuses: Vec<u16> = route.errors.to_vec();
    statuses.push(401);
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        responses.insert(
            status.to_string(),
            json!({"description": reason(status), "content": error.clone()}),
        );
    }
    let mut op = json!({
        "operationId": operation_id(route),
        "summary": route.summary,
        "parameters": parameters(route),
        "responses": responses,
        "security": [{"apiKey": []}, {"bearer": []}],
    });
    if let Some(capability) = route.capability {
        op["x-capability"] = json!(capability.name());
    }
    if let Some((content_type, description)) = route.body {
        op["requestBody"] = json!({
            "required": true,
            "description": description,
            "content": {content_type: {"schema": {"type": "string", "format": "binary"}}},
        });
    }
    op
}

/// The document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "nomad_iis Management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Upload applications into running allocations, control their pools, read their status and files, take screenshots and process dumps. With an API key or a JWT secret configured, every route needs X-Api-Key or a bearer token (HS256, iss NomadIIS, aud ManagementApi, claims namespace/jobName/allocId/capabilities).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["status", "error"],
                    "properties": {
                        "status": {"type": "integer"},
                        "error": {"type": "string"},
                    },
                },
                "TaskStatus": {
                    "type": "object",
                    "required": ["allocId", "taskName", "defaultApplicationPool", "applicationPools"],
                    "properties": {
                        "allocId": {"type": "string"},
                        "taskName": {"type": "string"},
                        "defaultApplicationPool": {"type": "string"},
                        "applicationPools": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "status", "isWorkerProcessRunning"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "status": {"type": "string", "enum": ["Starting", "Started", "Stopping", "Stopped", "Unknown"]},
                                    "isWorkerProcessRunning": {"type": "boolean"},
                                    "workerPids": {"type": "array", "items": {"type": "integer"}},
                                },
                            },
                        },
                        "applications": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_parameters_and_errors() {
        let routes = crate::routes::all();
        let doc = document(&routes);
        for route in &routes {
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {}", route.method, route.path);
            let params = op["parameters"].as_array().unwrap();
            for name in route.path_params() {
                assert!(params.iter().any(|p| p["name"] == name), "{name}");
            }
            for query in route.query {
                assert!(params.iter().any(|p| p["name"] == query.name));
            }
            assert!(op["responses"]["401"].is_object());
            for status in route.errors {
                assert!(op["responses"][status.to_string()].is_object());
            }
            assert_eq!(route.body.is_some(), op["requestBody"].is_object());
        }
    }
}
