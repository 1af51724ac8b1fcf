//! Task lifecycle checks, playing the Nomad client against the real binary and real site hosts
//! (protocol doc §5, checks 9–16 with tasks, plus config validation and serving).

mod harness;

use std::time::Duration;

use harness::http::{self, Trust};
use harness::{Clients, DRIVER_CONFIG, Fixture, STATIC_SITE, local};
use nomad_plugin::proto::drivers as pb;
use tokio_stream::StreamExt;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) as a protobuf timestamp: what Nomad's own
/// drivers send for a time that has not happened yet.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// A configured long-lived plugin (P3).
async fn plugin(fixture: &mut Fixture) -> (usize, Clients) {
    fixture.configured_plugin(DRIVER_CONFIG).await
}

/// A new fixture with a configured long-lived plugin.
async fn configured() -> (Fixture, usize, Clients) {
    let mut fixture = Fixture::new();
    let (index, clients) = plugin(&mut fixture).await;
    (fixture, index, clients)
}

/// Reads a host's environment from /proc.
fn environ(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
        .replace('\0', "\n")
}

fn session_and_group(pid: u32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (fields[3].parse().unwrap(), fields[2].parse().unwrap())
}

/// Sends `sig` to a process.
fn send_signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

// Checks 9–13: a static site from start to destroy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_site_runs_from_start_to_destroy() {
    let (mut fixture, index, mut clients) = configured().await;
    let mut events = clients.events().await;
    let site = fixture
        .start_static_site(&mut clients, "web", "<h1>hello from web</h1>")
        .await;
    let (alloc, task, port) = (&site.alloc, &site.task, site.port);

    // Check 10: the handle echoes the config, carries a version and a driver state.
    let handle = &task.handle;
    assert_eq!(handle.config.as_ref(), Some(&task.config));
    assert!(handle.version >= 1);
    assert_eq!(handle.state, pb::TaskState::Running as i32);
    let state = harness::driver_state(handle);
    assert_eq!(state["version"], 1);
    assert_eq!(state["task_id"], task.id());
    assert!(state["host_start_time"].as_u64().is_some());
    let pid = task.host_pid();
    let runtime = task.runtime_dir();
    assert!(runtime.starts_with(&fixture.runtime_root));
    assert!(runtime.join("control.sock").as_os_str().len() < 100);
    for private in [&runtime, &fixture.runtime_root] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", private.display());
    }

    // The host is detached and clean: own session and group, no cookie, no plugin stdout.
    assert_eq!(session_and_group(pid), (pid as i32, pid as i32));
    let env = environ(pid);
    assert!(!env.contains(harness::COOKIE_KEY), "host env: {env}");
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"), "fd {fd}");
    }

    let response = http::get(site.addr(), "localhost", "/").await.unwrap();
    assert_eq!(response.status, 200);
    assert!(response.text().contains("hello from web"));
    // The access log reaches the task's stdout FIFO (what `nomad alloc logs` shows).
    assert!(
        harness::eventually(Duration::from_secs(10), || alloc
            .stdout_text()
            .contains("GET /"))
        .await,
        "access log in stdout FIFO: {:?}",
        alloc.stdout_text()
    );
    let event = harness::expect_event(&mut events, alloc, "started site").await;
    assert!(
        event.message.contains(&port.to_string()),
        "{}",
        event.message
    );

    let status = clients.inspect(task.id()).await.unwrap();
    assert_eq!(status.state, pb::TaskState::Running as i32);
    assert!(status.started_at.is_some());
    // Nomad decodes completed_at and result without a nil check (a nil timestamp is an error,
    // a nil result a nil dereference): both are set while running, as Go's zero values.
    let completed_at = status.completed_at.expect("completed_at set while running");
    assert_eq!(completed_at.seconds, GO_ZERO_TIME_SECONDS);
    assert_eq!(status.result, Some(pb::ExitResult::default()));

    // Check 13: stats.
    let mut stats = clients.stats(task.id(), Duration::from_secs(1)).await;
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(10), stats.next())
            .await
            .expect("a stats message per interval")
            .expect("stream open")
            .unwrap();
        let stats = message.stats.expect("stats set");
        assert_eq!(stats.id, task.id());
        assert!(stats.timestamp.is_some());
        let agg = stats.agg_resource_usage.expect("agg usage set");
        let cpu = agg.cpu.expect("cpu");
        let memory = agg.memory.expect("memory");
        assert!(memory.rss > 0);
        assert!(
            memory
                .measured_fields
                .contains(&(pb::memory_usage::Fields::Rss as i32))
        );
        for field in [
            pb::cpu_usage::Fields::SystemMode,
            pb::cpu_usage::Fields::UserMode,
            pb::cpu_usage::Fields::TotalTicks,
            pb::cpu_usage::Fields::Percent,
        ] {
            assert!(cpu.measured_fields.contains(&(field as i32)));
        }
        // Percent of one core, over the interval: at most 100 per core the host may use.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        for (name, value) in [
            ("percent", cpu.percent),
            ("user_mode", cpu.user_mode),
            ("system_mode", cpu.system_mode),
        ] {
            assert!(
                value.is_finite() && (0.0..=100.0 * cores).contains(&value),
                "cpu.{name} = {value}"
            );
        }
        // total_ticks is the same share of one core's clock, in MHz (Nomad's unit).
        if cpu.percent > 0.0 {
            let mhz = cpu.total_ticks / cpu.percent * 100.0;
            assert!(
                (100.0..=10_000.0).contains(&mhz),
                "total_ticks {} for {} percent",
                cpu.total_ticks,
                cpu.percent
            );
        } else {
            assert_eq!(cpu.total_ticks, 0.0, "ticks without any percent");
        }
        assert!(stats.resource_usage_by_pid.contains_key(&pid.to_string()));
    }

    // Check 11: concurrent waits block until the exit.
    let wait_a = clients.wait_in_background(task.id());
    let wait_b = clients.wait_in_background(task.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !wait_a.is_finished() && !wait_b.is_finished(),
        "WaitTask must block"
    );

    // Check 12: stop returns after the exit.
    clients.stop(task.id(), Duration::from_secs(10)).await;
    assert!(!harness::alive(pid), "host gone when StopTask returns");
    let a = wait_a.await.unwrap().unwrap();
    let b = wait_b.await.unwrap().unwrap();
    let result = a.result.expect("result always set");
    assert_eq!(Some(result), b.result);
    assert_eq!((result.exit_code, result.signal), (0, 0));
    let again = tokio::time::timeout(Duration::from_secs(2), clients.wait(task.id()))
        .await
        .expect("WaitTask answers at once after the exit")
        .unwrap();
    assert_eq!(again.result, Some(result));
    let status = clients.inspect(task.id()).await.unwrap();
    assert_eq!(status.state, pb::TaskState::Exited as i32);
    assert!(status.completed_at.unwrap().seconds > GO_ZERO_TIME_SECONDS);
    assert_eq!(status.result, Some(result));
    // The stats stream ends after the exit.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(item) = stats.next().await {
            if item.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "stats stream ends after the task exits");

    // Stop and destroy are idempotent and leave nothing behind.
    clients.stop(task.id(), Duration::from_secs(1)).await;
    clients
        .destroy(task.id(), false)
        .await
        .expect("destroy an exited task");
    assert!(!runtime.exists(), "runtime folder removed");
    assert!(
        alloc.task_dir.join("local/site/index.html").exists(),
        "app folders stay"
    );
    clients.destroy(task.id(), true).await.unwrap();
    clients
        .stop("unknown/task/00000000", Duration::from_secs(1))
        .await;
    let err = clients.wait(task.id()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(fixture.host_processes().is_empty());
    assert!(
        http::get(site.addr(), "localhost", "/").await.is_err(),
        "port closed"
    );
    fixture.assert_clean(index);
}

