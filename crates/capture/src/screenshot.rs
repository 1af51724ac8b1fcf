//! Full-page screenshots through the system Chromium, driven over the DevTools protocol.
//!
//! One browser is launched on first use and reused: launching costs about half a second, a shot on a
//! warm browser much less. Each request gets its own browser context (an incognito profile: no cookies,
//! cache or storage shared with other requests) and a fresh page, both disposed afterwards whatever
//! happened. A semaphore keeps at most `max_concurrent` pages open.
//!
//! # Host mapping
//! A site is browsed the way a client would, by its binding's hostname, but that name must resolve to
//! this machine. Chromium can only do that per process (`--host-resolver-rules`), so the screenshotter
//! keeps the set of every hostname any target has asked for and launches its browser with all of them
//! mapped to `127.0.0.1`. A target with a new hostname retires the running browser (it finishes the
//! pages in flight, then closes) and launches one with the larger set. The set only grows, so a plugin
//! that screenshots many sites relaunches once per new hostname, not once per alternation. The one
//! consequence: after a hostname was mapped for one target, a page of another target that refers to the
//! same hostname also reaches this machine; every mapped name is a site the operator runs here.
//!
//! # Failure and cleanup
//! Each capture runs in its own task with its own deadline, so a caller that goes away (an HTTP client
//! hanging up) does not leave a page open: the task still closes the page and the context. A browser
//! that died is noticed (its process is gone or its connection failed) and relaunched on the next
//! request. Every browser has its own profile folder in a temporary directory, removed when the browser
//! is retired, on [`Screenshotter::shutdown`] or, as a last resort, when the screenshotter is dropped
//! (which kills the browser). A plugin killed outright takes its browser along (a parent-death
//! signal), and the next launch removes the folders of owners that are gone.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::page::{CaptureScreenshotFormat, Viewport as Clip};
use chromiumoxide::cdp::browser_protocol::security::SetIgnoreCertificateErrorsParams;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::error::CdpError;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use tempfile::TempDir;
use tokio::sync::{Mutex, OwnedRwLockReadGuard, RwLock, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use crate::{CaptureError, locate, process_alive};

/// Executable names tried in order when no path is configured.
const CHROMIUM_NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome-stable",
    "google-chrome",
];
/// The Debian package that provides `chromium`.
const CHROMIUM_PACKAGE: &str = "chromium";
/// Largest width or height of a shot in CSS pixels: Chromium's compositor cannot render textures much
/// larger, and an endless page must not make an endless PNG.
const MAX_EDGE: f64 = 16_384.0;
/// Bound on each cleanup step (closing a page, disposing a context, closing the browser), so a wedged
/// browser cannot hold a request or a shutdown forever.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How screenshots are taken.
#[derive(Debug, Clone)]
pub struct ScreenshotOptions {
    /// The Chromium executable; `None` searches `PATH` (then `/usr/bin`) for `chromium` and the names
    /// Google Chrome uses.
    pub chromium_path: Option<PathBuf>,
    /// Pages open at once; further requests wait (their wait counts against their timeout).
    pub max_concurrent: usize,
    /// Viewport width and height in CSS pixels; the shot is at least this large.
    pub viewport: (u32, u32),
}

impl Default for ScreenshotOptions {
    fn default() -> Self {
        Self {
            chromium_path: None,
            max_concurrent: 2,
            viewport: (1920, 1080),
        }
    }
}

/// One page to photograph.
#[derive(Debug, Clone)]
pub struct ScreenshotTarget {
    /// The address to load, e.g. `http://shop.example:8080/`.
    pub url: String,
    /// A hostname that must resolve to `127.0.0.1` for this target (the binding's hostname); `None`,
    /// an empty name or an IP address maps nothing.
    pub map_host: Option<String>,
    /// Accept any certificate (the operator's own sites often have self-signed ones).
    pub ignore_certificate_errors: bool,
    /// The whole capture, including waiting for a free page and launching the browser.
    pub timeout: Duration,
}

