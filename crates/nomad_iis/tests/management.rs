//! The Management API end to end: the real plugin binary launched as Nomad launches it, real
//! site hosts, and HTTP requests to the API's port (issue 7).

mod harness;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::http::{self, Response};
use harness::{
    Clients, DRIVER_CONFIG, Fixture, LaunchOptions, STATIC_SITE, StaticSite, eventually,
    expect_event, free_port, local, random_hex, set_config,
};
use nomad_plugin::proto::structs::attribute::Value as AttrValue;
use serde_json::{Value, json};
use tokio_stream::StreamExt;

const KEY: &str = "12345";
const JWT_SECRET: &str = "a-long-jwt-secret-for-tests";

/// Whether something accepts connections on `port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(local(port)).is_ok()
}

/// Launches a configured long-lived plugin with the API on a free port; waits until it listens.
async fn plugin_with_api(fixture: &mut Fixture, extra: &[&str]) -> (usize, Clients, SocketAddr) {
    let port = free_port();
    let mut args = vec![format!("--management-api-port={port}")];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let (index, clients) = fixture
        .configured_plugin_with(
            LaunchOptions {
                args,
                ..Default::default()
            },
            DRIVER_CONFIG,
        )
        .await;
    assert!(
        eventually(Duration::from_secs(15), || listening(port)).await,
        "the API never listened; stderr {:#?}",
        fixture.plugin(index).stderr.snapshot()
    );
    (index, clients, local(port))
}