// Config validation: a bad config is a fatal InvalidArgument naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_rejected_with_the_field_path() {
    let (mut fixture, index, mut clients) = configured().await;
    let mut events = clients.events().await;
    let alloc = fixture.allocation("bad").await;
    alloc.static_site("site", "x");
    let port = harness::free_port();
    for (config, field) in [
        (
            r#"
            application { path = "local/site" }
            binding {
              type = "ftp"
              port = "http"
            }
            "#,
            "binding[0].type",
        ),
        (
            r#"
            application { path = "local/site" }
            binding {
              type = "http"
              port = "admin"
            }
            "#,
            "binding[0].port",
        ),
    ] {
        let err = fixture
            .start_task(&mut clients, &alloc, config, &[("http", port)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(field), "{}", err.message());
        assert!(!nomad_plugin::status::is_recoverable(&err));
        assert!(fixture.host_processes().is_empty());
        let leftovers = fixture.runtime_leftovers();
        assert!(leftovers.is_empty(), "runtime folders left: {leftovers:?}");
    }

    // A Windows-only option is accepted and reported as a task event.
    let alloc = fixture.allocation("win").await;
    alloc.static_site("site", "x");
    let task = fixture
        .start_task(
            &mut clients,
            &alloc,
            r#"
            application {
              path           = "local/site"
              enable_preload = true
            }
            binding {
              type = "http"
              port = "http"
            }
            "#,
            &[("http", port)],
        )
        .await
        .expect("windows-only options do not fail the task");
    let event = harness::expect_event(&mut events, &alloc, "no effect on Linux").await;
    assert!(
        event.message.starts_with("application[0].enable_preload"),
        "{}",
        event.message
    );
    clients.stop_and_destroy(task.id()).await;
    fixture.assert_clean(index);
}