/// Takes screenshots with one shared headless Chromium. Cheap to clone: clones share the browser.
#[derive(Clone)]
pub struct Screenshotter {
    inner: Arc<Inner>,
}

struct Inner {
    options: ScreenshotOptions,
    /// One permit per page that may be open at once.
    permits: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every hostname any target asked to map so far; the current browser maps exactly these.
    hosts: BTreeSet<String>,
    /// The browser new requests use; launched on first use.
    current: Option<Arc<Running>>,
    /// Browsers being closed after they were replaced; awaited by `shutdown`.
    retiring: Vec<JoinHandle<()>>,
}

/// A launched browser.
struct Running {
    /// Captures hold a read lease for as long as they use the browser; retiring it takes the write
    /// lock, so it waits for them. Declared before `profile` so that, when dropped, the browser is
    /// killed (the child is `kill_on_drop`) before its profile folder is removed.
    browser: Arc<RwLock<Browser>>,
    pid: Option<u32>,
    /// The hostnames this browser maps to loopback.
    hosts: BTreeSet<String>,
    /// Cleared when the DevTools connection failed or a capture found the process gone.
    alive: Arc<AtomicBool>,
    /// Drives the DevTools connection; nothing reaches the browser unless it is polled.
    handler: JoinHandle<()>,
    profile: std::sync::Mutex<Option<TempDir>>,
}

/// A capture's use of a browser: keeps it from being closed under the capture.
struct Lease {
    browser: OwnedRwLockReadGuard<Browser>,
    running: Arc<Running>,
}

// === impl Screenshotter ===