/// A request with the API key.
async fn with_key(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    http::request(addr, method, path, &[("X-Api-Key", KEY)], body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn json_of(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.text()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token signed with `secret`, valid for five minutes, with `claims` added.
fn token(secret: &str, claims: Value) -> String {
    let mut all = json!({"iss": "NomadIIS", "aud": "ManagementApi", "exp": now() + 300});
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    management::auth::sign_token(secret, &all)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A zip of (name, contents); a name ending in `/` is a folder.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        if name.ends_with('/') {
            zip.add_directory(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
        } else {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
    }
    zip.finish().unwrap().into_inner()
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn route_path(template: &str, alloc: &str, task: &str, fs_path: &str) -> String {
    template
        .replace("{allocId}", alloc)
        .replace("{taskName}", task)
        .replace("{path}", fs_path)
}

fn attribute(fp: &nomad_plugin::proto::drivers::FingerprintResponse, key: &str) -> AttrValue {
    fp.attributes[&format!("driver.iis.{key}")]
        .value
        .clone()
        .unwrap()
}

// Issue 7 item 1: P1 and P2 never bind; P3 binds after SetConfig with nomad_config; a launch
// while the port is held still works; a restarted plugin binds again and shows recovered tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_long_lived_plugin_binds_and_a_restarted_one_binds_again() {
    let mut fixture = Fixture::new();
    let port = free_port();
    let options = LaunchOptions {
        args: vec![
            format!("--management-api-port={port}"),
            "--management-api-key".into(),
            KEY.into(),
            "--procdump-accept-eula=true".into(),
        ],
        ..Default::default()
    };
    // P1: handshake, PluginInfo, ConfigSchema, kill.
    let (p1, mut c1) = fixture.launch_with(options.clone()).await;
    c1.plugin_info().await;
    let config = c1.driver_config(DRIVER_CONFIG).await;
    assert!(!listening(port), "P1 bound the API");
    fixture.plugin(p1).kill();
    // P2: SetConfig without nomad_config, kill.
    let (p2, mut c2) = fixture.launch_with(options.clone()).await;
    set_config(&mut c2, &config, false).await.unwrap();
    let fp = c2.fingerprints().await.next().await.unwrap().unwrap();
    assert_eq!(
        attribute(&fp, "management_api_enabled"),
        AttrValue::BoolVal(false)
    );
    assert!(
        !eventually(Duration::from_millis(700), || listening(port)).await,
        "P2 bound the API"
    );
    fixture.plugin(p2).kill();
    // P3: the long-lived instance.
    let (p3, mut c3) = fixture.launch_with(options.clone()).await;
    set_config(&mut c3, &config, true).await.unwrap();
    assert!(eventually(Duration::from_secs(15), || listening(port)).await);
    let mut fingerprints = c3.fingerprints().await;
    let fp = fingerprints.next().await.unwrap().unwrap();
    assert_eq!(
        attribute(&fp, "management_api_enabled"),
        AttrValue::BoolVal(true)
    );
    assert_eq!(
        attribute(&fp, "management_api_port"),
        AttrValue::IntVal(i64::from(port))
    );
    drop(fingerprints);
    let site = fixture.start_static_site(&mut c3, "web", "hello").await;
    let status_path = format!("/api/v1/allocs/{}/web/status", site.alloc.alloc_id);
    let status = with_key(local(port), "GET", &status_path, b"").await;
    assert_eq!(status.status, 200, "{}", status.text());
    assert_eq!(json_of(&status)["recovered"], false);

    // Nomad launching a P1 while P3 holds the port: the launch must not fail.
    let (extra, mut c_extra) = fixture.launch_with(options.clone()).await;
    c_extra.plugin_info().await;
    assert!(fixture.plugin(extra).is_running());
    fixture.plugin(extra).kill();

    // The plugin restarts: the old one is killed, the new one recovers the task and serves it.
    fixture.plugin(p3).kill();
    let (p4, mut c4) = fixture.launch_with(options).await;
    set_config(&mut c4, &config, true).await.unwrap();
    c4.recover(site.task.persisted_handle()).await.unwrap();
    assert!(eventually(Duration::from_secs(15), || listening(port)).await);
    let mut recovered = Value::Null;
    for _ in 0..100 {
        let response = with_key(local(port), "GET", &status_path, b"").await;
        if response.status == 200 {
            recovered = json_of(&response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recovered["recovered"], true, "{recovered}");
    assert_eq!(recovered["applicationPools"][0]["status"], "Started");
    let debug = json_of(&with_key(local(port), "GET", "/api/v1/debug", b"").await);
    let tasks = debug["tasks"].as_array().unwrap();
    assert!(
        tasks
            .iter()
            .any(|t| t["allocId"] == site.alloc.alloc_id.as_str() && t["recovered"] == true),
        "{debug}"
    );
    fixture.assert_clean(p4);
}

// Issue 7 items 1 and 8: with a key and a secret set, no route answers without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_callers_without_valid_credentials() {
    let mut fixture = Fixture::new();
    let (index, mut clients, addr) = plugin_with_api(
        &mut fixture,
        &[
            &format!("--management-api-key={KEY}"),
            &format!("--management-api-jwt-secret={JWT_SECRET}"),
            "--procdump-accept-eula=true",
        ],
    )
    .await;
    let site = fixture
        .start_static_site(&mut clients, "web", "hello")
        .await;
    let alloc = site.alloc.alloc_id.clone();
    let expired = management::auth::sign_token(
        JWT_SECRET,
        &json!({"iss": "NomadIIS", "aud": "ManagementApi", "exp": now() - 3600, "capabilities": "*"}),
    );
    let forged = token("not-the-secret", json!({"capabilities": "*"}));
    let bad_credentials: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no credentials", vec![]),
        ("a wrong key", vec![("X-Api-Key", "1234".into())]),
        ("an empty key", vec![("X-Api-Key", String::new())]),
        (
            "an expired token",
            vec![("Authorization", bearer(&expired))],
        ),
        ("a forged token", vec![("Authorization", bearer(&forged))]),
        (
            "a garbage token",
            vec![("Authorization", "Bearer x.y.z".into())],
        ),
        ("basic auth", vec![("Authorization", "Basic YTpi".into())]),
    ];
    let routes = management::routes::all();
    // The capture routes are in the sweep (they reach Chromium and gdb in this build).
    for capture in [
        "/api/v1/allocs/{allocId}/screenshot",
        "/api/v1/allocs/{allocId}/procdump",
        "/api/v1/allocs/{allocId}/{taskName}/screenshot",
        "/api/v1/allocs/{allocId}/{taskName}/procdump",
    ] {
        assert!(
            routes
                .iter()
                .any(|r| r.path == capture && r.method == "GET"),
            "{capture} missing from the route table"
        );
    }
    for route in &routes {
        let path = route_path(route.path, &alloc, "web", "local/site/index.html");
        for (label, headers) in &bad_credentials {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = http::request(addr, route.method, &path, &headers, b"PK")
                .await
                .unwrap();
            assert_eq!(
                response.status,
                401,
                "{} {path} with {label}: {}",
                route.method,
                response.text()
            );
            assert!(
                json_of(&response)["error"].is_string(),
                "{}",
                response.text()
            );
        }
    }
    // A valid token without capabilities reaches no route that needs one.
    let powerless = token(JWT_SECRET, json!({"capabilities": []}));
    let powerless = bearer(&powerless);
    for route in routes.iter().filter(|r| r.capability.is_some()) {
        let path = route_path(route.path, &alloc, "web", "local/site/index.html");
        let response = http::request(
            addr,
            route.method,
            &path,
            &[("Authorization", &powerless)],
            b"PK",
        )
        .await
        .unwrap();
        assert_eq!(
            response.status,
            403,
            "{} {path}: {}",
            route.method,
            response.text()
        );
    }
    let unknown = http::request(addr, "GET", "/api/v1/nothing", &[], b"")
        .await
        .unwrap();
    assert_eq!(unknown.status, 401);
    // Nothing was touched, and the right key works.
    assert_eq!(
        std::fs::read_to_string(site.alloc.task_dir.join("local/site/index.html")).unwrap(),
        "hello"
    );
    let status = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{alloc}/web/status"),
        b"",
    )
    .await;
    assert_eq!(status.status, 200);
    let status = json_of(&status);
    assert_eq!(status["allocId"], alloc.as_str());
    assert_eq!(status["taskName"], "web");
    assert_eq!(status["defaultApplicationPool"], "default");
    let pool = &status["applicationPools"][0];
    assert_eq!(pool["name"], "default");
    assert_eq!(pool["status"], "Started");
    assert_eq!(pool["isWorkerProcessRunning"], false);
    // The debug view lists runtime folders no task owns.
    std::fs::create_dir_all(fixture.runtime_root.join("stale-alloc-web")).unwrap();
    let debug = json_of(&with_key(addr, "GET", "/api/v1/debug", b"").await);
    assert!(
        debug["leftovers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("stale-alloc-web")),
        "{debug}"
    );
    assert_eq!(debug["tasks"][0]["recovered"], false);
    // The OpenAPI document lists every route of the table.
    let doc = json_of(&with_key(addr, "GET", "/api/v1/openapi.json", b"").await);
    assert_eq!(doc["openapi"], "3.0.3");
    for route in &routes {
        assert!(
            doc["paths"][route.path][route.method.to_ascii_lowercase()].is_object(),
            "{} {}",
            route.method,
            route.path
        );
    }
    // Secrets never reach the log.
    let stderr = fixture.plugin(index).stderr.snapshot().join("\n");
    assert!(!stderr.contains(JWT_SECRET));
    assert!(!stderr.contains(&format!("={KEY}")));
    fixture.assert_clean(index);
}

// Issue 7 item 1: JWT scopes and capabilities; 403 on a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_held_to_their_claims() {
    let mut fixture = Fixture::new();
    let (index, mut clients, addr) =
        plugin_with_api(&mut fixture, &["--management-api-jwt-secret", JWT_SECRET]).await;
    let a = fixture
        .start_static_site(&mut clients, "web", "site a")
        .await;
    let b = fixture
        .start_static_site(&mut clients, "web", "site b")
        .await;
    let (alloc_a, alloc_b) = (a.alloc.alloc_id.clone(), b.alloc.alloc_id.clone());
    let call = |method: &'static str, path: String, token: String| async move {
        let header = bearer(&token);
        http::request(addr, method, &path, &[("Authorization", &header)], b"")
            .await
            .unwrap()
    };
    let status_a = format!("/api/v1/allocs/{alloc_a}/web/status");
    let status_b = format!("/api/v1/allocs/{alloc_b}/web/status");
    let only_a = token(
        JWT_SECRET,
        json!({"namespace": "default", "jobName": "web-job", "allocId": alloc_a, "capabilities": "Status"}),
    );
    assert_eq!(
        call("GET", status_a.clone(), only_a.clone()).await.status,
        200
    );
    let other = call("GET", status_b.clone(), only_a.clone()).await;
    assert_eq!(other.status, 403, "{}", other.text());
    let lacking = call(
        "PUT",
        format!("/api/v1/allocs/{alloc_a}/web/stop"),
        only_a.clone(),
    )
    .await;
    assert_eq!(lacking.status, 403);
    assert!(
        lacking.text().contains("AppPoolLifecycle"),
        "{}",
        lacking.text()
    );
    for (claim, value) in [("namespace", "prod"), ("jobName", "other-job")] {
        let mismatched = token(JWT_SECRET, json!({claim: value, "capabilities": "*"}));
        let response = call("GET", status_a.clone(), mismatched).await;
        assert_eq!(response.status, 403, "{claim}: {}", response.text());
    }
    let lifecycle = token(
        JWT_SECRET,
        json!({"namespace": "*", "jobName": "web-job", "allocId": "*", "capabilities": ["Status", "AppPoolLifecycle"]}),
    );
    let stopped = call(
        "PUT",
        format!("/api/v1/allocs/{alloc_b}/web/stop"),
        lifecycle.clone(),
    )
    .await;
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    assert_eq!(
        json_of(&stopped)["applicationPools"][0]["status"],
        "Stopped"
    );
    assert_eq!(
        http::get(b.addr(), "localhost", "/").await.unwrap().status,
        503
    );
    assert_eq!(
        http::get(a.addr(), "localhost", "/").await.unwrap().status,
        200
    );
    let started = call(
        "GET",
        format!("/api/v1/allocs/{alloc_b}/start"),
        lifecycle.clone(),
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text());
    assert_eq!(
        http::get(b.addr(), "localhost", "/").await.unwrap().text(),
        "site b"
    );
    // Debug needs its capability, and a token scoped to one allocation sees only that one.
    let no_debug = call("GET", "/api/v1/debug".into(), lifecycle).await;
    assert_eq!(no_debug.status, 403);
    let debug_a = token(
        JWT_SECRET,
        json!({"allocId": alloc_a, "capabilities": "Debug"}),
    );
    let debug = json_of(&call("GET", "/api/v1/debug".into(), debug_a).await);
    let seen: Vec<&str> = debug["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["allocId"].as_str().unwrap())
        .collect();
    assert_eq!(seen, vec![alloc_a.as_str()]);
    // No key is configured: a key is not a way in.
    let key = http::request(addr, "GET", &status_a, &[("X-Api-Key", "anything")], b"")
        .await
        .unwrap();
    assert_eq!(key.status, 401);
    fixture.assert_clean(index);
}

/// One GET of the load loop.
#[derive(Debug, Clone)]
struct Sample {
    started: Instant,
    ended: Instant,
    outcome: Result<(u16, String), String>,
}

/// GETs `/` of the site in a loop until told to stop.
fn load_loop(
    site: SocketAddr,
) -> (
    Arc<Mutex<Vec<Sample>>>,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let sink = samples.clone();
    let handle = tokio::spawn(async move {
        while !*stopped.borrow_and_update() {
            let started = Instant::now();
            let outcome = http::get(site, "localhost", "/")
                .await
                .map(|r| (r.status, r.text()))
                .map_err(|e| e.to_string());
            sink.lock().unwrap().push(Sample {
                started,
                ended: Instant::now(),
                outcome,
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (samples, stop, handle)
}

fn site_folder_listing(site: &StaticSite) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(site.alloc.task_dir.join("local"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// Issue 7 item 4: bad archives change nothing while the old app keeps answering; a good one is
// swapped in with one pool restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_swaps_the_app_in_and_bad_archives_change_nothing() {
    let mut fixture = Fixture::new();
    let (index, mut clients, addr) = plugin_with_api(
        &mut fixture,
        &[
            &format!("--management-api-key={KEY}"),
            "--management-api-upload-limit=4M",
        ],
    )
    .await;
    let mut events = clients.events().await;
    let site = fixture.start_static_site(&mut clients, "web", "old").await;
    let upload = format!("/api/v1/allocs/{}/upload", site.alloc.alloc_id);
    let (samples, stop, looping) = load_loop(site.addr());

    let symlink_zip = {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.add_symlink(
            "index.html",
            "/etc/passwd",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.finish().unwrap().into_inner()
    };
    let bomb = {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("index.html", options).unwrap();
        zip.write_all(&vec![b' '; 16 << 20]).unwrap();
        zip.finish().unwrap().into_inner()
    };
    let bad: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "not a zip",
            b"this is not a zip archive".to_vec(),
            400,
            "not a valid zip",
        ),
        (
            "zip-slip",
            zip_of(&[("../evil.html", b"x")]),
            400,
            "zip-slip",
        ),
        (
            "deep zip-slip",
            zip_of(&[("a/../../../evil.html", b"x")]),
            400,
            "zip-slip",
        ),
        (
            "absolute path",
            zip_of(&[("/tmp/evil.html", b"x")]),
            400,
            "absolute",
        ),
        ("symlink", symlink_zip, 400, "symbolic link"),
        ("zip bomb", bomb, 400, "zip bomb"),
        (
            "too large",
            zip_of(&[("big.bin", &noise(5 << 20))]),
            413,
            "limit",
        ),
    ];
    for (label, bytes, status, reason) in bad {
        let response = with_key(addr, "PUT", &upload, &bytes).await;
        assert_eq!(response.status, status, "{label}: {}", response.text());
        assert!(
            json_of(&response)["error"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{label}: {}",
            response.text()
        );
        assert_eq!(
            std::fs::read_to_string(site.alloc.task_dir.join("local/site/index.html")).unwrap(),
            "old",
            "{label}"
        );
        assert_eq!(site_folder_listing(&site), vec!["site"], "{label}");
    }
    assert!(!std::path::Path::new("/tmp/evil.html").exists());
    let unknown = with_key(
        addr,
        "PUT",
        &format!("{upload}?appAlias=/nope"),
        &zip_of(&[("a", b"a")]),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert!(
        json_of(&unknown)["error"]
            .as_str()
            .unwrap()
            .ends_with("(aliases: /)"),
        "{}",
        unknown.text()
    );
    {
        let seen = samples.lock().unwrap();
        assert!(seen.len() > 5, "the load loop barely ran");
        let wrong: Vec<_> = seen
            .iter()
            .filter(|s| s.outcome != Ok((200, "old".to_owned())))
            .collect();
        assert!(
            wrong.is_empty(),
            "the old app failed during bad uploads: {wrong:?}"
        );
    }

    let good = zip_of(&[
        ("index.html", b"new"),
        ("sub/", b""),
        ("sub/page.html", b"page"),
    ]);
    let upload_started = Instant::now();
    let response = with_key(addr, "PUT", &format!("{upload}?appAlias=/"), &good).await;
    let upload_ended = Instant::now();
    assert_eq!(response.status, 200, "{}", response.text());
    let body = json_of(&response);
    assert_eq!(body["files"], 2);
    assert_eq!(body["appPool"], "default");
    assert!(
        eventually(Duration::from_secs(5), || {
            samples
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.started > upload_ended && s.outcome == Ok((200, "new".into())))
        })
        .await
    );
    stop.send_replace(true);
    looping.await.unwrap();
    for sample in samples.lock().unwrap().iter() {
        if sample.ended < upload_started {
            assert_eq!(sample.outcome, Ok((200, "old".into())), "{sample:?}");
        } else if sample.started > upload_ended + Duration::from_millis(20) {
            assert_eq!(sample.outcome, Ok((200, "new".into())), "{sample:?}");
        }
    }
    assert_eq!(
        http::get(site.addr(), "localhost", "/sub/page.html")
            .await
            .unwrap()
            .text(),
        "page"
    );
    expect_event(&mut events, &site.alloc, "replaced via the Management API").await;
    assert!(
        eventually(Duration::from_secs(10), || site_folder_listing(&site)
            == vec!["site"])
        .await,
        "scratch folders left: {:?}",
        site_folder_listing(&site)
    );
    fixture.assert_clean(index);
}

// Issue 7 items 2 and 3: an allocation with two iis tasks answers 409 on alloc-scoped routes;
// task-scoped routes act on one task; pool operations send task events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_in_one_allocation_need_the_task_scoped_routes() {
    let mut fixture = Fixture::new();
    let (index, mut clients, addr) =
        plugin_with_api(&mut fixture, &[&format!("--management-api-key={KEY}")]).await;
    let mut events = clients.events().await;
    let alloc = fixture.allocation("web").await;
    alloc.static_site("site", "web");
    let web_port = free_port();
    fixture
        .start_task(&mut clients, &alloc, STATIC_SITE, &[("http", web_port)])
        .await
        .unwrap();
    // A second task, "api", in the same allocation.
    let api_dir = alloc.alloc_dir.join("api/local/site");
    std::fs::create_dir_all(&api_dir).unwrap();
    std::fs::write(api_dir.join("index.html"), "api").unwrap();
    let api_port = free_port();
    let schema = clients.task_schema().await;
    let mut api_task = alloc.task_config(&schema, STATIC_SITE, &[("http", api_port)]);
    api_task.name = "api".into();
    api_task.id = format!("{}/api/{}", alloc.alloc_id, random_hex(8));
    fixture
        .start_prepared(&mut clients, api_task)
        .await
        .unwrap();
    let id = &alloc.alloc_id;

    for route in [
        "start",
        "stop",
        "recycle",
        "upload",
        "screenshot",
        "procdump",
    ] {
        let method = if route == "upload" { "PUT" } else { "GET" };
        let response = with_key(addr, method, &format!("/api/v1/allocs/{id}/{route}"), b"").await;
        assert_eq!(response.status, 409, "{route}: {}", response.text());
        let message = json_of(&response)["error"].as_str().unwrap().to_owned();
        assert!(
            message.contains("api") && message.contains("web"),
            "{message}"
        );
        assert!(
            message.contains(&format!("/api/v1/allocs/{id}/{{taskName}}/{route}")),
            "{message}"
        );
    }
    let unknown = with_key(addr, "GET", "/api/v1/allocs/no-such-alloc/start", b"").await;
    assert_eq!(unknown.status, 404);
    let no_task = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{id}/nope/status"),
        b"",
    )
    .await;
    assert_eq!(no_task.status, 404);
    assert!(no_task.text().contains("api, web"), "{}", no_task.text());

    let stopped = with_key(addr, "PUT", &format!("/api/v1/allocs/{id}/web/stop"), b"").await;
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    assert_eq!(
        http::get(local(web_port), "localhost", "/")
            .await
            .unwrap()
            .status,
        503
    );
    assert_eq!(
        http::get(local(api_port), "localhost", "/")
            .await
            .unwrap()
            .text(),
        "api"
    );
    expect_event(&mut events, &alloc, "stopped via the Management API").await;
    let bad_pool = with_key(
        addr,
        "PUT",
        &format!("/api/v1/allocs/{id}/web/start?appPoolName=nope"),
        b"",
    )
    .await;
    assert_eq!(bad_pool.status, 404);
    let started = with_key(
        addr,
        "PUT",
        &format!("/api/v1/allocs/{id}/web/start?appPoolName=default"),
        b"",
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text());
    assert_eq!(
        http::get(local(web_port), "localhost", "/")
            .await
            .unwrap()
            .text(),
        "web"
    );
    let recycled = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{id}/web/recycle"),
        b"",
    )
    .await;
    assert_eq!(recycled.status, 200);
    assert_eq!(json_of(&recycled)["applicationPools"][0]["recycles"], 1);
    expect_event(&mut events, &alloc, "recycled via the Management API").await;
    // Dumps need the operator's opt-in, which this plugin lacks.
    let dump = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{id}/web/procdump"),
        b"",
    )
    .await;
    assert_eq!(dump.status, 403);
    assert!(
        dump.text().contains("--procdump-accept-eula=true")
            && dump.text().contains("procdump { accept_eula = true }"),
        "{}",
        dump.text()
    );

    fixture.assert_clean(index);
}

// Issue 7 item 3: the fs routes, and confinement to the task folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_routes_work_inside_the_task_folder_and_nowhere_else() {
    let mut fixture = Fixture::new();
    let (index, mut clients, addr) =
        plugin_with_api(&mut fixture, &[&format!("--management-api-key={KEY}")]).await;
    let mut events = clients.events().await;
    let site = fixture
        .start_static_site(&mut clients, "web", "hello")
        .await;
    let fs = format!("/api/v1/allocs/{}/web/fs", site.alloc.alloc_id);
    let task_dir = site.alloc.task_dir.clone();

    let put = with_key(addr, "PUT", &format!("{fs}/local/site/new.txt"), b"abc").await;
    assert_eq!(put.status, 200, "{}", put.text());
    expect_event(&mut events, &site.alloc, "pools restarted").await;
    let got = with_key(addr, "GET", &format!("{fs}/local/site/new.txt"), b"").await;
    assert_eq!((got.status, got.text()), (200, "abc".to_owned()));
    assert_eq!(got.header("content-length"), Some("3"));
    let patched = with_key(
        addr,
        "PATCH",
        &format!("{fs}/local/site/index.html"),
        b"patched",
    )
    .await;
    assert_eq!(patched.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(task_dir.join("local/site/index.html")).unwrap() == "patched"
        })
        .await
    );
    assert_eq!(
        http::get(site.addr(), "localhost", "/")
            .await
            .unwrap()
            .text(),
        "patched"
    );
    let archive = zip_of(&[("a.txt", b"a"), ("d/", b""), ("d/b.txt", b"b")]);
    let extracted = http::request(
        addr,
        "PUT",
        &format!("{fs}/local/extra"),
        &[("X-Api-Key", KEY), ("Content-Type", "application/zip")],
        &archive,
    )
    .await
    .unwrap();
    assert_eq!(extracted.status, 200, "{}", extracted.text());
    assert_eq!(
        std::fs::read(task_dir.join("local/extra/d/b.txt")).unwrap(),
        b"b"
    );
    // `clean` empties the file's folder first; `/*` without a zip names no file.
    let cleaned_put = with_key(
        addr,
        "PUT",
        &format!("{fs}/local/extra/d/c.txt?clean=true"),
        b"c",
    )
    .await;
    assert_eq!(cleaned_put.status, 200, "{}", cleaned_put.text());
    assert!(!task_dir.join("local/extra/d/b.txt").exists());
    assert_eq!(
        std::fs::read(task_dir.join("local/extra/d/c.txt")).unwrap(),
        b"c"
    );
    let star_file = with_key(addr, "PUT", &format!("{fs}/local/extra/*"), b"x").await;
    assert_eq!(star_file.status, 400, "{}", star_file.text());
    // A folder downloads as a zip.
    let folder = with_key(addr, "GET", &format!("{fs}/local"), b"").await;
    assert_eq!(folder.status, 200);
    assert_eq!(folder.header("content-type"), Some("application/zip"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(folder.body.clone())).unwrap();
    let mut names: Vec<String> = (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().name().unwrap().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"extra/d/c.txt".to_owned()), "{names:?}");
    assert!(names.contains(&"site/index.html".to_owned()), "{names:?}");
    // `/*` empties a folder; without it the folder goes.
    let cleaned = with_key(addr, "DELETE", &format!("{fs}/local/extra/*"), b"").await;
    assert_eq!(cleaned.status, 200, "{}", cleaned.text());
    assert_eq!(
        std::fs::read_dir(task_dir.join("local/extra"))
            .unwrap()
            .count(),
        0
    );
    let removed = with_key(addr, "DELETE", &format!("{fs}/local/extra"), b"").await;
    assert_eq!(removed.status, 200);
    assert!(!task_dir.join("local/extra").exists());
    let root = with_key(addr, "DELETE", &format!("{fs}/."), b"").await;
    assert_eq!(root.status, 400);
    assert!(task_dir.exists());
    let missing = with_key(addr, "GET", &format!("{fs}/local/none.txt"), b"").await;
    assert_eq!(missing.status, 404);

    // Confinement.
    std::os::unix::fs::symlink("/etc", task_dir.join("local/out")).unwrap();
    std::os::unix::fs::symlink("site", task_dir.join("local/in")).unwrap();
    let inside = with_key(addr, "GET", &format!("{fs}/local/in/index.html"), b"").await;
    assert_eq!(inside.status, 200);
    let escapes: Vec<(&str, &str, u16)> = vec![
        ("GET", "../../../../etc/passwd", 400),
        ("GET", "local/../../../etc/passwd", 400),
        ("GET", "local/%2e%2e/%2e%2e/%2e%2e/etc/passwd", 400),
        ("GET", "local%2F..%2F..%2Fsecrets", 400),
        ("GET", "local%5C..%5Csecrets", 400),
        ("GET", "%2Fetc%2Fpasswd", 400),
        ("GET", "/etc/passwd", 400),
        ("GET", "local/out/passwd", 403),
        ("PUT", "local/out/nomad-iis-evil", 403),
        ("DELETE", "local/out/*", 403),
        ("PUT", "../evil.txt", 400),
    ];
    for (method, path, status) in escapes {
        let response = with_key(addr, method, &format!("{fs}/{path}"), b"evil").await;
        assert_eq!(
            response.status,
            status,
            "{method} {path}: {}",
            response.text()
        );
    }
    assert!(!std::path::Path::new("/etc/nomad-iis-evil").exists());
    assert!(!site.alloc.alloc_dir.join("evil.txt").exists());
    fixture.assert_clean(index);
}

/// Local addresses (`ip:port` in /proc/net/tcp's hex form decoded) listening on `port`.
fn listeners_on(port: u16) -> Vec<std::net::Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (ip, p) = fields.get(1)?.split_once(':')?;
            // State 0A is LISTEN.
            if fields.get(3) != Some(&"0A") || u16::from_str_radix(p, 16).ok()? != port {
                return None;
            }
            let raw = u32::from_str_radix(ip, 16).ok()?;
            Some(std::net::Ipv4Addr::from(raw.swap_bytes()))
        })
        .collect()
}