// A static port belongs to one task: the second one fails, recoverably, naming the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_task_on_the_same_static_port_fails_naming_it() {
    let (mut fixture, index, mut clients) = configured().await;
    let port = harness::free_port();
    let config = format!(
        r#"
        application {{ path = "local/site" }}
        binding {{
          type = "http"
          port = {port}
          hostname = "static.test"
        }}
        "#
    );
    let first = fixture.allocation("one").await;
    first.static_site("site", "first");
    let task = fixture
        .start_task(&mut clients, &first, &config, &[])
        .await
        .expect("first task");
    let second = fixture.allocation("two").await;
    second.static_site("site", "second");
    let err = fixture
        .start_task(&mut clients, &second, &config, &[])
        .await
        .unwrap_err();
    assert!(
        err.message().contains(&port.to_string()),
        "{}",
        err.message()
    );
    assert!(
        nomad_plugin::status::is_recoverable(&err),
        "port in use is recoverable"
    );
    // The first task is untouched.
    let response = http::get(local(port), "static.test", "/").await.unwrap();
    assert_eq!(response.status, 200);
    assert!(response.text().contains("first"));
    assert_eq!(fixture.host_processes().len(), 1);
    clients.stop_and_destroy(task.id()).await;
    fixture.assert_clean(index);
}

/// A certificate for `name` (self-signed), as PEM texts and DER.
fn certificate(
    name: &str,
) -> (
    String,
    String,
    rustls::pki_types::CertificateDer<'static>,
    Vec<u8>,
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (
        cert.pem(),
        key.serialize_pem(),
        cert.der().clone(),
        key.serialize_der(),
    )
}

fn pfx(cert_der: &[u8], key_der: &[u8], password: &str) -> Vec<u8> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let certificate = Certificate::from_der(cert_der).unwrap();
    let chain = PrivateKeyChain::new(
        b"key-1".to_vec(),
        PrivateKey::from_der(key_der).unwrap(),
        [certificate],
    );
    let mut store = KeyStore::new();
    store.add_entry("site", KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().unwrap()
}

