//! Conformance checks of the plugin's protocol surface, playing the Nomad client (protocol doc
//! §5, checks 1–9 and 15–17). Task lifecycle checks live in `tasks.rs`.

mod harness;

use std::time::Duration;

use harness::{Clients, Fixture, Handshake, LaunchOptions};
use nomad_plugin::proto::base as base_pb;
use nomad_plugin::proto::drivers as pb;
use nomad_plugin::proto::hclspec::{Spec, spec::Block as Kind};
use tokio_stream::StreamExt;

// Check 1: handshake on a unix socket, and on tcp with --port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_is_one_line_and_the_address_is_live() {
    let mut fixture = Fixture::new();
    let index = fixture.launch(LaunchOptions::default()).await;
    let plugin = fixture.plugin(index);
    assert_eq!(plugin.handshake.network, "unix");
    assert!(std::path::Path::new(&plugin.handshake.address).exists());
    // Generous bound: Nomad waits up to 60 s; a healthy plugin answers in well under 10.
    assert!(plugin.handshake_after < Duration::from_secs(10));
    let mut clients = plugin.clients();
    clients.plugin_info().await;

    let tcp = fixture
        .launch(LaunchOptions {
            args: vec!["--port".into(), "0".into()],
            ..Default::default()
        })
        .await;
    let plugin = fixture.plugin(tcp);
    assert_eq!(plugin.handshake.network, "tcp");
    assert!(plugin.handshake.address.starts_with("127.0.0.1:"));
    plugin.clients().plugin_info().await;
    assert!(Handshake::parse("1|2|unix|/x|grpc|extra").is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    fixture.assert_clean(index);
    fixture.assert_clean(tcp);
}

/// Runs the binary to completion with `args`, stdin on /dev/null, with or without Nomad's
/// magic cookie.
async fn run_once(args: &[&str], with_cookie: bool) -> std::process::Output {
    let mut command = tokio::process::Command::new(harness::binary());
    command.args(args).stdin(std::process::Stdio::null());
    if with_cookie {
        command.env(harness::COOKIE_KEY, harness::COOKIE_VALUE);
    } else {
        command.env_remove(harness::COOKIE_KEY);
    }
    command.output().await.unwrap()
}

// Under Nomad, stdout is the handshake channel: `--help`/`--version` in the agent's `args`
// must not print there (by hand they answer on stdout as usual).
#[tokio::test]
async fn help_and_version_never_write_stdout_under_nomad() {
    for flag in ["--help", "--version"] {
        let output = run_once(&[flag], true).await;
        assert!(
            output.stdout.is_empty(),
            "{flag} wrote to stdout under Nomad"
        );
        assert_eq!(output.status.code(), Some(1), "{flag}");
        let by_hand = run_once(&[flag], false).await;
        assert_eq!(by_hand.status.code(), Some(0), "{flag} by hand");
        assert!(String::from_utf8_lossy(&by_hand.stdout).contains("nomad_iis"));
    }
}

// Check 2: run by hand (no cookie) or with bad flags.
#[tokio::test]
async fn without_the_cookie_it_explains_itself_and_exits_1() {
    let output = run_once(&[], false).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "no handshake without the cookie");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("plugin_dir") && stderr.contains("plugin \"nomad_iis\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("--help") && stderr.contains("nomad_iis run JOBFILE"),
        "{stderr}"
    );

    let output = run_once(&["--no-such-flag=1"], true).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    // Launched by Nomad, the complaint must reach the agent's log at error level: a plain line
    // would be logged at debug level and never seen.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|entry: &serde_json::Value| entry["@level"] == "error")
        .collect();
    assert!(
        errors.iter().any(|e| e["@message"]
            .as_str()
            .is_some_and(|m| m.contains("--no-such-flag"))),
        "{stderr}"
    );
    for line in stderr.lines() {
        harness::check_stderr_line(line).unwrap();
    }

    let output = run_once(&["--help"], false).await;
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--management-api-port"));
}

// Check 3: go-plugin housekeeping services and message limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_broker_stdio_and_large_messages() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture.launch_default().await;
    let health = clients
        .health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut stdio = clients.stdio.stream_stdio(()).await.unwrap().into_inner();
    let (_broker_tx, broker_rx) = tokio::sync::mpsc::channel(1);
    let mut broker = clients
        .broker
        .start_stream(tokio_stream::wrappers::ReceiverStream::new(broker_rx))
        .await
        .unwrap()
        .into_inner();
    // Both stay open and idle: nothing arrives, nothing ends.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), stdio.next())
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), broker.next())
            .await
            .is_err()
    );

    // A request above tonic's default 4 MiB decode limit is accepted.
    let huge = "x".repeat(5 << 20);
    clients
        .driver
        .stop_task(pb::StopTaskRequest {
            task_id: huge,
            timeout: None,
            signal: String::new(),
        })
        .await
        .expect("a 5 MiB request is accepted");
    fixture.assert_clean(index);
}