// Issue 7 item 1: with neither key nor secret the API is open, on loopback only, with a
// warning; TLS from PEM files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_api_listens_on_loopback_only_and_tls_works() {
    let mut fixture = Fixture::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_file = fixture.temp.path().join("api.crt");
    let key_file = fixture.temp.path().join("api.key");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let (index, mut clients, addr) = plugin_with_api(
        &mut fixture,
        &[
            &format!("--management-api-tls-cert={}", cert_file.display()),
            &format!("--management-api-tls-key={}", key_file.display()),
        ],
    )
    .await;
    assert_eq!(
        listeners_on(addr.port()),
        vec![std::net::Ipv4Addr::LOCALHOST]
    );
    let site = fixture
        .start_static_site(&mut clients, "web", "hello")
        .await;
    let (response, _) = http::get_tls(
        addr,
        "localhost",
        &format!("/api/v1/allocs/{}/web/status", site.alloc.alloc_id),
        http::Trust::Roots(vec![cert.cert.der().clone()]),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        json_of(&response)["applicationPools"][0]["status"],
        "Started"
    );
    // Plain HTTP on a TLS port gets no answer.
    assert!(http::get(addr, "localhost", "/api/v1/debug").await.is_err());
    let stderr = fixture.plugin(index).stderr.snapshot().join("\n");
    assert!(stderr.contains("no API key and no JWT secret"), "{stderr}");
    fixture.assert_clean(index);
}