// Serving: http with host names and aliases; https with self-signed, PEM and PFX certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_route_by_host_and_alias_over_http_and_https() {
    let (mut fixture, index, mut clients) = configured().await;
    let alloc = fixture.allocation("sites").await;
    alloc.static_site("root", "root app");
    alloc.static_site("api", "api app");
    let secrets = alloc.task_dir.join("secrets");
    let (pem_cert, pem_key, pem_der, _) = certificate("pem.test");
    std::fs::write(secrets.join("site.crt"), pem_cert).unwrap();
    std::fs::write(secrets.join("site.key"), pem_key).unwrap();
    let (_, _, pfx_der, pfx_key) = certificate("pfx.test");
    std::fs::write(secrets.join("site.pfx"), pfx(&pfx_der, &pfx_key, "s3cret")).unwrap();
    let ports = [
        ("http", harness::free_port()),
        ("selfsigned", harness::free_port()),
        ("pem", harness::free_port()),
        ("pfx", harness::free_port()),
    ];
    let task = fixture
        .start_task(
            &mut clients,
            &alloc,
            r#"
            application { path = "local/root" }
            application {
              path  = "local/api"
              alias = "/api"
            }
            binding {
              type     = "http"
              port     = "http"
              hostname = "www.test"
            }
            binding {
              type = "https"
              port = "selfsigned"
              certificate { use_self_signed = true }
            }
            binding {
              type     = "https"
              port     = "pem"
              hostname = "pem.test"
              certificate {
                cert_file = "${NOMAD_SECRETS_DIR}/site.crt"
                key_file  = "${NOMAD_SECRETS_DIR}/site.key"
              }
            }
            binding {
              type     = "https"
              port     = "pfx"
              hostname = "pfx.test"
              certificate {
                pfx_file = "secrets/site.pfx"
                password = "s3cret"
              }
            }
            "#,
            &ports,
        )
        .await
        .expect("StartTask");

    let http_addr = local(ports[0].1);
    let root = http::get(http_addr, "www.test", "/").await.unwrap();
    assert_eq!(root.status, 200);
    assert!(root.text().contains("root app"));
    let api = http::get(http_addr, "www.test", "/api/").await.unwrap();
    assert_eq!(api.status, 200);
    assert!(api.text().contains("api app"));
    let other = http::get(http_addr, "other.test", "/").await.unwrap();
    assert_ne!(
        other.status, 200,
        "a binding with a host name ignores other hosts"
    );

    let (response, _) = http::get_tls(local(ports[1].1), "localhost", "/", Trust::Any)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert!(response.text().contains("root app"));
    let (response, cert) = http::get_tls(
        local(ports[2].1),
        "pem.test",
        "/api/",
        Trust::Roots(vec![pem_der.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    assert!(response.text().contains("api app"));
    assert_eq!(cert, pem_der);
    let (response, cert) = http::get_tls(
        local(ports[3].1),
        "pfx.test",
        "/",
        Trust::Roots(vec![pfx_der.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(cert, pfx_der);

    clients.stop_and_destroy(task.id()).await;
    fixture.assert_clean(index);
}

// SignalTask: pools stop (503) and start again, recycle keeps serving, unknown signals fail,
// SIGKILL ends the task with signal 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_control_pools_and_kill() {
    let (mut fixture, index, mut clients) = configured().await;
    let mut events = clients.events().await;
    let site = fixture
        .start_static_site(&mut clients, "sig", "signals")
        .await;
    let (id, addr) = (site.id(), site.addr());
    clients.signal(id, "STOP").await.unwrap();
    harness::expect_event(&mut events, &site.alloc, "STOP").await;
    assert_eq!(http::get(addr, "localhost", "/").await.unwrap().status, 503);
    clients.signal(id, "START").await.unwrap();
    harness::expect_event(&mut events, &site.alloc, "START").await;
    assert_eq!(http::get(addr, "localhost", "/").await.unwrap().status, 200);
    clients.signal(id, "RECYCLE").await.unwrap();
    clients.signal(id, "SIGHUP").await.unwrap();
    harness::expect_event(&mut events, &site.alloc, "recycled").await;
    assert_eq!(http::get(addr, "localhost", "/").await.unwrap().status, 200);

    let err = clients.signal(id, "SIGUSR1").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "unsupported signal \"SIGUSR1\" (supported: START, STOP, RECYCLE, SIGHUP, SIGINT, SIGTERM, SIGKILL)"
    );
    let err = clients.signal("no/such/task", "STOP").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    clients.signal(id, "SIGKILL").await.unwrap();
    let result = clients.exit_result(id).await;
    assert_eq!((result.exit_code, result.signal), (137, 9));
    assert!(!harness::alive(site.task.host_pid()));
    clients.destroy(id, true).await.unwrap();
    fixture.assert_clean(index);
}

// StopTask escalates: a host that does not react (SIGSTOPped) is killed after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_to_sigkill_after_the_timeout() {
    let (mut fixture, index, mut clients) = configured().await;
    let hung = fixture
        .start_static_site(&mut clients, "hung", "hung")
        .await;
    let pid = hung.task.host_pid();
    send_signal(pid, nix::sys::signal::Signal::SIGSTOP);
    clients.stop(hung.id(), Duration::from_secs(1)).await;
    assert!(!harness::alive(pid), "StopTask returns after the exit");
    let result = clients.exit_result(hung.id()).await;
    assert_eq!(result.signal, 9);
    // DestroyTask of a running task needs force.
    let busy = fixture
        .start_static_site(&mut clients, "busy", "busy")
        .await;
    let err = clients.destroy(busy.id(), false).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    clients.destroy(busy.id(), true).await.unwrap();
    assert!(!harness::alive(busy.task.host_pid()));
    assert!(!busy.task.runtime_dir().exists());
    clients.destroy(hung.id(), true).await.unwrap();
    assert!(fixture.host_processes().is_empty());
    fixture.assert_clean(index);
}

// Checks 14–16: the plugin dies, the site keeps serving, a new plugin recovers the task; a
// reattach finds it tracked; Shutdown leaves it running; a dead task does not recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_outlive_the_plugin_and_are_recovered() {
    let mut fixture = Fixture::new();
    let (first, mut clients) = plugin(&mut fixture).await;
    let site = fixture
        .start_static_site(&mut clients, "durable", "still here")
        .await;
    let (alloc, addr, pid) = (&site.alloc, site.addr(), site.task.host_pid());

    // Check 14: SIGKILL the plugin; the site keeps answering.
    fixture.plugin(first).kill();
    assert!(harness::alive(pid));
    let response = http::get(addr, "localhost", "/").await.unwrap();
    assert!(response.text().contains("still here"));
    // The host's output still reaches the task's log FIFO without any plugin around.
    assert!(
        harness::eventually(Duration::from_secs(10), || alloc
            .stdout_text()
            .contains("GET /"))
        .await,
        "access log after the plugin died: {:?}",
        alloc.stdout_text()
    );

    // A new plugin process, configured as Nomad does, recovers from the persisted handle
    // (without the driver config bytes).
    let (second, mut clients) = plugin(&mut fixture).await;
    let mut events = clients.events().await;
    let persisted = site.task.persisted_handle();
    clients
        .recover(persisted.clone())
        .await
        .expect("RecoverTask");
    clients
        .recover(persisted.clone())
        .await
        .expect("RecoverTask is idempotent");
    harness::expect_event(&mut events, alloc, "re-attached").await;

    // Check 15: reattach to the same address; PluginInfo only; the task is still tracked.
    let handshake = fixture.plugin(second).handshake.clone();
    let mut reattached = Clients::new(harness::dial(&handshake).await.unwrap());
    reattached.plugin_info().await;
    let status = reattached
        .inspect(site.id())
        .await
        .expect("task tracked after reattach");
    assert_eq!(status.state, pb::TaskState::Running as i32);

    // Check 16: Shutdown ends the plugin, not the task.
    let _ = reattached
        .controller
        .shutdown(nomad_plugin::proto::goplugin::Empty {})
        .await;
    assert!(
        fixture
            .plugin(second)
            .wait_exit(Duration::from_secs(5))
            .is_some()
    );
    assert!(harness::alive(pid));
    assert_eq!(http::get(addr, "localhost", "/").await.unwrap().status, 200);
    fixture.assert_clean(second);

    // A third plugin recovers again and stops the task; WaitTask sees the exit though the
    // plugin is not the host's parent.
    let (third, mut clients) = plugin(&mut fixture).await;
    clients
        .recover(persisted.clone())
        .await
        .expect("RecoverTask");
    let waiting = clients.wait_in_background(site.id());
    clients.stop(site.id(), Duration::from_secs(10)).await;
    let result = waiting.await.unwrap().unwrap().result.unwrap();
    assert_eq!((result.exit_code, result.signal), (0, 0));
    clients.destroy(site.id(), true).await.unwrap();

    // The host is gone now: recovery fails and Nomad will restart the task.
    let (fourth, mut clients) = plugin(&mut fixture).await;
    let err = clients.recover(persisted).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("gone"), "{}", err.message());
    assert!(fixture.host_processes().is_empty());
    fixture.assert_clean(third);
    fixture.assert_clean(fourth);
}

