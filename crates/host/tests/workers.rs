//! Worker processes behind the host in-process, with a real worker program
//! (`programs/worker.py`, run by python3): on-demand and always-running starts, status,
//! idle timeout, periodic restart, start time limit, rapid-fail protection, the shutdown
//! limit, worker output, and no worker left when the host stops.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use control::{ApplicationKind, Command, PoolState, ProcessSpec, StartMode};
use http::StatusCode;

const WORKER_PY: &str = include_str!("programs/worker.py");

/// A site whose root application is `programs/worker.py` in `mode`.
fn worker_site(mode: &str) -> Site {
    let mut site = Site::new();
    site.write("app/worker.py", WORKER_PY);
    site.spec.applications[0].process = Some(ProcessSpec {
        command: "python3".into(),
        args: vec!["worker.py".into(), mode.into()],
        env: BTreeMap::from([("FROM_JOB".to_string(), "yes".to_string())]),
    });
    site.spec.env = BTreeMap::from([("NOMAD_TASK_NAME".to_string(), "web".to_string())]);
    site.spec.pools[0].start_time_limit = Duration::from_secs(20);
    site.spec.pools[0].shutdown_time_limit = Duration::from_secs(5);
    site
}

fn pool_status(status: &control::HostStatus) -> &control::PoolStatus {
    &status.pools[0]
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes: its worker is no longer serving.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Waits until the pool reports a running worker and returns its pid.
async fn running_worker(host: &Running) -> u32 {
    for _ in 0..400 {
        let status = host.client.status().await.unwrap();
        if let Some(pid) = pool_status(&status).worker_pids.first() {
            return *pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no worker came up");
}

async fn wait_gone(pid: u32) -> bool {
    eventually(400, || async move { !alive(pid) }).await
}

#[tokio::test]
async fn an_on_demand_worker_starts_on_the_first_request() {
    let site = worker_site("serve");
    let host = start(site.spec.clone()).await;
    let before = pool_status(&host.status).clone();
    assert!(before.worker_pids.is_empty(), "{before:?}");
    assert!(!before.is_static);
    assert_eq!(host.status.applications[0].kind, ApplicationKind::Process);
    assert_eq!(host.status.protocol, control::PROTOCOL_VERSION);

    // The first request waits for the worker.
    let _ = get(host.addr(0), "localhost", "/pid").await.unwrap();
    let status = host.client.status().await.unwrap();
    let pool = pool_status(&status);
    assert_eq!(pool.worker_pids.len(), 1, "{pool:?}");
    assert_eq!(pool.worker_starts, 1);
    assert_eq!(pool.worker_failures, 0);
    let worker = &pool.workers[0];
    assert_eq!(worker.application, "/");
    assert!(alive(worker.pid));

    // The worker got the task's environment, the job's and PORT; it runs in the app folder.
    let environment = worker_environment(worker.pid);
    assert_eq!(environment.get("NOMAD_TASK_NAME").map(String::as_str), Some("web"));
    assert_eq!(environment.get("FROM_JOB").map(String::as_str), Some("yes"));
    assert_eq!(environment.get("PORT"), Some(&worker.port.to_string()));
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", worker.pid)).unwrap();
    assert_eq!(cwd, site.path("app"));

    let pid = worker.pid;
    assert_eq!(host.stop().await.code, 0);
    assert!(wait_gone(pid).await, "worker {pid} outlived its host");
}

/// The environment of a running process, from `/proc`.
fn worker_environment(pid: u32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            text.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn an_always_running_pool_starts_its_worker_with_the_host() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    assert!(alive(pid));

    // Stopping the pool stops the worker; starting it starts a new one.
    host.client
        .send(&Command::StopPool { pool: None })
        .await
        .unwrap();
    assert!(wait_gone(pid).await, "stopping the pool left worker {pid}");
    let client = host.client.clone();
    assert!(
        eventually(200, || async {
            pool_status(&client.status().await.unwrap()).state == PoolState::Stopped
        })
        .await
    );
    let status = host
        .client
        .send(&Command::StartPool { pool: None })
        .await
        .unwrap();
    assert_eq!(pool_status(&status).state, PoolState::Started);
    let again = pool_status(&status).worker_pids[0];
    assert_ne!(again, pid);
    assert_eq!(host.stop().await.code, 0);
    assert!(wait_gone(again).await);
}

#[tokio::test]
async fn a_crashed_always_running_worker_is_started_again() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let client = host.client.clone();
    assert!(
        eventually(400, || async {
            let status = client.status().await.unwrap();
            let pool = pool_status(&status);
            pool.worker_pids.first().is_some_and(|p| *p != pid) && pool.worker_failures == 1
        })
        .await,
        "no new worker after the crash"
    );
    let status = host.client.status().await.unwrap();
    let last = pool_status(&status).last_worker_exit.clone().unwrap();
    assert_eq!(last, format!("worker {pid} of / was killed by signal SIGKILL"));
}

#[tokio::test]
async fn an_idle_worker_is_stopped_and_the_next_request_starts_one() {
    let mut site = worker_site("serve");
    site.spec.pools[0].idle_timeout = Duration::from_secs(1);
    let host = start(site.spec.clone()).await;
    let _ = get(host.addr(0), "localhost", "/").await.unwrap();
    let pid = running_worker(&host).await;
    assert!(wait_gone(pid).await, "the idle worker kept running");
    let status = host.client.status().await.unwrap();
    assert_eq!(pool_status(&status).state, PoolState::Started);
    assert!(pool_status(&status).worker_pids.is_empty());
    assert_eq!(pool_status(&status).worker_failures, 0, "an idle stop is no failure");

    let _ = get(host.addr(0), "localhost", "/").await.unwrap();
    let again = running_worker(&host).await;
    assert_ne!(again, pid);
}

#[tokio::test]
async fn periodic_restart_recycles_the_worker() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    site.spec.pools[0].periodic_restart = Duration::from_secs(1);
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    let client = host.client.clone();
    assert!(
        eventually(400, || async {
            let status = client.status().await.unwrap();
            let pool = pool_status(&status);
            pool.recycles >= 1 && pool.worker_pids.first().is_some_and(|p| *p != pid)
        })
        .await,
        "no periodic restart"
    );
    assert!(wait_gone(pid).await, "the recycled worker kept running");
    assert_eq!(pool_status(&host.client.status().await.unwrap()).worker_failures, 0);
}

#[tokio::test]
async fn a_worker_that_never_listens_is_killed_at_the_start_time_limit() {
    let mut site = worker_site("never-listen");
    site.spec.pools[0].start_time_limit = Duration::from_millis(700);
    let host = start(site.spec.clone()).await;
    let started = std::time::Instant::now();
    let (code, _) = get(host.addr(0), "localhost", "/").await.unwrap();
    assert_eq!(code, StatusCode::BAD_GATEWAY);
    // Three attempts (startupRetryCount 2), each cut at the limit.
    assert!(started.elapsed() >= Duration::from_millis(2100), "{:?}", started.elapsed());
    let status = host.client.status().await.unwrap();
    let pool = pool_status(&status);
    assert_eq!((pool.worker_starts, pool.worker_failures), (3, 3), "{pool:?}");
    assert!(pool.worker_pids.is_empty());
    let last = pool.last_worker_exit.clone().unwrap();
    assert!(last.contains("did not accept connections"), "{last}");
    assert!(last.contains("(start time limit); killed"), "{last}");
    assert!(pool_never_left_a_python_child());
}

/// No python3 child of this test process is still running (zombies aside).
fn pool_never_left_a_python_child() -> bool {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map(|(_, r)| r.split_whitespace().collect())
                    .unwrap_or_default();
                fields.get(1) == Some(&me.as_str()) && fields.first() != Some(&"Z")
            })
        })
        .all(|pid| {
            !std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .contains("never-listen")
        })
}