/// A `nomad_iis run`, killed with its hosts on drop.
struct StandaloneRun {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for StandaloneRun {
    fn drop(&mut self) {
        // Hosts die with `run` (parent-death signal); its screenshot browser is in its process
        // group.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Issue 7 item 1: `nomad_iis run --management-api-port` serves the API over its tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_run_serves_the_api() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("site")).unwrap();
    std::fs::write(dir.path().join("site/index.html"), "standalone").unwrap();
    let config = dir.path().join("site.hcl");
    std::fs::write(
        &config,
        "application { path = \"site\" }\nbinding {\n  type = \"http\"\n  port = \"http\"\n}\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nomad_iis"))
        .arg("run")
        .arg(&config)
        .arg("--runtime-dir")
        .arg(dir.path().join("rt"))
        .arg(format!("--management-api-port={port}"))
        .arg("--management-api-key-env=TEST_API_KEY")
        .env("TEST_API_KEY", KEY)
        .env("TMPDIR", dir.path())
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let run = StandaloneRun { child, lines };
    let mut banner = Vec::new();
    while let Ok(line) = run.lines.recv_timeout(Duration::from_secs(60)) {
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        banner.push(line);
    }
    let alloc = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("alloc "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no alloc line in {banner:?}"))
        .to_owned();
    assert!(
        banner.iter().any(|l| l.contains("Management API: http://")),
        "{banner:?}"
    );
    let addr = local(port);
    let status = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{alloc}/site/status"),
        b"",
    )
    .await;
    assert_eq!(status.status, 200, "{}", status.text());
    assert_eq!(json_of(&status)["jobName"], "site");
    let denied = http::request(addr, "GET", "/api/v1/debug", &[], b"")
        .await
        .unwrap();
    assert_eq!(denied.status, 401);
    let stopped = with_key(addr, "GET", &format!("/api/v1/allocs/{alloc}/stop"), b"").await;
    assert_eq!(stopped.status, 200, "{}", stopped.text());
    assert!(
        run.lines
            .recv_timeout(Duration::from_secs(10))
            .is_ok_and(|l| l.contains("stopped via the Management API")),
        "no event line"
    );
    let started = with_key(addr, "GET", &format!("/api/v1/allocs/{alloc}/start"), b"").await;
    assert_eq!(started.status, 200, "{}", started.text());
    // Screenshots work in standalone mode too, and the browser goes with the run.
    let shot = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{alloc}/screenshot"),
        b"",
    )
    .await;
    assert_eq!(shot.status, 200, "{}", shot.text());
    let image = Image::decode(&shot.body);
    assert_eq!((image.width, image.height), (1920, 1080));
    let group = run.child.id();
    assert!(
        group_members(group).len() > 1,
        "the browser runs in the run's group"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(group as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || group_members(group).is_empty()).await,
        "processes left in the run's group: {:?}",
        group_members(group)
    );
    assert_eq!(
        entries_starting(dir.path(), "nomad-iis-chromium-"),
        Vec::<String>::new()
    );
}

