//! The tasks of `nomad_iis run` as a [`control::TaskRegistry`]: every host started, in the
//! order they started. Task events become lines on the console.

use std::sync::Mutex;

use control::{RegisteredTask, TaskRegistry};

/// The running tasks.
#[derive(Debug, Default)]
pub struct StandaloneRegistry {
    tasks: Mutex<Vec<RegisteredTask>>,
}

impl StandaloneRegistry {
    /// Adds a task whose host is ready.
    pub fn add(&self, task: RegisteredTask) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }
}

impl TaskRegistry for StandaloneRegistry {
    fn tasks(&self) -> Vec<RegisteredTask> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn emit_event(&self, alloc_id: &str, task_name: &str, message: &str) {
        // Standalone mode has no Nomad to show events: the console is where people look.
        println!("  event  alloc {alloc_id}  task {task_name}: {message}");
        tracing::info!(alloc_id, task_name, event = message, "task event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_found_by_allocation() {
        let registry = StandaloneRegistry::default();
        assert!(registry.tasks_of("a").is_empty());
        let spec: control::HostSpec = serde_json::from_value(serde_json::json!({
            "alloc_id": "a", "task_name": "web", "site_name": "s", "runtime_dir": "/r",
            "task_dir": "/t", "stdout_path": "/dev/null", "stderr_path": "/dev/null",
            "bindings": [], "pools": [], "applications": []
        }))
        .unwrap();
        registry.add(RegisteredTask {
            alloc_id: "a".into(),
            task_name: "web".into(),
            namespace: "default".into(),
            job_name: "demo".into(),
            spec,
            recovered: false,
        });
        assert_eq!(registry.tasks_of("a").len(), 1);
        assert!(registry.tasks_of("b").is_empty());
    }
}