/// Replaces the msgpack encoding of the string `marker` in `bytes` with `raw`.
fn splice(bytes: &[u8], marker: &str, raw: &[u8]) -> Vec<u8> {
    let mut needle = vec![0xa0 | marker.len() as u8];
    needle.extend_from_slice(marker.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("marker present");
    [&bytes[..at], raw, &bytes[at + needle.len()..]].concat()
}

// Check 6 for task configs: every number form a cty encoder may use is accepted, and nulls
// mean the IIS defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_config_numbers_arrive_in_every_cty_form() {
    let (mut fixture, index, mut clients) = configured().await;
    let spec = clients.task_schema().await;
    let port = harness::free_port();
    let f64_bytes = [&[0xcb][..], &1000f64.to_be_bytes()].concat();
    let f32_bytes = [&[0xca][..], &1000f32.to_be_bytes()].concat();
    let port_text = port.to_string();
    let port_str = [&[0xa0 | port_text.len() as u8][..], port_text.as_bytes()].concat();
    let port_u16 = [&[0xcd][..], &port.to_be_bytes()].concat();
    let port_f64 = [&[0xcb][..], &f64::from(port).to_be_bytes()].concat();
    let variants: [(&str, &[u8], &[u8]); 6] = [
        ("uint16", &[0xcd, 0x03, 0xe8], &port_str),
        ("int16", &[0xd1, 0x03, 0xe8], &port_u16),
        ("float64", &f64_bytes, &port_f64),
        ("float32", &f32_bytes, &port_str),
        ("string", &[0xa4, b'1', b'0', b'0', b'0'], &port_str),
        ("null", &[0xc0], &port_str),
    ];
    for (name, queue_length, port_bytes) in variants {
        let alloc = fixture.allocation("num").await;
        alloc.static_site("site", name);
        // A marker number and a marker string are encoded the way Nomad does, then the
        // marker bytes are replaced by each form under test.
        let encoded = harness::encode_hcl(
            &spec,
            r#"
            application_pool {
              name         = "default"
              queue_length = 7777777
            }
            application { path = "local/site" }
            binding {
              type     = "http"
              port     = "PORTMARK"
              hostname = "num.test"
            }
            "#,
            &alloc.variables(),
        )
        .expect("encodes");
        // cty writes 7777777 as uint32: 0xce 00 76 ad f1.
        let marker = [0xce, 0x00, 0x76, 0xad, 0xf1];
        let at = encoded
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("queue length encoded as uint32");
        let encoded = [&encoded[..at], queue_length, &encoded[at + marker.len()..]].concat();
        let encoded = splice(&encoded, "PORTMARK", port_bytes);
        let task = fixture
            .start_prepared(&mut clients, alloc.task_config_raw(encoded, &[]))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let state = harness::driver_state(&task.handle);
        assert_eq!(state["spec"]["pools"][0]["queue_length"], 1000, "{name}");
        assert_eq!(state["spec"]["bindings"][0]["port"], port, "{name}");
        let response = http::get(local(port), "num.test", "/").await.unwrap();
        assert!(response.text().contains(name), "{name}");
        clients.stop_and_destroy(task.id()).await;
    }
    fixture.assert_clean(index);
}

