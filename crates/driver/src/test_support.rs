//! Builders shared by this crate's unit tests: a minimal host spec and the driver state
//! naming a host process.

use std::path::Path;

use crate::state::{DRIVER_STATE_VERSION, DriverState};

/// A spec for task `web` of allocation `alloc` with no bindings or applications, running
/// `pools`, with its folders at `dir`.
pub(crate) fn host_spec(dir: &Path, pools: Vec<control::PoolSpec>) -> control::HostSpec {
    control::HostSpec {
        alloc_id: "alloc".into(),
        task_name: "web".into(),
        site_name: "nomad-alloc-web".into(),
        runtime_dir: dir.into(),
        task_dir: dir.into(),
        stdout_path: "/dev/null".into(),
        stderr_path: "/dev/null".into(),
        env: Default::default(),
        bindings: vec![],
        pools,
        applications: vec![],
        placeholder_app_path: None,
        limits: Default::default(),
    }
}

/// The driver state of task `alloc/web/0123abcd` whose host is `pid` (started at
/// `start_time`), with its runtime folder at `dir`.
pub(crate) fn driver_state(
    pid: u32,
    start_time: u64,
    dir: &Path,
    pools: Vec<control::PoolSpec>,
) -> DriverState {
    DriverState {
        version: DRIVER_STATE_VERSION,
        task_id: "alloc/web/0123abcd".into(),
        host_pid: pid,
        host_start_time: start_time,
        runtime_dir: dir.into(),
        spec: host_spec(dir, pools),
        started_at: 0,
    }
}

/// A pool named `name` with IIS defaults and no identity.
pub(crate) fn pool(name: &str) -> control::PoolSpec {
    use std::time::Duration;
    control::PoolSpec {
        name: name.into(),
        full_name: format!("nomad-alloc-web-{name}"),
        start_mode: control::StartMode::OnDemand,
        idle_timeout: Duration::from_secs(1200),
        periodic_restart: Duration::from_secs(104_400),
        start_time_limit: Duration::from_secs(90),
        shutdown_time_limit: Duration::from_secs(90),
        disable_overlapped_recycle: false,
        service_unavailable_response: control::UnavailableResponse::HttpLevel,
        queue_length: 1000,
        identity: None,
    }
}