#[tokio::test]
async fn a_crash_loop_trips_rapid_fail_protection_and_ends_the_host() {
    let site = worker_site("crash");
    let host = start(site.spec.clone()).await;
    // Three failed attempts for the first request, two more for the second: five in all.
    let (code, _) = get(host.addr(0), "localhost", "/").await.unwrap();
    assert_eq!(code, StatusCode::BAD_GATEWAY);
    let _ = get(host.addr(0), "localhost", "/").await;
    let record = tokio::time::timeout(Duration::from_secs(30), host.finished())
        .await
        .expect("the host kept running after rapid-fail protection tripped");
    assert_eq!(record.code, control::exit_code::POOL_FAILED);
    assert!(
        record
            .reason
            .starts_with("pool default stopped by rapid-fail protection: worker "),
        "{}",
        record.reason
    );
    assert!(
        record.reason.contains("of / exited with code 3"),
        "{}",
        record.reason
    );
}

#[tokio::test]
async fn a_worker_that_ignores_sigterm_is_killed_after_the_shutdown_limit() {
    let mut site = worker_site("stubborn");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    site.spec.pools[0].shutdown_time_limit = Duration::from_secs(1);
    site.spec.stdout_path = site.path("stdout.log");
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    let started = std::time::Instant::now();
    host.client
        .send(&Command::StopPool { pool: None })
        .await
        .unwrap();
    assert!(wait_gone(pid).await, "worker {pid} survived the shutdown limit");
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    let client = host.client.clone();
    assert!(
        eventually(200, || async {
            pool_status(&client.status().await.unwrap()).state == PoolState::Stopped
        })
        .await
    );
    let stdout_file = site.path("stdout.log");
    assert!(
        eventually(200, || async {
            std::fs::read_to_string(&stdout_file).is_ok_and(|t| t.contains("ignoring SIGTERM"))
        })
        .await,
        "the worker never saw SIGTERM"
    );
}