// A host that rejects its configuration at start (a certificate file that does not exist)
// fails StartTask fatally with the host's reason, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_start_failure_is_fatal_and_cleaned_up() {
    let (mut fixture, index, mut clients) = configured().await;
    let alloc = fixture.allocation("nocert").await;
    alloc.static_site("site", "x");
    let err = fixture
        .start_task(
            &mut clients,
            &alloc,
            r#"
            application { path = "local/site" }
            binding {
              type = "https"
              port = "https"
              certificate {
                cert_file = "secrets/missing.crt"
                key_file  = "secrets/missing.key"
              }
            }
            "#,
            &[("https", harness::free_port())],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("missing.crt"), "{}", err.message());
    assert!(
        err.message().contains("binding[0].certificate"),
        "{}",
        err.message()
    );
    assert!(!nomad_plugin::status::is_recoverable(&err));
    assert!(fixture.host_processes().is_empty());
    let leftovers = fixture.runtime_leftovers();
    assert!(leftovers.is_empty(), "runtime folders left: {leftovers:?}");
    fixture.assert_clean(index);
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// The original leaked per stats poll (its issue #80): streams opened and dropped again and
// again leave no descriptors or tasks behind in the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_80_stats_polling_does_not_leak() {
    let (mut fixture, index, mut clients) = configured().await;
    let site = fixture
        .start_static_site(&mut clients, "stats", "stats")
        .await;
    let plugin_pid = fixture.plugin(index).pid;
    let poll = |clients: &mut Clients, messages: usize| {
        let mut clients = clients.clone();
        let id = site.id().to_owned();
        async move {
            let mut stream = clients.stats(&id, Duration::from_millis(100)).await;
            for _ in 0..messages {
                stream.next().await.unwrap().unwrap();
            }
        }
    };
    poll(&mut clients, 3).await;
    let before = fd_count(plugin_pid);
    for _ in 0..30 {
        poll(&mut clients, 2).await;
    }
    // Cancelled streams end at their next tick: wait for that, not for a fixed time. A leak of
    // one descriptor per poll never gets there.
    let settled = harness::eventually(Duration::from_secs(10), || {
        fd_count(plugin_pid) <= before + 2
    })
    .await;
    let after = fd_count(plugin_pid);
    assert!(settled, "descriptors grew from {before} to {after}");
    clients.stop_and_destroy(site.id()).await;
    fixture.assert_clean(index);
}