// === Issue 7 items 5 and 6: screenshots and process dumps through the real engines ===

/// Processes (zombies excepted) whose process group is `pgid`: the plugin leads its own group,
/// and the screenshot browser it launches (with the browser's helpers) joins it.
fn group_members(pgid: u32) -> Vec<u32> {
    harness::process_ids()
        .into_iter()
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name (in parentheses): state, ppid, pgrp.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

/// Kills what is left in a plugin's process group (its browser) when a test ends, even by a
/// panic; the fixture itself only kills the plugin.
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !group_members(self.0).is_empty() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Entries of `dir` whose names start with `prefix`.
fn entries_starting(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Width, height and RGB(A) pixels of a PNG.
struct Image {
    width: u32,
    height: u32,
    channels: usize,
    pixels: Vec<u8>,
}

impl Image {
    fn decode(bytes: &[u8]) -> Self {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().expect("a PNG header");
        let mut pixels = vec![0; reader.output_buffer_size().expect("a PNG size")];
        let info = reader.next_frame(&mut pixels).expect("a PNG frame");
        pixels.truncate(info.buffer_size());
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected PNG colour type {other:?}"),
        };
        Self {
            width: info.width,
            height: info.height,
            channels,
            pixels,
        }
    }

    fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
        let at = (y as usize * self.width as usize + x as usize) * self.channels;
        [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
    }
}

/// A page of one colour, `height` CSS pixels tall.
fn coloured_page(colour: [u8; 3], height: u32) -> String {
    let [r, g, b] = colour;
    format!(
        "<!doctype html><html><head><style>html,body{{margin:0;background:rgb({r},{g},{b})}}</style></head>\
         <body><div style=\"height:{height}px\"></div></body></html>"
    )
}

/// The file name in a `Content-Disposition: attachment; filename="…"` header.
fn attachment_name(response: &Response) -> String {
    let header = response
        .header("content-disposition")
        .unwrap_or_else(|| panic!("no Content-Disposition: {:?}", response.headers));
    header
        .strip_prefix("attachment; filename=\"")
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("unexpected Content-Disposition {header:?}"))
        .to_owned()
}

