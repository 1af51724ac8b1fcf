//! Builders for the specs unit tests start from, so each test states only what it is about.

use std::path::PathBuf;
use std::time::Duration;

use control::{HostSpec, PoolSpec, StartMode, UnavailableResponse};

/// A spec with no bindings, pools or applications, and placeholder names and paths.
pub(crate) fn host_spec() -> HostSpec {
    HostSpec {
        alloc_id: "a".into(),
        task_name: "t".into(),
        site_name: "s".into(),
        runtime_dir: PathBuf::new(),
        task_dir: PathBuf::new(),
        stdout_path: PathBuf::new(),
        stderr_path: PathBuf::new(),
        env: Default::default(),
        bindings: vec![],
        pools: vec![],
        applications: vec![],
        placeholder_app_path: None,
        limits: Default::default(),
    }
}

/// The `default` pool with IIS defaults and the given stopped-pool answer.
pub(crate) fn pool_spec(unavailable: UnavailableResponse) -> PoolSpec {
    PoolSpec {
        name: "default".into(),
        full_name: "nomad-a-t".into(),
        start_mode: StartMode::OnDemand,
        idle_timeout: Duration::ZERO,
        periodic_restart: Duration::ZERO,
        start_time_limit: Duration::from_secs(90),
        shutdown_time_limit: Duration::from_secs(90),
        disable_overlapped_recycle: false,
        service_unavailable_response: unavailable,
        queue_length: 1000,
        identity: None,
    }
}