impl Screenshotter {
    /// A screenshotter; no browser is launched until the first capture.
    pub fn new(options: ScreenshotOptions) -> Self {
        let permits = Arc::new(Semaphore::new(options.max_concurrent.max(1)));
        Self {
            inner: Arc::new(Inner {
                options,
                permits,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// A full-page PNG of `target.url`.
    ///
    /// Errors: no browser installed ([`CaptureError::BrowserMissing`]), the deadline passed
    /// ([`CaptureError::Timeout`]; the page is closed), anything else ([`CaptureError::Failed`] with
    /// the cause, e.g. `net::ERR_CONNECTION_REFUSED`).
    pub async fn capture(&self, target: &ScreenshotTarget) -> Result<Vec<u8>, CaptureError> {
        let host = match target.map_host.as_deref() {
            Some(host) => loopback_host(host)?,
            None => None,
        };
        let inner = Arc::clone(&self.inner);
        let target = target.clone();
        // A task of its own: if our caller goes away, the capture still reaches its cleanup.
        tokio::spawn(async move { inner.capture(&target, host).await })
            .await
            .map_err(|e| CaptureError::Failed(format!("screenshot task failed: {e}")))?
    }

    /// The pid of the browser new captures would use, if one is running.
    pub async fn browser_pid(&self) -> Option<u32> {
        let state = self.inner.state.lock().await;
        state
            .current
            .as_ref()
            .filter(|r| r.is_alive())
            .and_then(|r| r.pid)
    }

    /// Closes the browser (after the captures in flight) and removes its profile folder. A later
    /// capture launches a new browser.
    pub async fn shutdown(&self) {
        let (current, retiring) = {
            let mut state = self.inner.state.lock().await;
            (state.current.take(), std::mem::take(&mut state.retiring))
        };
        if let Some(running) = current {
            retire(running).await;
        }
        for task in retiring {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "retiring a browser failed");
            }
        }
    }
}

// === impl Inner ===

impl Inner {
    async fn capture(
        &self,
        target: &ScreenshotTarget,
        host: Option<String>,
    ) -> Result<Vec<u8>, CaptureError> {
        let deadline = Instant::now() + target.timeout;
        let _permit = timeout_at(deadline, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| CaptureError::Timeout)?
            .map_err(|e| CaptureError::Failed(format!("screenshot permits: {e}")))?;
        let mut retried = false;
        loop {
            let lease = timeout_at(deadline, self.lease(host.clone()))
                .await
                .map_err(|_| CaptureError::Timeout)??;
            let result = photograph(&lease.browser, target, self.options.viewport, deadline).await;
            if result.is_err() && !lease.running.is_alive() {
                // The browser died under us (crashed, or killed by someone): the next lease launches a
                // new one, and this request tries once more on it while time is left.
                lease.running.alive.store(false, Ordering::Release);
                tracing::warn!(pid = ?lease.running.pid, "screenshot browser died during a capture");
                if !retried && Instant::now() < deadline {
                    retried = true;
                    continue;
                }
            }
            return result;
        }
    }

    /// A lease on a live browser that maps `host` (and every host asked for before), launching or
    /// relaunching one if needed.
    async fn lease(&self, host: Option<String>) -> Result<Lease, CaptureError> {
        let mut state = self.state.lock().await;
        if let Some(host) = host {
            state.hosts.insert(host);
        }
        let running = match &state.current {
            Some(running) if running.is_alive() && running.hosts == state.hosts => {
                Arc::clone(running)
            }
            _ => {
                if let Some(old) = state.current.take() {
                    tracing::info!(pid = ?old.pid, "retiring the screenshot browser (dead or host mapping changed)");
                    state.retiring.retain(|task| !task.is_finished());
                    state.retiring.push(tokio::spawn(retire(old)));
                }
                let running = Arc::new(launch(&self.options, &state.hosts).await?);
                state.current = Some(Arc::clone(&running));
                running
            }
        };
        // Immediate: only `retire` takes the write lock, and never on the current browser.
        let browser = Arc::clone(&running.browser).read_owned().await;
        Ok(Lease { browser, running })
    }
}

// === impl Running ===

impl Running {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire) && self.pid.is_some_and(process_alive)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

/// Launches Chromium with its own profile folder and every host in `hosts` mapped to loopback.
async fn launch(
    options: &ScreenshotOptions,
    hosts: &BTreeSet<String>,
) -> Result<Running, CaptureError> {
    let missing = CaptureError::BrowserMissing {
        package: CHROMIUM_PACKAGE,
    };
    let executable = match &options.chromium_path {
        Some(path) if locate::is_executable(path) => path.clone(),
        Some(path) => {
            tracing::warn!(path = %path.display(), "configured chromium path is not an executable file");
            return Err(missing);
        }
        None => locate::find(&CHROMIUM_NAMES).ok_or(missing)?,
    };
    // Everything the browser writes goes below one temporary folder: its profile, and (through HOME,
    // XDG_* and TMPDIR) the crash-report database and the shared-memory folders it would otherwise
    // leave in /tmp and ~/.config when it is killed.
    let root = tempfile::Builder::new()
        .prefix(FOLDER_PREFIX)
        .tempdir()
        .map_err(|e| CaptureError::Failed(format!("creating a browser profile folder: {e}")))?;
    let folder = |name: &str| -> Result<PathBuf, CaptureError> {
        let path = root.path().join(name);
        std::fs::create_dir(&path)
            .map_err(|e| CaptureError::Failed(format!("creating {}: {e}", path.display())))?;
        Ok(path)
    };
    let (profile, home, tmp) = (folder("profile")?, folder("home")?, folder("tmp")?);
    // The owner's pid lets a later launch remove this folder if the owner is killed before it
    // can (SIGKILL of the plugin).
    std::fs::write(root.path().join(OWNER_FILE), std::process::id().to_string())
        .map_err(|e| CaptureError::Failed(format!("writing the browser folder's owner: {e}")))?;
    remove_abandoned_folders(root.path());
    let launched = die_with_owner(&executable, root.path()).unwrap_or_else(|| executable.clone());
    let (width, height) = options.viewport;
    let mut config = BrowserConfig::builder()
        .chrome_executable(&launched)
        .user_data_dir(&profile)
        .env("HOME", home.to_string_lossy())
        .env("XDG_CONFIG_HOME", home.join(".config").to_string_lossy())
        .env("XDG_CACHE_HOME", home.join(".cache").to_string_lossy())
        .env("TMPDIR", tmp.to_string_lossy())
        // Root in a container: Chromium's sandbox needs user namespaces it often cannot have. The pages
        // are the operator's own sites.
        .no_sandbox()
        .window_size(width, height)
        .viewport(Viewport {
            width,
            height,
            device_scale_factor: Some(1.0),
            emulating_mobile: false,
            is_landscape: width >= height,
            has_touch: false,
        })
        // Certificate errors are ignored per page, when the target asks for it.
        .respect_https_errors()
        // An http binding must be browsed over http, not upgraded.
        .disable_https_first()
        .launch_timeout(LAUNCH_TIMEOUT)
        .args([
            "disable-gpu",
            "disable-component-update",
            "disable-domain-reliability",
            "no-default-browser-check",
        ]);
    if !hosts.is_empty() {
        let rules = hosts
            .iter()
            .map(|h| format!("MAP {h} 127.0.0.1"))
            .collect::<Vec<_>>()
            .join(",");
        config = config.arg(("host-resolver-rules", rules.as_str()));
    }
    let config = config
        .build()
        .map_err(|e| CaptureError::Failed(format!("browser configuration: {e}")))?;
    let started = std::time::Instant::now();
    let (mut browser, mut handler) = Browser::launch(config).await.map_err(|e| match e {
        CdpError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            CaptureError::BrowserMissing {
                package: CHROMIUM_PACKAGE,
            }
        }
        e => CaptureError::Failed(format!("launching {}: {e}", executable.display())),
    })?;
    let pid = browser.get_mut_child().and_then(|child| child.inner.id());
    tracing::info!(
        ?pid,
        hosts = hosts.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "launched the screenshot browser"
    );
    let alive = Arc::new(AtomicBool::new(true));
    let connection_alive = Arc::clone(&alive);
    let handler = tokio::spawn(async move {
        while let Some(event) = handler.next().await {
            match event {
                Ok(()) => {}
                // The websocket failed: the browser is gone or unusable.
                Err(CdpError::Ws(e)) => {
                    // A browser that exited (a Ctrl-C in the terminal reaches it too) is news,
                    // not a fault; one that still runs behind a broken connection is.
                    if exited_soon(pid).await {
                        tracing::info!(?pid, "screenshot browser exited");
                    } else {
                        tracing::warn!(error = %e, "screenshot browser connection failed");
                    }
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "screenshot browser message"),
            }
        }
        connection_alive.store(false, Ordering::Release);
    });
    Ok(Running {
        browser: Arc::new(RwLock::new(browser)),
        pid,
        hosts: hosts.clone(),
        alive,
        handler,
        profile: std::sync::Mutex::new(Some(root)),
    })
}

/// Whether the browser process is gone, or goes within a moment (its connection breaks just
/// before it exits).
async fn exited_soon(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    for _ in 0..20 {
        if !process_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// The file in a browser's folder that names the process that launched it.
const OWNER_FILE: &str = "owner";
/// Prefix of every browser folder in the temporary directory.
const FOLDER_PREFIX: &str = "nomad-iis-chromium-";

/// A launcher script that starts `executable` with a parent-death signal, so the browser does not
/// outlive a plugin that is killed outright (Nomad kills a plugin that does not stop in time).
/// chromiumoxide spawns the browser itself with no hook between fork and exec, hence `setpriv`
/// (util-linux, always present on Debian) in a script; the `exec`s keep the browser's pid the one
/// chromiumoxide spawned. `None` (launch directly) when `setpriv` is missing or the folder cannot
/// hold executables.
fn die_with_owner(executable: &std::path::Path, folder: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let setpriv = locate::find(&["setpriv"])?;
    let noexec = nix::sys::statvfs::statvfs(folder)
        .map(|fs| fs.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
        .unwrap_or(true);
    if noexec {
        tracing::debug!(folder = %folder.display(), "temporary folder is noexec: the browser is launched without a parent-death signal");
        return None;
    }
    let script = folder.join("launch-chromium");
    let text = format!(
        "#!/bin/sh\nexec {} --pdeathsig KILL -- {} \"$@\"\n",
        shell_quote(&setpriv.to_string_lossy()),
        shell_quote(&executable.to_string_lossy())
    );
    let written = std::fs::write(&script, text)
        .and_then(|()| std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)));
    match written {
        Ok(()) => Some(script),
        Err(e) => {
            tracing::debug!(error = %e, "writing the browser launcher: launching directly");
            None
        }
    }
}

/// `text` as one single-quoted shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Removes the browser folders, beside `own`, of owners that are gone (a plugin killed before it
/// could clean up). Folders without an owner file are left alone: they may be being created.
fn remove_abandoned_folders(own: &std::path::Path) {
    let Some(parent) = own.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path == own;
        let named = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(FOLDER_PREFIX));
        if ours || !named {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        if let Some(pid) = owner
            && !process_alive(pid)
        {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(folder = %path.display(), pid, "removed the folder of a browser whose owner is gone")
                }
                Err(e) => {
                    tracing::debug!(folder = %path.display(), error = %e, "removing an abandoned browser folder")
                }
            }
        }
    }
}