/// Whether `name` is `{prefix}_{alloc}_{yyyy-MM-dd-HH-mm-ss}.{ext}`, the original's file names.
fn named_like_the_original(name: &str, prefix: &str, alloc: &str, ext: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(&format!("{prefix}_{alloc}_"))
        .and_then(|rest| rest.strip_suffix(&format!(".{ext}")))
    else {
        return false;
    };
    stamp.len() == 19
        && stamp.char_indices().all(|(i, c)| match i {
            4 | 7 | 10 | 13 | 16 => c == '-',
            _ => c.is_ascii_digit(),
        })
}

const SKY: [u8; 3] = [30, 144, 255];
const ORANGE: [u8; 3] = [255, 140, 0];
/// Taller than the viewport, so a full-page shot is taller than 1080.
const TALL: u32 = 2400;

// A real static site with a host name binding, photographed through the API by the system
// Chromium; the browser goes when the plugin stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshot_of_a_static_site_is_a_full_page_png_of_its_colour() {
    let mut fixture = Fixture::new();
    let (index, mut clients, addr) =
        plugin_with_api(&mut fixture, &[&format!("--management-api-key={KEY}")]).await;
    let plugin_pid = fixture.plugin(index).pid;
    let _group = GroupGuard(plugin_pid);
    let alloc = fixture.allocation("web").await;
    let site = alloc.static_site("site", &coloured_page(SKY, TALL));
    std::fs::write(site.join("other.html"), coloured_page(ORANGE, 100)).unwrap();
    let port = harness::free_port();
    let config = r#"
