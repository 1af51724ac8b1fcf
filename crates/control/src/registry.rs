//! The registry of running tasks: what the Management API sees of the driver (plugin mode) or of
//! `nomad_iis run` (standalone mode). Both implement [`TaskRegistry`]; the API talks to hosts only
//! through it and the control client (feature `client`).

use std::path::PathBuf;

use crate::spec::HostSpec;

/// One task with a site host, as the registry knows it.
#[derive(Debug, Clone)]
pub struct RegisteredTask {
    /// Nomad allocation id.
    pub alloc_id: String,
    /// Nomad task name.
    pub task_name: String,
    /// Nomad namespace (`default` in standalone mode).
    pub namespace: String,
    /// Nomad job name.
    pub job_name: String,
    /// The resolved spec the host runs; `runtime_dir` holds its control socket.
    pub spec: HostSpec,
    /// `true` when this plugin process re-attached to the host (RecoverTask) instead of starting it.
    pub recovered: bool,
}

impl RegisteredTask {
    /// The host's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.spec.runtime_dir.join(crate::CONTROL_SOCKET)
    }
}

/// Tasks by allocation id and task name. Implementations are cheap to call and never block on
/// a host.
pub trait TaskRegistry: Send + Sync + 'static {
    /// Every task currently tracked.
    fn tasks(&self) -> Vec<RegisteredTask>;

    /// Records a task event (plugin mode: a Nomad task event; standalone: a log line).
    fn emit_event(&self, alloc_id: &str, task_name: &str, message: &str);

    /// Hosts or runtime folders found on this machine that no tracked task owns, described for
    /// people (the debug route lists them).
    fn leftovers(&self) -> Vec<String> {
        Vec::new()
    }

    /// The tasks of one allocation.
    fn tasks_of(&self, alloc_id: &str) -> Vec<RegisteredTask> {
        self.tasks()
            .into_iter()
            .filter(|t| t.alloc_id == alloc_id)
            .collect()
    }
}