/// Closes a browser once no capture uses it any more, then removes its profile folder.
async fn retire(running: Arc<Running>) {
    {
        let mut browser = Arc::clone(&running.browser).write_owned().await;
        if running.is_alive() {
            match timeout(CLEANUP_TIMEOUT, browser.close()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "closing the screenshot browser"),
                Err(_) => tracing::debug!("closing the screenshot browser timed out"),
            }
        }
        let exited = matches!(timeout(CLEANUP_TIMEOUT, browser.wait()).await, Ok(Ok(_)));
        if !exited {
            // `kill` also reaps the process.
            if let Some(Err(e)) = browser.kill().await {
                tracing::warn!(pid = ?running.pid, error = %e, "killing the screenshot browser");
            }
        }
    }
    running.handler.abort();
    let profile = running.profile.lock().ok().and_then(|mut dir| dir.take());
    if let Some(dir) = profile {
        remove_folder(dir).await;
    }
    tracing::info!(pid = ?running.pid, "screenshot browser closed");
}

/// Attempts at removing a browser's folder, the first retry after [`REMOVE_FIRST_RETRY`], each
/// next one after twice as long.
const REMOVE_ATTEMPTS: u32 = 6;
const REMOVE_FIRST_RETRY: Duration = Duration::from_millis(50);

