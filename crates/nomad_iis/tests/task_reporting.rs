//! What Nomad learns about a running task besides its exit: host warnings as task events (a
//! published ASP.NET Core `web.config` asking for `hostingModel="inprocess"` starts, the worker
//! runs out of process on Linux, and the warning reaches Nomad once), and TaskStats covering
//! the host and every worker process.

mod harness;

use std::time::Duration;

use harness::{DRIVER_CONFIG, Fixture};
use nomad_plugin::proto::drivers as pb;
use tokio_stream::StreamExt;

const INPROCESS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <location path="." inheritInChildApplications="false">
    <system.webServer>
      <handlers>
        <add name="aspNetCore" path="*" verb="*" modules="AspNetCoreModuleV2" resourceType="Unspecified" />
      </handlers>
      <aspNetCore processPath="python3" arguments="-m http.server %ASPNETCORE_PORT% --bind 127.0.0.1"
                  stdoutLogEnabled="false" hostingModel="inprocess" />
    </system.webServer>
  </location>
</configuration>
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inprocess_web_config_starts_with_a_task_event_once() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture.configured_plugin(DRIVER_CONFIG).await;
    let mut events = clients.events().await;
    let alloc = fixture.allocation("aspnet").await;
    let site = alloc.static_site("site", "hello");
    std::fs::write(site.join("web.config"), INPROCESS).unwrap();
    let port = harness::free_port();
    let task = fixture
        .start_task(
            &mut clients,
            &alloc,
            harness::STATIC_SITE,
            &[("http", port)],
        )
        .await
        .expect("StartTask");
    let event = harness::expect_event(&mut events, &alloc, "inprocess").await;
    assert!(
        event.message.contains("out of process"),
        "{}",
        event.message
    );

    // TaskStats polls the host's status, warnings included: the event is not sent again.
    let mut stats = clients.stats(task.id(), Duration::from_millis(100)).await;
    for _ in 0..3 {
        stats
            .next()
            .await
            .expect("stats stream open")
            .expect("stats");
    }
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_millis(300), events.next()).await
    {
        assert!(
            !event.message.contains("inprocess"),
            "warning sent twice: {}",
            event.message
        );
    }
    drop(stats);
    clients.stop_and_destroy(task.id()).await;
    fixture.assert_clean(index);
}

/// Two pools with one worker each (named by `process {}` blocks), always running.
const TWO_WORKER_POOLS: &str = r#"
application_pool {
  start_mode = "AlwaysRunning"
}
application_pool {
  name = "api"
  start_mode = "AlwaysRunning"
}
application {
  path = "local/site"
  process {
    command = "python3"
    args = ["-m", "http.server", "%PORT%", "--bind", "127.0.0.1"]
  }
}
application {
  alias = "api"
  path = "local/site"
  application_pool = "api"
  process {
    command = "python3"
    args = ["-m", "http.server", "%PORT%", "--bind", "127.0.0.1"]
  }
}
binding {
  type = "http"
  port = "http"
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_stats_cover_the_host_and_every_worker() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture.configured_plugin(DRIVER_CONFIG).await;
    let alloc = fixture.allocation("stats").await;
    alloc.static_site("site", "hello");
    let port = harness::free_port();
    let task = fixture
        .start_task(&mut clients, &alloc, TWO_WORKER_POOLS, &[("http", port)])
        .await
        .expect("StartTask");
    let control = control::Client::new(task.runtime_dir().join(control::CONTROL_SOCKET));
    let mut workers = Vec::new();
    for _ in 0..200 {
        let status = control.status().await.expect("status");
        workers = status
            .pools
            .iter()
            .flat_map(|p| p.worker_pids.clone())
            .collect();
        if workers.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(workers.len(), 2, "one worker per pool");

    let mut wanted: Vec<String> = workers.iter().map(u32::to_string).collect();
    wanted.push(task.host_pid().to_string());
    wanted.sort();
    let mut stats = clients.stats(task.id(), Duration::from_millis(100)).await;
    let mut seen = Vec::new();
    for _ in 0..50 {
        let message = stats
            .next()
            .await
            .expect("stats stream open")
            .expect("stats");
        let stats = message.stats.expect("stats");
        seen = stats.resource_usage_by_pid.keys().cloned().collect();
        seen.sort();
        if seen == wanted {
            let rss = |u: &pb::TaskResourceUsage| u.memory.as_ref().map_or(0, |m| m.rss);
            let sum: u64 = stats.resource_usage_by_pid.values().map(rss).sum();
            assert_eq!(rss(stats.agg_resource_usage.as_ref().expect("agg")), sum);
            assert!(sum > 0);
            break;
        }
    }
    assert_eq!(seen, wanted, "stats by pid: the host and both workers");
    drop(stats);
    clients.stop_and_destroy(task.id()).await;
    fixture.assert_clean(index);
}
