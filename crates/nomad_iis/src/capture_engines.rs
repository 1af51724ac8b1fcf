//! The screenshot and dump engines the Management API uses in this build: the `capture` crate
//! behind the `management::CaptureBackend` seam. `management` knows nothing of Chromium or gdb;
//! this binary glues the two.

use std::sync::Arc;

use capture::{CaptureError, ScreenshotOptions, ScreenshotTarget, Screenshotter};
use futures::future::BoxFuture;
use management::{CaptureBackend, CaptureFailure, DumpKind, DumpStream, ScreenshotRequest};

/// Pages photographed at once; further requests wait within their timeout.
const MAX_PAGES: usize = 2;
/// The viewport, as the original's.
const VIEWPORT: (u32, u32) = (1920, 1080);

/// One shared screenshot browser (launched on first use, reused, closed by `shutdown`) and the
/// dump functions.
pub struct Engines {
    shots: Screenshotter,
}

impl Engines {
    fn new() -> Self {
        Self {
            shots: Screenshotter::new(ScreenshotOptions {
                chromium_path: None,
                max_concurrent: MAX_PAGES,
                viewport: VIEWPORT,
            }),
        }
    }
}

/// The engines of this build; the browser starts with the first screenshot.
pub fn engines() -> Arc<Engines> {
    Arc::new(Engines::new())
}

impl CaptureBackend for Engines {
    fn screenshot(
        &self,
        request: ScreenshotRequest,
    ) -> BoxFuture<'_, Result<Vec<u8>, CaptureFailure>> {
        Box::pin(async move {
            let target = ScreenshotTarget {
                url: request.url,
                map_host: request.map_host,
                ignore_certificate_errors: request.ignore_certificate_errors,
                timeout: request.timeout,
            };
            self.shots.capture(&target).await.map_err(failure)
        })
    }

    fn dump(&self, pid: u32, kind: DumpKind) -> BoxFuture<'_, Result<DumpStream, CaptureFailure>> {
        Box::pin(async move {
            let kind = match kind {
                DumpKind::Full => capture::DumpKind::Full,
                DumpKind::Mini => capture::DumpKind::Mini,
            };
            let file = capture::dump(pid, kind).await.map_err(failure)?;
            Ok(DumpStream {
                len: file.len(),
                reader: Box::pin(file.into_stream()),
            })
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shots.shutdown())
    }
}

/// The API's answer for each engine error.
fn failure(error: CaptureError) -> CaptureFailure {
    match error {
        CaptureError::BrowserMissing { package } => CaptureFailure::BrowserMissing {
            package: package.to_owned(),
        },
        CaptureError::ToolMissing { package } => CaptureFailure::ToolMissing {
            package: package.to_owned(),
        },
        CaptureError::Timeout => CaptureFailure::Timeout,
        CaptureError::ProcessNotFound(pid) => CaptureFailure::NoProcess(pid),
        CaptureError::Failed(message) => CaptureFailure::Failed(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_has_its_answer() {
        assert_eq!(
            failure(CaptureError::BrowserMissing {
                package: "chromium"
            }),
            CaptureFailure::BrowserMissing {
                package: "chromium".to_owned()
            }
        );
        assert_eq!(
            failure(CaptureError::ToolMissing { package: "gdb" }),
            CaptureFailure::ToolMissing {
                package: "gdb".to_owned()
            }
        );
        assert_eq!(failure(CaptureError::Timeout), CaptureFailure::Timeout);
        assert_eq!(
            failure(CaptureError::ProcessNotFound(42)),
            CaptureFailure::NoProcess(42)
        );
        assert_eq!(
            failure(CaptureError::Failed(
                "net::ERR_CONNECTION_REFUSED".to_owned()
            )),
            CaptureFailure::Failed("net::ERR_CONNECTION_REFUSED".to_owned())
        );
    }

    #[tokio::test]
    async fn a_dump_of_no_process_is_no_process() {
        // Pid 0 is never a process a dump can target.
        let engines = Engines::new();
        let result = engines.dump(0, DumpKind::Mini).await;
        assert!(
            matches!(result, Err(CaptureFailure::NoProcess(0))),
            "{:?}",
            result.err()
        );
    }
}