// StopTask takes whatever timeout Nomad sends: one too large for a deadline still stops the
// task gracefully, and a zero one stops it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_accepts_any_timeout() {
    let (mut fixture, index, mut clients) = configured().await;
    for (name, timeout) in [
        (
            "huge",
            prost_types::Duration {
                seconds: i64::MAX,
                nanos: 0,
            },
        ),
        ("zero", prost_types::Duration::default()),
    ] {
        let site = fixture.start_static_site(&mut clients, name, name).await;
        clients
            .driver
            .stop_task(pb::StopTaskRequest {
                task_id: site.id().to_owned(),
                timeout: Some(timeout),
                signal: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(!harness::alive(site.task.host_pid()), "{name}: host gone");
        let result = clients.wait(site.id()).await.unwrap().result;
        assert!(result.is_some(), "{name}");
        clients.destroy(site.id(), true).await.unwrap();
    }
    fixture.assert_clean(index);
}

// A plugin restart while StopTask is in flight: the host keeps draining, the next plugin
// recovers it (it still answers while it drains), and WaitTask there reports the graceful exit.
// A recovered host killed from outside (the plugin is not its parent) reports signal 9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_in_flight_survives_a_plugin_restart() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut fixture = Fixture::new();
    let (first, mut clients) = plugin(&mut fixture).await;
    let alloc = fixture.allocation("drain").await;
    let site_dir = alloc.static_site("site", "drain");
    // Far larger than the socket buffers: a client that stops reading keeps the request in
    // flight, so the drain lasts until that client goes away.
    std::fs::write(site_dir.join("big.bin"), vec![0u8; 64 << 20]).unwrap();
    let port = harness::free_port();
    let draining = fixture
        .start_task(
            &mut clients,
            &alloc,
            r#"
            application_pool {
              name                = "default"
              shutdown_time_limit = "60s"
            }
            application { path = "local/site" }
            binding {
              type = "http"
              port = "http"
            }
            "#,
            &[("http", port)],
        )
        .await
        .expect("StartTask");
    let killed = fixture
        .start_static_site(&mut clients, "killed", "killed")
        .await;

    let mut download = tokio::net::TcpStream::connect(local(port)).await.unwrap();
    download
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut status_line = [0u8; 12];
    download.read_exact(&mut status_line).await.unwrap();
    assert_eq!(&status_line, b"HTTP/1.1 200");

    // StopTask reaches the host (it stops accepting), then the plugin dies mid-call.
    let stopping = {
        let mut clients = clients.clone();
        let id = draining.id().to_owned();
        tokio::spawn(async move {
            clients
                .driver
                .stop_task(pb::StopTaskRequest {
                    task_id: id,
                    timeout: Some(harness::proto_duration(Duration::from_secs(60))),
                    signal: String::new(),
                })
                .await
        })
    };
    assert!(
        harness::eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            local(port)
        )
        .is_err())
        .await,
        "the host stops accepting once StopTask reached it"
    );
    fixture.plugin(first).kill();
    assert!(
        stopping.await.unwrap().is_err(),
        "StopTask fails with its plugin"
    );
    assert!(harness::alive(draining.host_pid()), "the host still drains");

    let (second, mut clients) = plugin(&mut fixture).await;
    clients
        .recover(draining.persisted_handle())
        .await
        .expect("RecoverTask of a draining host");
    clients
        .recover(killed.task.persisted_handle())
        .await
        .expect("RecoverTask");
    let waiting = clients.wait_in_background(draining.id());
    // The download's end ends the drain; the host exits by itself.
    drop(download);
    let response = waiting.await.unwrap().unwrap();
    assert_eq!(response.result, Some(pb::ExitResult::default()));
    assert_eq!(response.err, "");

    send_signal(killed.task.host_pid(), nix::sys::signal::Signal::SIGKILL);
    let result = clients.exit_result(killed.id()).await;
    assert_eq!((result.exit_code, result.signal), (137, 9));
    for id in [draining.id(), killed.id()] {
        clients.destroy(id, true).await.unwrap();
    }
    assert!(fixture.host_processes().is_empty());
    fixture.assert_clean(second);
}

