//! Task events: one broadcast for the whole plugin, read by Nomad's single long `TaskEvents`
//! stream (and any other subscriber). Nomad routes each event by `alloc_id` + `task_name`.

use std::collections::HashMap;

use nomad_plugin::proto::drivers::DriverTaskEvent;
use tokio::sync::broadcast;

/// Events a slow subscriber may fall behind by before it misses some.
const BACKLOG: usize = 256;

/// The sending side of task events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<DriverTaskEvent>,
}

/// Which task an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    /// Nomad task id.
    pub task_id: String,
    /// Allocation id.
    pub alloc_id: String,
    /// Task name.
    pub task_name: String,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with no subscriber yet.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        Self { sender }
    }

    /// Publishes `message` about `task`, time-stamped now. Also logged, so an event sent while
    /// nobody listens is not lost entirely.
    pub fn emit(&self, task: &TaskRef, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(task_id = %task.task_id, event = %message, "task event");
        let event = DriverTaskEvent {
            task_id: task.task_id.clone(),
            alloc_id: task.alloc_id.clone(),
            task_name: task.task_name.clone(),
            timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            message,
            annotations: HashMap::new(),
        };
        // An error only means nobody subscribes right now.
        let _ = self.sender.send(event);
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DriverTaskEvent> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_with_routing_fields() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        let task = TaskRef {
            task_id: "a/web/12345678".into(),
            alloc_id: "a".into(),
            task_name: "web".into(),
        };
        bus.emit(&task, "hello");
        let event = rx.recv().await.unwrap();
        assert_eq!(event.alloc_id, "a");
        assert_eq!(event.task_name, "web");
        assert_eq!(event.message, "hello");
        assert!(event.timestamp.is_some());
    }
}