// Checks 4 and 7: identity and capabilities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_info_and_capabilities() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture.launch_default().await;
    let info = clients.plugin_info().await;
    assert_eq!(info.r#type, base_pb::PluginType::Driver as i32);
    assert!(info.plugin_api_versions.contains(&"0.1.0".to_owned()));
    assert_eq!(info.name, "iis");
    let parts: Vec<&str> = info.plugin_version.split('.').collect();
    assert_eq!(parts.len(), 3, "semver {}", info.plugin_version);
    assert!(parts.iter().all(|p| p.parse::<u64>().is_ok()));

    let capabilities = clients
        .driver
        .capabilities(pb::CapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .expect("capabilities are always set");
    assert!(capabilities.send_signals);
    assert!(!capabilities.exec);
    assert_eq!(
        capabilities.fs_isolation,
        pb::driver_capabilities::FsIsolation::None as i32
    );
    let exec = clients
        .driver
        .exec_task(pb::ExecTaskRequest {
            task_id: "x".into(),
            command: vec!["true".into()],
            timeout: None,
        })
        .await
        .unwrap_err();
    assert_eq!(exec.code(), tonic::Code::Unimplemented);
    fixture.assert_clean(index);
}

/// Whether `text` is an HCL type expression: `string`, `number`, `bool`, `any`, `list(T)`,
/// `set(T)`, `map(T)`, `object({k = T, ...})`, `tuple([T, ...])`.
fn type_expression_ok(text: &str) -> bool {
    fn parse(s: &str) -> Option<&str> {
        let s = s.trim_start();
        for primitive in ["string", "number", "bool", "any"] {
            if let Some(rest) = s.strip_prefix(primitive) {
                return Some(rest);
            }
        }
        for collection in ["list(", "set(", "map("] {
            if let Some(rest) = s.strip_prefix(collection) {
                return parse(rest)?.trim_start().strip_prefix(')');
            }
        }
        if let Some(mut rest) = s.strip_prefix("object({") {
            loop {
                rest = rest.trim_start();
                if let Some(done) = rest.strip_prefix('}') {
                    return done.trim_start().strip_prefix(')');
                }
                let key_end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
                if key_end == 0 {
                    return None;
                }
                rest = rest[key_end..].trim_start().strip_prefix('=')?;
                rest = parse(rest)?.trim_start();
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        if let Some(mut rest) = s.strip_prefix("tuple([") {
            loop {
                rest = rest.trim_start();
                if let Some(done) = rest.strip_prefix(']') {
                    return done.trim_start().strip_prefix(')');
                }
                rest = parse(rest)?.trim_start();
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        None
    }
    parse(text).is_some_and(|rest| rest.trim().is_empty())
}

/// Checks the hclspec rules Nomad relies on (protocol doc §4); returns the problems found.
fn spec_problems(spec: &Spec, path: &str, named_context: bool, out: &mut Vec<String>) {
    match &spec.block {
        None => out.push(format!("{path}: empty spec")),
        Some(Kind::Object(object)) => {
            for (key, value) in &object.attributes {
                spec_problems(value, &format!("{path}.{key}"), false, out);
            }
        }
        Some(Kind::Array(array)) => {
            for (i, value) in array.values.iter().enumerate() {
                spec_problems(value, &format!("{path}[{i}]"), true, out);
            }
        }
        Some(Kind::Attr(attr)) => {
            if named_context && attr.name.is_empty() {
                out.push(format!("{path}: attr inside default/array needs a name"));
            }
            if attr.r#type.is_empty() {
                out.push(format!("{path}: attr without a type"));
            } else if !type_expression_ok(&attr.r#type) {
                out.push(format!("{path}: bad type {:?}", attr.r#type));
            }
        }
        Some(Kind::BlockValue(block)) => match &block.nested {
            Some(nested) => spec_problems(nested, &format!("{path}{{{}}}", block.name), false, out),
            None => out.push(format!("{path}: block without nested spec")),
        },
        Some(Kind::BlockList(block)) => match &block.nested {
            Some(nested) => spec_problems(nested, &format!("{path}[{}]", block.name), false, out),
            None => out.push(format!("{path}: block list without nested spec")),
        },
        Some(Kind::BlockSet(block)) => match &block.nested {
            Some(nested) => spec_problems(nested, &format!("{path}[{}]", block.name), false, out),
            None => out.push(format!("{path}: block set without nested spec")),
        },
        Some(Kind::BlockMap(block)) => {
            if block.labels.is_empty() {
                out.push(format!("{path}: block map without labels"));
            }
            match &block.nested {
                Some(nested) => spec_problems(nested, path, false, out),
                None => out.push(format!("{path}: block map without nested spec")),
            }
        }
        Some(Kind::BlockAttrs(block)) => {
            if block.r#type.is_empty() {
                out.push(format!("{path}: block attrs without a type"));
            }
        }
        Some(Kind::Default(default)) => match (&default.primary, &default.default) {
            (Some(primary), Some(fallback)) => {
                spec_problems(primary, path, true, out);
                spec_problems(fallback, path, true, out);
            }
            _ => out.push(format!("{path}: default needs primary and default")),
        },
        Some(Kind::Literal(literal)) => {
            let parsed: Result<hcl::Body, _> = hcl::from_str(&format!("x = {}", literal.value));
            if parsed.is_err() {
                out.push(format!(
                    "{path}: literal {:?} is no HCL expression",
                    literal.value
                ));
            }
        }
    }
}

// Check 5: both schemas obey the spec rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_obey_the_hclspec_rules() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture.launch_default().await;
    let driver_spec = clients
        .base
        .config_schema(base_pb::ConfigSchemaRequest {})
        .await
        .unwrap()
        .into_inner()
        .spec
        .expect("config spec");
    let task_spec = clients.task_schema().await;
    for (name, spec) in [("config", &driver_spec), ("task config", &task_spec)] {
        assert!(
            matches!(spec.block, Some(Kind::Object(_))),
            "{name} spec root must be an object"
        );
        let mut problems = Vec::new();
        spec_problems(spec, name, false, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }
    fixture.assert_clean(index);
}

/// The launch sequence of an agent start: P1 (info + schema), P2 (SetConfig without
/// nomad_config), each killed; then the long-lived P3.
async fn agent_start(fixture: &mut Fixture, config_hcl: &str) -> (usize, Clients) {
    let (p1, mut clients) = fixture.launch_default().await;
    clients.plugin_info().await;
    let config = clients.driver_config(config_hcl).await;
    fixture.plugin(p1).kill();
    let (p2, mut clients) = fixture.launch_default().await;
    harness::set_config(&mut clients, &config, false)
        .await
        .expect("P2 SetConfig");
    fixture.plugin(p2).kill();
    let (p3, mut clients) = fixture.launch_default().await;
    harness::set_config(&mut clients, &config, true)
        .await
        .expect("P3 SetConfig");
    (p3, clients)
}

/// A msgpack string in its smallest form, as cty writes it.
fn mp_str(text: &str) -> Vec<u8> {
    let mut out = if text.len() < 32 {
        vec![0xa0 | text.len() as u8]
    } else {
        vec![0xd9, text.len() as u8]
    };
    out.extend_from_slice(text.as_bytes());
    out
}

/// The agent's plugin config exactly as Nomad sends it: every attribute, keys sorted, nulls for
/// absent attributes, defaults applied, an empty array for an absent block list.
fn golden_driver_config(websites: &[u8], procdumps: &[u8]) -> Vec<u8> {
    [
        vec![0x89],
        mp_str("allowed_apppool_identities"),
        vec![0xc0],
        mp_str("allowed_apppool_users"),
        vec![0xc0],
        mp_str("allowed_target_websites"),
        websites.to_vec(),
        mp_str("directory_security"),
        vec![0xc3],
        mp_str("enabled"),
        vec![0xc3],
        mp_str("fingerprint_interval"),
        mp_str("30s"),
        mp_str("limits"),
        vec![0x90],
        mp_str("placeholder_app_path"),
        vec![0xc0],
        mp_str("procdumps"),
        procdumps.to_vec(),
    ]
    .concat()
}

// Check 6: SetConfig with and without nomad_config, from HCL and from golden bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_accepts_nomad_encodings_and_rejects_bad_config() {
    let mut fixture = Fixture::new();
    let (p3, mut clients) = agent_start(
        &mut fixture,
        r#"
        enabled = true
        fingerprint_interval = "15s"
        allowed_target_websites = ["Default Web Site"]
        "#,
    )
    .await;
    // No config block at all: every attribute arrives null or defaulted.
    let empty = clients.driver_config("").await;
    harness::set_config(&mut clients, &empty, true)
        .await
        .unwrap();
    // The same, byte for byte, as a golden input: nulls and an empty block list.
    let golden = golden_driver_config(&[0xc0], &[0x90]);
    assert_eq!(empty, golden, "hcldec + cty encode like Nomad");
    harness::set_config(&mut clients, &golden, true)
        .await
        .unwrap();
    // A list of one string and a block list of one object.
    let procdump = [
        vec![0x91, 0x82],
        mp_str("accept_eula"),
        vec![0xc3],
        mp_str("binary_path"),
        mp_str("/usr/bin/gcore"),
    ]
    .concat();
    let golden = golden_driver_config(&[0x91, 0xa1, b'*'], &procdump);
    harness::set_config(&mut clients, &golden, false)
        .await
        .unwrap();
    let mut fingerprints = clients.fingerprints().await;
    let fp = fingerprints.next().await.unwrap().unwrap();
    assert_eq!(
        fp.attributes["driver.iis.target_websites_enabled"].value,
        Some(nomad_plugin::proto::structs::attribute::Value::BoolVal(
            true
        ))
    );
    drop(fingerprints);
    // Empty bytes (not sent by Nomad, but harmless) mean the defaults.
    harness::set_config(&mut clients, &[], false).await.unwrap();

    let bad = clients
        .driver_config(r#"fingerprint_interval = "5s""#)
        .await;
    let err = harness::set_config(&mut clients, &bad, true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("fingerprint_interval"),
        "{}",
        err.message()
    );
    // Not an object at all, and a field of the wrong type (named in the message).
    let wrong_type = [
        0x81, 0xa7, b'e', b'n', b'a', b'b', b'l', b'e', b'd', 0xa1, b'x',
    ];
    for (bytes, field) in [(&[0xa1, b'x'][..], ""), (&wrong_type[..], "enabled")] {
        let err = harness::set_config(&mut clients, bytes, true)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(field), "{}", err.message());
    }
    fixture.assert_clean(p3);
}

// Check 8: fingerprint stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_streams_periodically_until_cancelled() {
    let mut fixture = Fixture::new();
    let (p3, mut clients) = agent_start(&mut fixture, r#"fingerprint_interval = "10s""#).await;
    let mut stream = clients.fingerprints().await;
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("first fingerprint within seconds")
        .expect("stream open")
        .unwrap();
    assert_eq!(
        first.health,
        pb::fingerprint_response::HealthState::Healthy as i32,
        "{}",
        first.health_description
    );
    assert!(
        first
            .attributes
            .keys()
            .all(|k| k.starts_with("driver.iis."))
    );
    for key in [
        "driver.iis.version",
        "driver.iis.directory_security_enabled",
        "driver.iis.target_websites_enabled",
        "driver.iis.management_api_enabled",
        "driver.iis.management_api_port",
        "driver.iis.iis_aspnet_core_available",
        "driver.iis.iis_rewrite_module_available",
        "driver.iis.os",
    ] {
        assert!(first.attributes.contains_key(key), "missing {key}");
    }
    assert!(!first.attributes.contains_key("driver.iis.iis_version"));
    // Types as the original reports them: constraints compare them as such.
    use nomad_plugin::proto::structs::attribute::Value;
    let value = |key: &str| first.attributes[key].value.clone();
    assert!(matches!(value("driver.iis.version"), Some(Value::StringVal(v)) if !v.is_empty()));
    assert!(matches!(
        value("driver.iis.management_api_port"),
        Some(Value::IntVal(_))
    ));
    for key in [
        "driver.iis.directory_security_enabled",
        "driver.iis.target_websites_enabled",
        "driver.iis.management_api_enabled",
        "driver.iis.iis_aspnet_core_available",
        "driver.iis.iis_rewrite_module_available",
    ] {
        assert!(matches!(value(key), Some(Value::BoolVal(_))), "{key}");
    }
    // The stream stays open over two periods and keeps sending.
    for _ in 0..2 {
        let next = tokio::time::timeout(Duration::from_secs(25), stream.next())
            .await
            .expect("a fingerprint each period")
            .expect("stream still open")
            .unwrap();
        assert_eq!(next.attributes, first.attributes);
    }
    drop(stream);

    // Disabled → UNDETECTED.
    let disabled = clients.driver_config("enabled = false").await;
    harness::set_config(&mut clients, &disabled, true)
        .await
        .unwrap();
    let mut stream = clients.fingerprints().await;
    let fp = stream.next().await.unwrap().unwrap();
    assert_eq!(
        fp.health,
        pb::fingerprint_response::HealthState::Undetected as i32
    );
    fixture.assert_clean(p3);
}

// Check 8 (health): an unusable runtime root makes the node unhealthy, with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_runtime_root_is_unhealthy() {
    let mut fixture = Fixture::new();
    let blocker = fixture.temp.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let (index, mut clients) = fixture
        .launch_with(LaunchOptions {
            args: vec![format!("--runtime-dir={}/rt", blocker.display())],
            ..Default::default()
        })
        .await;
    let mut stream = clients.fingerprints().await;
    let fp = stream.next().await.unwrap().unwrap();
    assert_eq!(
        fp.health,
        pb::fingerprint_response::HealthState::Unhealthy as i32
    );
    assert!(
        fp.health_description.contains("not-a-dir"),
        "{}",
        fp.health_description
    );
    fixture.assert_clean(index);
}

// Check 9: the task events stream stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_events_stream_stays_open() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture.launch_default().await;
    let mut events = clients.events().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), events.next())
            .await
            .is_err(),
        "no event and no end while idle"
    );
    fixture.assert_clean(index);
}