/// Removes a browser's folder. After a browser was killed (rather than closed), its helper
/// processes may still write into the folder for a moment after the browser itself is reaped, so
/// that a removal can find a file created behind it; such a failure is retried a few times.
async fn remove_folder(dir: TempDir) {
    let path = dir.keep();
    let mut delay = REMOVE_FIRST_RETRY;
    for attempt in 1..=REMOVE_ATTEMPTS {
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if attempt == REMOVE_ATTEMPTS => {
                tracing::warn!(path = %path.display(), error = %e, "removing the browser profile folder");
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, attempt, "removing the browser profile folder; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// Opens a page in a fresh browser context, photographs the target, and disposes of both.
async fn photograph(
    browser: &Browser,
    target: &ScreenshotTarget,
    viewport: (u32, u32),
    deadline: Instant,
) -> Result<Vec<u8>, CaptureError> {
    let context = timeout_at(
        deadline,
        browser.create_browser_context(CreateBrowserContextParams::default()),
    )
    .await
    .map_err(|_| CaptureError::Timeout)?
    .map_err(|e| failed("creating a browser context", e))?;
    let result = async {
        let mut params = CreateTargetParams::new("about:blank");
        params.browser_context_id = Some(context.clone());
        let page = timeout_at(deadline, browser.new_page(params))
            .await
            .map_err(|_| CaptureError::Timeout)?
            .map_err(|e| failed("opening a page", e))?;
        let shot = timeout_at(deadline, shoot(&page, target, viewport))
            .await
            .unwrap_or(Err(CaptureError::Timeout));
        match timeout(CLEANUP_TIMEOUT, page.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "closing a screenshot page"),
            Err(_) => tracing::debug!("closing a screenshot page timed out"),
        }
        shot
    }
    .await;
    dispose(browser, context).await;
    result
}

async fn dispose(browser: &Browser, context: BrowserContextId) {
    match timeout(CLEANUP_TIMEOUT, browser.dispose_browser_context(context)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "disposing a screenshot browser context"),
        Err(_) => tracing::debug!("disposing a screenshot browser context timed out"),
    }
}

/// Loads the page and takes a PNG of all of it: at least the viewport, at most `MAX_EDGE` each way.
async fn shoot(
    page: &Page,
    target: &ScreenshotTarget,
    viewport: (u32, u32),
) -> Result<Vec<u8>, CaptureError> {
    if target.ignore_certificate_errors {
        page.execute(SetIgnoreCertificateErrorsParams::new(true))
            .await
            .map_err(|e| failed("ignoring certificate errors", e))?;
    }
    page.goto(target.url.as_str())
        .await
        .map_err(|e| failed(&format!("loading {}", target.url), e))?;
    let metrics = page
        .layout_metrics()
        .await
        .map_err(|e| failed("reading the page size", e))?;
    let content = metrics.css_content_size;
    let width = content
        .width
        .ceil()
        .max(f64::from(viewport.0))
        .min(MAX_EDGE);
    let height = content
        .height
        .ceil()
        .max(f64::from(viewport.1))
        .min(MAX_EDGE);
    let params = ScreenshotParams::builder()
        .format(CaptureScreenshotFormat::Png)
        .clip(Clip {
            x: 0.0,
            y: 0.0,
            width,
            height,
            scale: 1.0,
        })
        // Render what lies below the viewport instead of resizing the viewport to the page (which
        // would change the layout of pages sized by `vh`).
        .capture_beyond_viewport(true)
        .build();
    page.screenshot(params)
        .await
        .map_err(|e| failed("taking the screenshot", e))
}

fn failed(what: &str, e: CdpError) -> CaptureError {
    CaptureError::Failed(format!("{what}: {e}"))
}

/// The hostname to map to loopback, lower-cased; `None` for an empty name or an IP address, which need
/// no mapping. Anything that is not a hostname (it ends up in a Chromium command-line rule) is refused.
fn loopback_host(host: &str) -> Result<Option<String>, CaptureError> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || bare.parse::<IpAddr>().is_ok() {
        return Ok(None);
    }
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*'));
    if valid {
        Ok(Some(host))
    } else {
        Err(CaptureError::Failed(format!(
            "map_host {host:?} is not a hostname"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_host_normalises_and_refuses_rule_syntax() {
        assert_eq!(
            loopback_host("Shop.Example.").unwrap(),
            Some("shop.example".to_string())
        );
        assert_eq!(
            loopback_host("*.example.test").unwrap(),
            Some("*.example.test".to_string())
        );
        assert_eq!(loopback_host("").unwrap(), None);
        assert_eq!(loopback_host("127.0.0.1").unwrap(), None);
        assert_eq!(loopback_host("[::1]").unwrap(), None);
        assert!(loopback_host("a.test 10.0.0.1,MAP b").is_err());
        assert!(loopback_host("a,b").is_err());
    }
}
