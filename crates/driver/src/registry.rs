//! The driver as a [`control::TaskRegistry`]: what the Management API sees of the tasks this
//! plugin process tracks (started here or recovered after a plugin restart), task events on
//! Nomad's stream, and runtime folders that no tracked task owns.

use std::path::PathBuf;

use control::{RegisteredTask, TaskRegistry};

use crate::driver::IisDriver;
use crate::handle::TaskHandle;

/// The registry over one driver. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DriverRegistry {
    driver: IisDriver,
}

impl DriverRegistry {
    /// The registry of `driver`'s tasks.
    pub fn new(driver: IisDriver) -> Self {
        Self { driver }
    }

    fn running(&self) -> Vec<std::sync::Arc<TaskHandle>> {
        self.driver
            .tasks()
            .into_iter()
            .filter(|h| h.is_running())
            .collect()
    }
}

/// Whether `pid`'s parent is some other process than this one: a host this plugin process
/// started is its child; a recovered one was re-parented when the old plugin went away.
fn started_elsewhere(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let parent = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|ppid| ppid.parse::<u32>().ok());
    parent.is_some_and(|ppid| ppid != std::process::id())
}

fn or_default(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value.to_owned()
    }
}

impl TaskRegistry for DriverRegistry {
    fn tasks(&self) -> Vec<RegisteredTask> {
        self.running()
            .into_iter()
            .map(|handle| {
                let task = handle.task_ref();
                let config = handle.config();
                RegisteredTask {
                    alloc_id: task.alloc_id,
                    task_name: task.task_name,
                    namespace: or_default(&config.namespace, "default"),
                    job_name: or_default(&config.job_name, &config.job_id),
                    spec: handle.driver_state().spec.clone(),
                    recovered: started_elsewhere(handle.host().pid),
                }
            })
            .collect()
    }

    fn emit_event(&self, alloc_id: &str, task_name: &str, message: &str) {
        let handle = self.running().into_iter().find(|h| {
            let task = h.task_ref();
            task.alloc_id == alloc_id && task.task_name == task_name
        });
        match handle {
            Some(handle) => self.driver.events().emit(&handle.task_ref(), message),
            None => tracing::info!(
                alloc_id,
                task_name,
                event = message,
                "event about an untracked task"
            ),
        }
    }

    fn leftovers(&self) -> Vec<String> {
        let owned: Vec<PathBuf> = self
            .driver
            .tasks()
            .iter()
            .map(|h| h.driver_state().runtime_dir.clone())
            .collect();
        let root = &self.driver.options().runtime_root;
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.is_dir() || owned.contains(&dir) {
                continue;
            }
            let spec = control::files::read_spec(&dir).ok();
            let socket = dir.join(control::CONTROL_SOCKET).exists();
            let exit = control::files::read_exit_record(&dir);
            let what = match &spec {
                Some(spec) => format!("alloc {} task {}", spec.alloc_id, spec.task_name),
                None => "no readable spec".to_owned(),
            };
            let state = match (socket, exit) {
                (_, Some(exit)) => format!("host exited with code {}: {}", exit.code, exit.reason),
                (true, None) => "control socket present (a host may still run)".to_owned(),
                (false, None) => "no host".to_owned(),
            };
            found.push(format!(
                "runtime folder {} ({what}): {state}",
                dir.display()
            ));
        }
        found.sort();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_children_are_not_recovered_and_strangers_are() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!started_elsewhere(child.id()));
        // Our own parent (the test runner's parent) is not our child.
        assert!(started_elsewhere(std::process::id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