application { path = "local/site" }
binding {
  type = "http"
  port = "http"
  hostname = "shop.test"
}
"#;
    fixture
        .start_task(&mut clients, &alloc, config, &[("http", port)])
        .await
        .unwrap_or_else(|e| panic!("StartTask: {e:?}"));
    let id = &alloc.alloc_id;

    let shot = with_key(addr, "GET", &format!("/api/v1/allocs/{id}/screenshot"), b"").await;
    assert_eq!(shot.status, 200, "{}", shot.text());
    assert_eq!(shot.header("content-type"), Some("image/png"));
    let name = attachment_name(&shot);
    assert!(
        named_like_the_original(&name, "screenshot", id, "png"),
        "{name}"
    );
    let image = Image::decode(&shot.body);
    assert_eq!(image.width, 1920);
    assert_eq!(image.height, TALL, "the whole page, not the viewport");
    assert_eq!(image.rgb(10, 10), SKY);
    assert_eq!(image.rgb(1900, TALL - 10), SKY);

    // Another page of the site, through the task-scoped route; the browser is reused.
    let browsers = group_members(plugin_pid);
    assert!(browsers.len() > 1, "the browser runs in the plugin's group");
    let other = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{id}/web/screenshot?path=/other.html"),
        b"",
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.text());
    let image = Image::decode(&other.body);
    assert_eq!((image.width, image.height), (1920, 1080));
    assert_eq!(image.rgb(960, 540), ORANGE);
    let browser = browsers
        .iter()
        .copied()
        .find(|pid| *pid != plugin_pid)
        .unwrap();
    assert!(
        group_members(plugin_pid).contains(&browser),
        "the second shot used the same browser"
    );
    let bad = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{id}/screenshot?path=no-slash"),
        b"",
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    // This plugin was not given the dump opt-in.
    let dump = with_key(addr, "GET", &format!("/api/v1/allocs/{id}/procdump"), b"").await;
    assert_eq!(dump.status, 403, "{}", dump.text());
    assert!(
        dump.text().contains("--procdump-accept-eula=true"),
        "{}",
        dump.text()
    );

    // The plugin stops as Nomad stops it (GRPCController.Shutdown): no browser process or
    // profile folder outlives it.
    let _ = clients
        .controller
        .shutdown(nomad_plugin::proto::goplugin::Empty {})
        .await;
    assert!(
        fixture
            .plugin(index)
            .wait_exit(Duration::from_secs(10))
            .is_some(),
        "the plugin did not stop"
    );
    assert!(
        eventually(Duration::from_secs(5), || group_members(plugin_pid)
            .is_empty())
        .await,
        "processes left in the plugin's group: {:?}",
        group_members(plugin_pid)
    );
    assert_eq!(
        entries_starting(fixture.temp.path(), "nomad-iis-chromium-"),
        Vec::<String>::new(),
        "the browser's profile folder is removed"
    );
    assert!(
        fixture
            .plugin(index)
            .stderr
            .snapshot()
            .iter()
            .any(|l| l.contains("screenshot browser closed")),
        "the plugin closed its browser itself"
    );
    fixture.assert_clean(index);
}

// Nomad kills a plugin outright when it does not stop in time. Its browser must not outlive it,
// and the next plugin removes the profile folder the killed one could not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_plugin_takes_its_browser_along_and_the_next_one_removes_its_folder() {
    let mut fixture = Fixture::new();
    let (first, mut clients, addr) =
        plugin_with_api(&mut fixture, &[&format!("--management-api-key={KEY}")]).await;
    let first_pid = fixture.plugin(first).pid;
    let _first_group = GroupGuard(first_pid);
    let site = fixture
        .start_static_site(&mut clients, "web", &coloured_page(SKY, 100))
        .await;
    let path = format!("/api/v1/allocs/{}/screenshot", site.alloc.alloc_id);
    let shot = with_key(addr, "GET", &path, b"").await;
    assert_eq!(shot.status, 200, "{}", shot.text());
    let browser: Vec<u32> = group_members(first_pid)
        .into_iter()
        .filter(|pid| *pid != first_pid)
        .collect();
    assert!(
        !browser.is_empty(),
        "the browser runs in the plugin's group"
    );
    let folders = entries_starting(fixture.temp.path(), "nomad-iis-chromium-");
    assert_eq!(folders.len(), 1, "{folders:?}");

    fixture.plugin(first).kill();
    assert!(
        eventually(Duration::from_secs(10), || browser
            .iter()
            .all(|pid| !harness::alive(*pid)))
        .await,
        "browser processes outlived the killed plugin: {:?}",
        browser
            .iter()
            .filter(|pid| harness::alive(**pid))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        entries_starting(fixture.temp.path(), "nomad-iis-chromium-"),
        folders,
        "a killed plugin cannot remove its folder itself"
    );

    // The next plugin's first shot (of a task of its own) removes the abandoned folder.
    let (second, mut clients, addr) =
        plugin_with_api(&mut fixture, &[&format!("--management-api-key={KEY}")]).await;
    let _second_group = GroupGuard(fixture.plugin(second).pid);
    let site = fixture
        .start_static_site(&mut clients, "web", &coloured_page(ORANGE, 100))
        .await;
    let path = format!("/api/v1/allocs/{}/screenshot", site.alloc.alloc_id);
    let shot = with_key(addr, "GET", &path, b"").await;
    assert_eq!(shot.status, 200, "{}", shot.text());
    assert_eq!(Image::decode(&shot.body).rgb(10, 10), ORANGE);
    let now = entries_starting(fixture.temp.path(), "nomad-iis-chromium-");
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, folders, "the killed plugin's folder is removed");
    fixture.assert_clean(second);
}

/// Python's own HTTP server through HttpPlatformHandler (as in tests/workers.rs), holding about
/// `mib` MiB so the dump has some weight.
fn python_worker_config(mib: u32) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.webServer>
    <handlers>
      <add name="httpPlatformHandler" path="*" verb="*" modules="httpPlatformHandler" resourceType="Unspecified" />
    </handlers>
    <httpPlatform processPath="python3"
                  arguments="-u -c &quot;import sys, http.server; ballast = bytearray(b'x' * ({mib} &lt;&lt; 20)); http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]), bind='127.0.0.1')&quot; %HTTP_PLATFORM_PORT%"
                  startupTimeLimit="20" />
  </system.webServer>
</configuration>
"#
    )
}

