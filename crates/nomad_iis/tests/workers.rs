//! Worker processes as Nomad drives them: the real plugin binary, a task whose application
//! folder holds a `web.config`, and real workers — Python's own `http.server` module (a
//! server nobody here wrote) behind `<httpPlatform>`, and a crashing program for rapid-fail
//! protection. Checks: on-demand start, Nomad's variables in the worker, worker output in the
//! task's log FIFOs, RECYCLE giving a new worker, no worker left after StopTask/DestroyTask
//! or a kill -9 of the host, and a crash loop failing the task with a result naming the pool.

mod harness;

use std::time::Duration;

use harness::http;
use harness::{Allocation, Clients, DRIVER_CONFIG, Fixture, Task};

/// A task serving `local/site` (whose web.config decides what runs) on the port `http`.
const WORKER_SITE: &str = r#"
application { path = "local/site" }
binding {
  type = "http"
  port = "http"
}
"#;

/// The same with an AlwaysRunning pool and short limits.
const ALWAYS_RUNNING_SITE: &str = r#"
application { path = "local/site" }
application_pool {
  start_mode = "AlwaysRunning"
  start_time_limit = "10s"
  shutdown_time_limit = "2s"
}
binding {
  type = "http"
  port = "http"
}
"#;

/// Python's own HTTP server through HttpPlatformHandler, serving the site folder.
const PYTHON_HTTP_SERVER: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.webServer>
    <handlers>
      <add name="httpPlatformHandler" path="*" verb="*" modules="httpPlatformHandler" resourceType="Unspecified" />
    </handlers>
    <httpPlatform processPath="python3"
                  arguments="-u -m http.server %HTTP_PLATFORM_PORT% --bind 127.0.0.1"
                  startupTimeLimit="20">
      <environmentVariables>
        <environmentVariable name="PYTHONUNBUFFERED" value="1" />
      </environmentVariables>
    </httpPlatform>
  </system.webServer>
</configuration>
"#;

/// A program that exits with code 3 as soon as it starts.
const CRASHING: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.webServer>
    <httpPlatform processPath="python3" arguments="-c &quot;import sys; sys.exit(3)&quot;" />
  </system.webServer>
</configuration>
"#;

async fn configured() -> (Fixture, usize, Clients) {
    let mut fixture = Fixture::new();
    let (index, clients) = fixture.configured_plugin(DRIVER_CONFIG).await;
    (fixture, index, clients)
}

/// A new allocation `name` whose `local/site` has an index.html and `web_config`, started
/// with `config` on a free port.
async fn start_worker_task(
    fixture: &Fixture,
    clients: &mut Clients,
    name: &str,
    web_config: &str,
    config: &str,
) -> (Allocation, Task, u16) {
    let alloc = fixture.allocation(name).await;
    let site = alloc.static_site("site", "served by python");
    std::fs::write(site.join("web.config"), web_config).unwrap();
    let port = harness::free_port();
    let task = fixture
        .start_task(clients, &alloc, config, &[("http", port)])
        .await
        .unwrap_or_else(|e| panic!("StartTask {name}: {e:?}"));
    (alloc, task, port)
}

fn control_client(task: &Task) -> control::Client {
    control::Client::new(task.runtime_dir().join(control::CONTROL_SOCKET))
}

