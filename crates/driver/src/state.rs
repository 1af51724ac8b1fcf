//! What the driver keeps: the locked map of tracked tasks (task id → handle) and the
//! [`DriverState`] persisted by Nomad inside each task handle, from which a restarted plugin
//! re-attaches to a running host.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::handle::TaskHandle;

/// Version of [`DriverState`] written by this plugin. Bump it when a change is not additive, and
/// keep reading the older versions (see the compat test below).
pub const DRIVER_STATE_VERSION: u32 = 1;

/// Everything needed to re-attach to a task's host after a plugin restart. Nomad stores these
/// bytes (JSON) in the task handle and hands them back in `RecoverTask`, where the task config's
/// `msgpack_driver_config` may be empty: so the resolved spec travels here too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverState {
    /// Format version, [`DRIVER_STATE_VERSION`] when written by this plugin.
    pub version: u32,
    /// Nomad's task id, `<alloc_id>/<task>/<8 hex>`.
    pub task_id: String,
    /// Pid of the host process (also its process group and session id).
    pub host_pid: u32,
    /// The host's start time in clock ticks after boot (`/proc/PID/stat` field 22); a pid with
    /// another start time is another process.
    pub host_start_time: u64,
    /// The host's private runtime folder (control socket, spec, exit record).
    pub runtime_dir: PathBuf,
    /// The resolved spec the host runs.
    pub spec: control::HostSpec,
    /// When the task started, Unix time in nanoseconds.
    pub started_at: i64,
}

/// Why persisted driver state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not JSON, or not of the expected shape.
    #[error("driver_state: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a plugin version this one does not understand.
    #[error(
        "driver_state.version: version {found} is not supported (this plugin reads 1 to {DRIVER_STATE_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
}

impl DriverState {
    /// Encodes as JSON for `TaskHandle.driver_state`.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain structs, strings and paths into a Vec cannot fail; an empty state
        // would only make a later recovery fail cleanly.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes `TaskHandle.driver_state`, checking the version first so that a newer format is
    /// reported as such rather than as a missing field.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        match version {
            Some(v) if (1..=u64::from(DRIVER_STATE_VERSION)).contains(&v) => {
                Ok(serde_json::from_value(value)?)
            }
            Some(found) => Err(StateError::UnsupportedVersion { found }),
            None => Err(StateError::UnsupportedVersion { found: 0 }),
        }
    }
}

/// The tasks this plugin process tracks, by Nomad task id.
#[derive(Debug, Default)]
pub struct TaskStore {
    tasks: Mutex<HashMap<String, Arc<TaskHandle>>>,
}

impl TaskStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<TaskHandle>>> {
        // A panic while holding the lock leaves the map itself intact: keep using it.
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The handle of `task_id`.
    pub fn get(&self, task_id: &str) -> Option<Arc<TaskHandle>> {
        self.lock().get(task_id).cloned()
    }

    /// Tracks `handle` unless its id is already tracked; returns whether it was inserted.
    pub fn insert_new(&self, handle: Arc<TaskHandle>) -> bool {
        let mut tasks = self.lock();
        if tasks.contains_key(handle.id()) {
            return false;
        }
        tasks.insert(handle.id().to_owned(), handle);
        true
    }

    /// Forgets `task_id`, returning its handle.
    pub fn remove(&self, task_id: &str) -> Option<Arc<TaskHandle>> {
        self.lock().remove(task_id)
    }

    /// Whether `task_id` is tracked.
    pub fn contains(&self, task_id: &str) -> bool {
        self.lock().contains_key(task_id)
    }

    /// Every tracked handle.
    pub fn all(&self) -> Vec<Arc<TaskHandle>> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `driver_state` exactly as version 1 of this plugin writes it. It must keep recovering
    /// as long as hosts started by that version may run.
    const V1_STATE: &str = r#"{
        "version": 1,
        "task_id": "a1b2c3d4-0000-1111-2222-333344445555/web/5e1f0c2a",
        "host_pid": 4242,
        "host_start_time": 123456,
        "runtime_dir": "/run/nomad_iis/a1b2c3d4-0000-1111-2222-333344445555-web",
        "spec": {
            "alloc_id": "a1b2c3d4-0000-1111-2222-333344445555",
            "task_name": "web",
            "site_name": "nomad-a1b2c3d4-0000-1111-2222-333344445555-web",
            "runtime_dir": "/run/nomad_iis/a1b2c3d4-0000-1111-2222-333344445555-web",
            "task_dir": "/var/nomad/alloc/a1b2c3d4-0000-1111-2222-333344445555/web",
            "stdout_path": "/dev/null",
            "stderr_path": "/dev/null",
            "env": {"TMP": "/tmp"},
            "bindings": [{"kind": "http", "ip_address": "0.0.0.0", "port": 8080}],
            "pools": [{
                "name": "default",
                "full_name": "nomad-a1b2c3d4-0000-1111-2222-333344445555-web",
                "start_mode": "OnDemand",
                "idle_timeout": {"secs": 1200, "nanos": 0},
                "periodic_restart": {"secs": 104400, "nanos": 0},
                "start_time_limit": {"secs": 90, "nanos": 0},
                "shutdown_time_limit": {"secs": 90, "nanos": 0},
                "disable_overlapped_recycle": false,
                "service_unavailable_response": "HttpLevel",
                "queue_length": 1000
            }],
            "applications": [{"alias": "/", "path": "/srv/site", "pool": "default"}]
        },
        "started_at": 1700000000000000000
    }"#;

    #[test]
    fn version_1_state_still_decodes() {
        let state = DriverState::from_bytes(V1_STATE.as_bytes()).unwrap();
        assert_eq!(state.host_pid, 4242);
        assert_eq!(state.spec.bindings[0].port, 8080);
        let again = DriverState::from_bytes(&state.to_bytes()).unwrap();
        assert_eq!(again, state);
    }

    #[test]
    fn unknown_versions_are_named() {
        let newer = V1_STATE.replacen("\"version\": 1", "\"version\": 7", 1);
        let err = DriverState::from_bytes(newer.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("version 7"), "{err}");
        let err = DriverState::from_bytes(b"{}").unwrap_err();
        assert!(err.to_string().starts_with("driver_state.version"), "{err}");
        assert!(DriverState::from_bytes(b"not json").is_err());
    }
}
