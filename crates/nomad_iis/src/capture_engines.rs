//! The screenshot and dump engines the Management API uses in this build.

use std::sync::Arc;

/// The engines: none yet (both routes answer 501 naming what is missing).
pub fn engines() -> Arc<dyn management::CaptureBackend> {
    Arc::new(management::NoCapture)
}