// Check 15: reattach by dialing the same address again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_dials_the_same_address() {
    let mut fixture = Fixture::new();
    let (index, _) = fixture.launch_default().await;
    let handshake = fixture.plugin(index).handshake.clone();
    let channel = harness::dial(&handshake).await.unwrap();
    let mut clients = Clients::new(channel);
    let info = clients.plugin_info().await;
    assert_eq!(info.name, "iis");
    let mut stream = clients.fingerprints().await;
    assert!(stream.next().await.unwrap().is_ok());
}

// Check 16: Shutdown exits promptly; SIGINT is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_is_ignored_and_shutdown_exits_promptly() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture.launch_default().await;
    // Open streams like a real client, so shutdown has to cut them.
    let _fingerprint = clients.fingerprints().await;
    let _events = clients.events().await;
    fixture
        .plugin(index)
        .signal(nix::sys::signal::Signal::SIGINT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fixture.plugin(index).is_running(), "SIGINT must be ignored");
    clients.plugin_info().await;

    let _ = clients
        .controller
        .shutdown(nomad_plugin::proto::goplugin::Empty {})
        .await;
    // Nomad kills the plugin 2 s after Shutdown; we only assert a generous bound so a loaded
    // machine does not fail the test, and report the time when it is over 2 s.
    let started = std::time::Instant::now();
    let status = fixture
        .plugin(index)
        .wait_exit(Duration::from_secs(5))
        .expect("plugin exits after Shutdown");
    let took = started.elapsed();
    if took > Duration::from_secs(2) {
        eprintln!("warning: plugin took {took:?} to exit after Shutdown (Nomad allows 2 s)");
    }
    assert!(status.success(), "{status:?}");
    let socket = std::path::PathBuf::from(&fixture.plugin(index).handshake.address);
    assert!(!socket.exists(), "the plugin socket is removed on shutdown");
    fixture.assert_clean(index);
}