/// The pids of the task's workers, from the API's status.
async fn api_worker_pids(addr: SocketAddr, alloc: &str) -> Vec<u64> {
    let status = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{alloc}/web/status"),
        b"",
    )
    .await;
    assert_eq!(status.status, 200, "{}", status.text());
    json_of(&status)["applicationPools"][0]["workerPids"]
        .as_array()
        .map(|pids| pids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

// Both dump kinds of a worker process, parsed back; the worker answers on and nothing is left
// in any temp folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procdump_of_a_worker_gives_a_minidump_and_an_elf_core() {
    use minidump::{Minidump, MinidumpLinuxProcStatus, MinidumpModuleList, MinidumpThreadList};
    let mut fixture = Fixture::new();
    let (index, mut clients, addr) = plugin_with_api(
        &mut fixture,
        &[
            &format!("--management-api-key={KEY}"),
            "--procdump-accept-eula=true",
        ],
    )
    .await;
    let alloc = fixture.allocation("web").await;
    let site = alloc.static_site("site", "served by python");
    std::fs::write(site.join("web.config"), python_worker_config(8)).unwrap();
    let port = harness::free_port();
    let task = fixture
        .start_task(&mut clients, &alloc, STATIC_SITE, &[("http", port)])
        .await
        .unwrap_or_else(|e| panic!("StartTask: {e:?}"));
    let id = alloc.alloc_id.clone();
    // The first request starts the worker.
    let first = http::get(local(port), "localhost", "/index.html")
        .await
        .unwrap();
    assert_eq!(
        (first.status, first.text()),
        (200, "served by python".to_owned())
    );
    let pids = api_worker_pids(addr, &id).await;
    assert_eq!(pids.len(), 1, "{pids:?}");
    let worker = pids[0] as u32;
    assert_ne!(worker, task.host_pid());
    let dump_prefix = format!("nomad-iis-dump-{worker}-");
    let leftovers = |fixture: &Fixture| {
        let mut found = entries_starting(fixture.temp.path(), &dump_prefix);
        found.extend(entries_starting(&std::env::temp_dir(), &dump_prefix));
        found.extend(entries_starting(std::path::Path::new("/tmp"), &dump_prefix));
        found
    };

    let mini = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{id}/procdump?type=mini"),
        b"",
    )
    .await;
    assert_eq!(mini.status, 200, "{}", mini.text());
    assert_eq!(
        mini.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        mini.header("content-length"),
        Some(mini.body.len().to_string().as_str())
    );
    let name = attachment_name(&mini);
    assert!(
        named_like_the_original(&name, "procdump", &id, "dmp"),
        "{name}"
    );
    let minidump = Minidump::read(mini.body.clone()).expect("a minidump");
    let status = minidump
        .get_stream::<MinidumpLinuxProcStatus>()
        .expect("the process status stream");
    let status = String::from_utf8_lossy(&status.raw_bytes()).into_owned();
    assert!(
        status.lines().any(|l| l == format!("Pid:\t{worker}")),
        "the minidump is of the worker {worker}: {status}"
    );
    let threads: std::collections::BTreeSet<u32> = minidump
        .get_stream::<MinidumpThreadList>()
        .expect("a thread list")
        .threads
        .iter()
        .map(|t| t.raw.thread_id)
        .collect();
    assert!(threads.contains(&worker), "{threads:?}");
    let modules = minidump
        .get_stream::<MinidumpModuleList>()
        .expect("a module list");
    assert!(
        modules
            .iter()
            .any(|m| minidump::Module::code_file(m).contains("python")),
        "python is among the modules"
    );
    assert!(leftovers(&fixture).is_empty(), "{:?}", leftovers(&fixture));

    // The full dump is the default kind; asked by pool on the task-scoped route.
    let full = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{id}/web/procdump?appPoolName=default"),
        b"",
    )
    .await;
    assert_eq!(full.status, 200, "{}", full.text());
    assert_eq!(
        full.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );
    let elf = goblin::elf::Elf::parse(&full.body).expect("an ELF file");
    assert_eq!(elf.header.e_type, goblin::elf::header::ET_CORE);
    let mut prstatus_pids = std::collections::BTreeSet::new();
    for note in elf.iter_note_headers(&full.body).expect("notes") {
        let note = note.expect("a note");
        if note.n_type == goblin::elf::note::NT_PRSTATUS {
            // struct elf_prstatus on x86_64: pr_pid at byte 32 (after siginfo, cursig, sigpend
            // and sighold).
            prstatus_pids.insert(u32::from_le_bytes(note.desc[32..36].try_into().unwrap()));
        }
    }
    assert!(prstatus_pids.contains(&worker), "{prstatus_pids:?}");
    assert!(
        full.body.len() > 8 << 20,
        "the core holds the worker's 8 MiB: {} bytes",
        full.body.len()
    );
    assert!(leftovers(&fixture).is_empty(), "{:?}", leftovers(&fixture));

    // The worker runs on, the same process, untraced.
    let after = http::get(local(port), "localhost", "/index.html")
        .await
        .unwrap();
    assert_eq!(after.status, 200);
    assert_eq!(api_worker_pids(addr, &id).await, vec![u64::from(worker)]);
    let tracer = std::fs::read_to_string(format!("/proc/{worker}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:").map(|v| v.trim().to_owned()));
    assert_eq!(tracer.as_deref(), Some("0"));

    let bad = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{id}/procdump?type=huge"),
        b"",
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    clients.stop_and_destroy(task.id()).await;
    fixture.assert_clean(index);
}

// A static pool has no worker: its dump is of the site host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procdump_of_a_static_pool_is_of_the_site_host() {
    use minidump::{Minidump, MinidumpLinuxProcStatus};
    let mut fixture = Fixture::new();
    let (index, mut clients, addr) = plugin_with_api(
        &mut fixture,
        &[
            &format!("--management-api-key={KEY}"),
            "--procdump-accept-eula=true",
        ],
    )
    .await;
    let site = fixture
        .start_static_site(&mut clients, "web", "hello")
        .await;
    let host = site.task.host_pid();
    let mini = with_key(
        addr,
        "GET",
        &format!("/api/v1/allocs/{}/procdump?type=mini", site.alloc.alloc_id),
        b"",
    )
    .await;
    assert_eq!(mini.status, 200, "{}", mini.text());
    let minidump = Minidump::read(mini.body.clone()).expect("a minidump");
    let status = minidump
        .get_stream::<MinidumpLinuxProcStatus>()
        .expect("the process status stream");
    let status = String::from_utf8_lossy(&status.raw_bytes()).into_owned();
    assert!(
        status.lines().any(|l| l == format!("Pid:\t{host}")),
        "the minidump is of the host {host}: {status}"
    );
    let answer = http::get(site.addr(), "localhost", "/").await.unwrap();
    assert_eq!((answer.status, answer.text()), (200, "hello".to_owned()));
    fixture.assert_clean(index);
}
