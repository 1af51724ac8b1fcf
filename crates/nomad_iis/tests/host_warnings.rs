//! Host warnings as Nomad sees them: a published ASP.NET Core `web.config` asking for
//! `hostingModel="inprocess"` starts (the worker runs out of process on Linux) and the host's
//! warning reaches Nomad as a task event, once.

mod harness;

use std::time::Duration;

use harness::{DRIVER_CONFIG, Fixture};
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