// Check 17: the plugin keeps working when its stderr pipe is closed (agent gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_closed_stderr() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture
        .launch_with(LaunchOptions {
            close_stderr: true,
            ..Default::default()
        })
        .await;
    // SetConfig and failing StartTasks both log; neither may kill the plugin.
    let config = clients.driver_config("").await;
    harness::set_config(&mut clients, &config, true)
        .await
        .unwrap();
    clients.failing_starts(50).await;
    clients.plugin_info().await;
    assert!(fixture.plugin(index).is_running());
}

// Check 17: the plugin never blocks on a full stderr pipe (an agent that stopped reading):
// far more log lines than the pipe and the log queue hold, and it still answers and exits
// promptly on Shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_while_nobody_reads_stderr() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture
        .launch_with(LaunchOptions {
            stall_stderr: true,
            ..Default::default()
        })
        .await;
    // About 250 lines fill a 64 KiB pipe; the plugin's queue holds 4096 more.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let mut clients = clients.clone();
            tokio::spawn(async move { clients.failing_starts(1500).await })
        })
        .collect();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(120), worker)
            .await
            .expect("failing StartTasks answered while stderr is full")
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), clients.plugin_info())
        .await
        .expect("PluginInfo answered while stderr is full");
    let _ = clients
        .controller
        .shutdown(nomad_plugin::proto::goplugin::Empty {})
        .await;
    let status = fixture
        .plugin(index)
        .wait_exit(Duration::from_secs(5))
        .expect("plugin exits after Shutdown though stderr is full");
    assert!(status.success(), "{status:?}");
}