#[tokio::test]
async fn worker_output_goes_to_the_task_logs_line_by_line() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    site.spec.stdout_path = site.path("stdout.log");
    site.spec.stderr_path = site.path("stderr.log");
    let host = start(site.spec.clone()).await;
    let pid = running_worker(&host).await;
    let (out, err) = (site.path("stdout.log"), site.path("stderr.log"));
    assert!(
        eventually(200, || async {
            std::fs::read_to_string(&out)
                .is_ok_and(|t| t.contains(&format!("worker {pid} starting in mode serve\n")))
                && std::fs::read_to_string(&err)
                    .is_ok_and(|t| t.contains(&format!("worker {pid} says hello on stderr\n")))
        })
        .await,
        "worker output missing"
    );
    assert_eq!(host.stop().await.code, 0);
    let notices = std::fs::read_to_string(site.path("stderr.log")).unwrap();
    assert!(
        notices.contains(&format!("pool default: worker {pid} of / started on port")),
        "{notices}"
    );
}

#[tokio::test]
async fn several_pools_keep_serving_while_one_is_stopped() {
    let mut site = worker_site("serve");
    site.spec.pools[0].start_mode = StartMode::AlwaysRunning;
    site.spec.pools.push(pool("api"));
    site.spec.pools[1].start_mode = StartMode::AlwaysRunning;
    site.add_application("/api", "api", "api");
    site.write("api/worker.py", WORKER_PY);
    site.spec.applications[1].process = site.spec.applications[0].process.clone();
    let host = start(site.spec.clone()).await;
    let client = host.client.clone();
    assert!(
        eventually(400, || async {
            let status = client.status().await.unwrap();
            status.pools.iter().all(|p| p.worker_pids.len() == 1)
        })
        .await
    );
    let status = host.client.status().await.unwrap();
    let api_pid = status.pools[1].worker_pids[0];
    let root_pid = status.pools[0].worker_pids[0];
    host.client
        .send(&Command::StopPool {
            pool: Some("default".into()),
        })
        .await
        .unwrap();
    assert!(wait_gone(root_pid).await);
    assert!(alive(api_pid), "stopping one pool stopped another's worker");
    let status = host.client.status().await.unwrap();
    assert_eq!(status.pools[1].worker_pids, vec![api_pid]);
    assert_eq!(status.pools[1].state, PoolState::Started);
}