/// The pids of the task's workers.
async fn worker_pids(task: &Task) -> Vec<u32> {
    match control_client(task).status().await {
        Ok(status) => status
            .pools
            .iter()
            .flat_map(|p| p.worker_pids.clone())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits until the task has a worker other than `not`, and returns it.
async fn new_worker(task: &Task, not: Option<u32>) -> u32 {
    for _ in 0..400 {
        if let Some(pid) = worker_pids(task)
            .await
            .into_iter()
            .find(|p| Some(*p) != not)
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no new worker (other than {not:?})");
}

fn environ(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
        .replace('\0', "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_server_behind_http_platform_from_start_to_destroy() {
    let (mut fixture, index, mut clients) = configured().await;
    let (alloc, task, port) = start_worker_task(
        &fixture,
        &mut clients,
        "py",
        PYTHON_HTTP_SERVER,
        WORKER_SITE,
    )
    .await;
    let addr = harness::local(port);
    assert!(
        worker_pids(&task).await.is_empty(),
        "OnDemand starts no worker up front"
    );
    let status = control_client(&task).status().await.unwrap();
    assert_eq!(
        status.applications[0].kind,
        control::ApplicationKind::HttpPlatform
    );

    // The first request starts the worker and waits for it.
    let response = http::get(addr, "localhost", "/index.html").await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "served by python");
    let server = response.header("server").unwrap_or_default().to_string();
    assert!(server.contains("SimpleHTTP"), "{server}");
    let first = new_worker(&task, None).await;
    let env = environ(first);
    assert!(
        env.contains(&format!("NOMAD_ALLOC_ID={}\n", alloc.alloc_id)),
        "{env}"
    );
    assert!(env.contains("NOMAD_TASK_NAME=py\n"), "{env}");
    assert!(env.contains("HTTP_PLATFORM_PORT="), "{env}");
    // http.server logs each request on stderr: it reaches the task's stderr FIFO.
    assert!(
        harness::eventually(Duration::from_secs(10), || alloc
            .stderr_text()
            .contains("\"GET /index.html HTTP/1.1\" 200"))
        .await,
        "worker output missing from the stderr FIFO: {}",
        alloc.stderr_text()
    );

    // RECYCLE: a new worker serves, the old one is gone.
    clients.signal(task.id(), "RECYCLE").await.unwrap();
    let second = new_worker(&task, Some(first)).await;
    let response = http::get(addr, "localhost", "/index.html").await.unwrap();
    assert_eq!(response.status, 200);
    assert!(
        harness::eventually(Duration::from_secs(10), || !harness::alive(first)).await,
        "the recycled worker {first} kept running"
    );

    clients.stop_and_destroy(task.id()).await;
    assert!(
        harness::eventually(Duration::from_secs(10), || !harness::alive(second)).await,
        "worker {second} outlived StopTask/DestroyTask"
    );
    assert!(fixture.host_processes().is_empty());
    fixture.assert_clean(index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_takes_its_worker_along() {
    let (mut fixture, index, mut clients) = configured().await;
    let (_alloc, task, _port) = start_worker_task(
        &fixture,
        &mut clients,
        "kill",
        PYTHON_HTTP_SERVER,
        ALWAYS_RUNNING_SITE,
    )
    .await;
    let worker = new_worker(&task, None).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(task.host_pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let result = clients.exit_result(task.id()).await;
    assert_eq!(result.signal, 9);
    assert!(
        harness::eventually(Duration::from_secs(10), || !harness::alive(worker)).await,
        "worker {worker} outlived a kill -9 of its host"
    );
    clients.destroy(task.id(), true).await.unwrap();
    fixture.assert_clean(index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_fails_the_task_naming_the_pool() {
    let (mut fixture, index, mut clients) = configured().await;
    let mut events = clients.events().await;
    let (alloc, task, _port) = start_worker_task(
        &fixture,
        &mut clients,
        "crash",
        CRASHING,
        ALWAYS_RUNNING_SITE,
    )
    .await;
    let response = tokio::time::timeout(Duration::from_secs(60), clients.wait(task.id()))
        .await
        .expect("the task kept running through a crash loop")
        .expect("WaitTask");
    let result = response.result.expect("WaitTask sets result");
    assert_eq!(result.exit_code, control::exit_code::POOL_FAILED);
    assert!(
        response
            .err
            .starts_with("pool default stopped by rapid-fail protection: worker "),
        "{}",
        response.err
    );
    assert!(
        response.err.contains("exited with code 3"),
        "{}",
        response.err
    );
    harness::expect_event(&mut events, &alloc, "rapid-fail protection").await;
    clients.destroy(task.id(), true).await.unwrap();
    fixture.assert_clean(index);
}

/// The host's test worker program (routes `/pid`, `/env`, `/headers`, `/slow`, …).
const WORKER_PY: &str = include_str!("../../host/tests/programs/worker.py");

/// A published self-contained ASP.NET Core app as `dotnet publish` writes its web.config:
/// `processPath=".\MyApp.exe"`, where on Linux only `MyApp` exists (here a script running the
/// test worker).
fn publish_aspnetcore_app(alloc: &Allocation) {
    use std::os::unix::fs::PermissionsExt;
    let site = alloc.static_site("site", "unused");
    std::fs::write(site.join("worker.py"), WORKER_PY).unwrap();
    std::fs::write(
        site.join("MyApp"),
        "#!/bin/sh\nexec python3 worker.py serve\n",
    )
    .unwrap();
    std::fs::set_permissions(site.join("MyApp"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        site.join("web.config"),
        r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <location path="." inheritInChildApplications="false">
    <system.webServer>
      <handlers>
        <add name="aspNetCore" path="*" verb="*" modules="AspNetCoreModuleV2" resourceType="Unspecified" />
      </handlers>
      <aspNetCore processPath=".\MyApp.exe" stdoutLogEnabled="false" stdoutLogFile=".\logs\stdout" hostingModel="inprocess" requestTimeout="00:00:02" />
    </system.webServer>
  </location>
</configuration>
"#,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_aspnetcore_app_gets_its_variables_token_and_limits() {
    let (mut fixture, index, mut clients) = configured().await;
    let alloc = fixture.allocation("shop").await;
    publish_aspnetcore_app(&alloc);
    let port = harness::free_port();
    let config = r#"
application {
  path = "local/site"
  alias = "/shop"
}
binding {
  type = "http"
  port = "http"
}
"#;
    let task = fixture
        .start_task(&mut clients, &alloc, config, &[("http", port)])
        .await
        .expect("StartTask");
    let addr = harness::local(port);
    let env = http::get(addr, "localhost", "/shop/env").await.unwrap();
    assert_eq!(env.status, 200, "{}", env.text());
    let env: serde_json::Value = serde_json::from_str(&env.text()).unwrap();
    assert_eq!(env["ASPNETCORE_APPL_PATH"], "/shop");
    assert_eq!(env["ASPNETCORE_PORT"], env["PORT"]);
    assert_eq!(env["ASPNETCORE_IIS_HTTPAUTH"], "anonymous;");
    assert_eq!(env["NOMAD_ALLOC_ID"], alloc.alloc_id.as_str());
    let token = env["ASPNETCORE_TOKEN"].as_str().unwrap().to_string();
    let headers = http::get(addr, "localhost", "/shop/headers").await.unwrap();
    let headers: serde_json::Value = serde_json::from_str(&headers.text()).unwrap();
    assert_eq!(headers["ms-aspnetcore-token"], token.as_str());
    assert_eq!(headers["x-forwarded-proto"], "http");
    // requestTimeout="00:00:02": a slower answer is a 504.
    let slow = http::get(addr, "localhost", "/shop/slow?s=6")
        .await
        .unwrap();
    assert_eq!(slow.status, 504);
    // The in-process hosting model is reported, not refused.
    let status = control_client(&task).status().await.unwrap();
    assert!(
        status.warnings.iter().any(|w| w.contains("inprocess")),
        "{:?}",
        status.warnings
    );
    clients.stop_and_destroy(task.id()).await;
    assert!(fixture.host_processes().is_empty());
    fixture.assert_clean(index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycle_under_load_fails_no_request() {
    let (mut fixture, index, mut clients) = configured().await;
    let alloc = fixture.allocation("load").await;
    let site = alloc.static_site("site", "unused");
    std::fs::write(site.join("worker.py"), WORKER_PY).unwrap();
    std::fs::write(
        site.join("web.config"),
        r#"<configuration><system.webServer>
<httpPlatform processPath="python3" arguments=".\worker.py serve" />
</system.webServer></configuration>"#,
    )
    .unwrap();
    let port = harness::free_port();
    let task = fixture
        .start_task(&mut clients, &alloc, ALWAYS_RUNNING_SITE, &[("http", port)])
        .await
        .expect("StartTask");
    let addr = harness::local(port);
    let first = new_worker(&task, None).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..6 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http::get(addr, "localhost", "/pid").await {
                    Ok(response) if response.status == 200 => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        }));
    }
    for _ in 0..2 {
        clients.signal(task.id(), "RECYCLE").await.unwrap();
    }
    // Each RECYCLE answers once the new worker serves; give the load a moment past the last.
    let last = new_worker(&task, Some(first)).await;
    let response = http::get(addr, "localhost", "/pid").await.unwrap();
    assert_eq!(response.text(), last.to_string());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok,
        failed.first()
    );
    assert!(ok > 10, "only {ok} requests");
    clients.stop_and_destroy(task.id()).await;
    assert!(
        harness::eventually(Duration::from_secs(10), || !harness::alive(last)).await,
        "worker {last} outlived the task"
    );
    fixture.assert_clean(index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_stop_and_periodic_restart_recycles() {
    let (mut fixture, index, mut clients) = configured().await;
    let idle_config = r#"
application { path = "local/site" }
application_pool {
  idle_timeout = "1s"
}
binding {
  type = "http"
  port = "http"
}
"#;
    let (_alloc, idle, port) = start_worker_task(
        &fixture,
        &mut clients,
        "idle",
        PYTHON_HTTP_SERVER,
        idle_config,
    )
    .await;
    let response = http::get(harness::local(port), "localhost", "/")
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let worker = new_worker(&idle, None).await;
    assert!(
        harness::eventually(Duration::from_secs(15), || !harness::alive(worker)).await,
        "the idle worker {worker} kept running"
    );
    assert!(worker_pids(&idle).await.is_empty());

    let periodic_config = r#"
application { path = "local/site" }
application_pool {
  start_mode = "AlwaysRunning"
  periodic_restart = "2s"
}
binding {
  type = "http"
  port = "http"
}
"#;
    let (_alloc, periodic, _port) = start_worker_task(
        &fixture,
        &mut clients,
        "periodic",
        PYTHON_HTTP_SERVER,
        periodic_config,
    )
    .await;
    let first = new_worker(&periodic, None).await;
    let second = new_worker(&periodic, Some(first)).await;
    assert_ne!(first, second);
    let status = control_client(&periodic).status().await.unwrap();
    assert!(status.pools[0].recycles >= 1);
    clients.stop_and_destroy(idle.id()).await;
    clients.stop_and_destroy(periodic.id()).await;
    assert!(fixture.host_processes().is_empty());
    fixture.assert_clean(index);
}