// A host that crashes while the plugin is its parent reports the real signal (SIGABRT here),
// as an exit code of 128 + signal and as a task event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_host_reports_its_signal() {
    let (mut fixture, index, mut clients) = configured().await;
    let mut events = clients.events().await;
    let site = fixture
        .start_static_site(&mut clients, "crash", "crash")
        .await;
    send_signal(site.task.host_pid(), nix::sys::signal::Signal::SIGABRT);
    let response = clients.wait(site.id()).await.unwrap();
    let result = response.result.expect("result always set");
    assert_eq!((result.exit_code, result.signal), (134, 6));
    assert_eq!(response.err, "", "a crash leaves no exit record");
    harness::expect_event(&mut events, &site.alloc, "killed by signal 6").await;
    clients.destroy(site.id(), true).await.unwrap();
    assert!(fixture.host_processes().is_empty());
    fixture.assert_clean(index);
}

// A host Nomad holds no handle for (its StartTask was cut short by an agent restart, or its
// DestroyTask failed) must not block the task forever: the next StartTask for the same task of
// the allocation stops it and starts afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_left_by_an_earlier_attempt_is_replaced() {
    let mut fixture = Fixture::new();
    let (first, mut clients) = plugin(&mut fixture).await;
    let alloc = fixture.allocation("again").await;
    alloc.static_site("site", "attempt");
    let port = harness::free_port();
    let earlier = fixture
        .start_task(&mut clients, &alloc, STATIC_SITE, &[("http", port)])
        .await
        .expect("first attempt");
    fixture.plugin(first).kill();

    let (second, mut clients) = plugin(&mut fixture).await;
    let mut events = clients.events().await;
    let next = fixture
        .start_task(&mut clients, &alloc, STATIC_SITE, &[("http", port)])
        .await
        .expect("the next attempt replaces the orphaned host");
    assert_ne!(next.id(), earlier.id());
    assert!(!harness::alive(earlier.host_pid()), "the orphan is gone");
    harness::expect_event(&mut events, &alloc, "earlier site host").await;
    let response = http::get(local(port), "localhost", "/").await.unwrap();
    assert_eq!(response.status, 200);
    clients.stop_and_destroy(next.id()).await;
    assert!(fixture.host_processes().is_empty());
    fixture.assert_clean(second);
}

// `--runtime-dir` may be relative to the plugin's working folder; hosts (which run in `/`)
// must still find their folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_runtime_dir_works() {
    let mut fixture = Fixture::new();
    let options = harness::LaunchOptions {
        args: vec!["--runtime-dir=relative-rt".into()],
        ..Default::default()
    };
    let (index, mut clients) = fixture.configured_plugin_with(options, DRIVER_CONFIG).await;
    let site = fixture
        .start_static_site(&mut clients, "rel", "relative")
        .await;
    let runtime = site.task.runtime_dir();
    assert!(runtime.is_absolute(), "{}", runtime.display());
    assert!(runtime.starts_with(fixture.temp.path().join("relative-rt")));
    let response = http::get(site.addr(), "localhost", "/").await.unwrap();
    assert!(response.text().contains("relative"));
    clients.stop_and_destroy(site.id()).await;
    fixture.assert_clean(index);
}

// The plugin binary replaced on disk while the plugin runs (an upgrade before the agent
// restarts): new tasks still start, with the binary the plugin runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_start_after_the_plugin_binary_was_replaced() {
    let mut fixture = Fixture::new();
    let copy = fixture.temp.path().join("nomad_iis");
    if std::fs::hard_link(harness::binary(), &copy).is_err() {
        std::fs::copy(harness::binary(), &copy).unwrap();
    }
    let options = harness::LaunchOptions {
        program: Some(copy.clone()),
        ..Default::default()
    };
    let (index, mut clients) = fixture.configured_plugin_with(options, DRIVER_CONFIG).await;
    std::fs::remove_file(&copy).unwrap();
    let site = fixture
        .start_static_site(&mut clients, "upgraded", "upgraded")
        .await;
    let response = http::get(site.addr(), "localhost", "/").await.unwrap();
    assert!(response.text().contains("upgraded"));
    clients.stop_and_destroy(site.id()).await;
    fixture.assert_clean(index);
}
