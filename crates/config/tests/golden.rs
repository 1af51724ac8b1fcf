//! Golden tests: job `config {}` bodies (the original's samples plus configs covering every
//! block and option) encoded by the real go-cty (`tools/ctyenc`) into committed `.msgpack`
//! files.
//!
//! - the committed spec JSON is what our specs produce now (so a spec change forces
//!   `tools/ctyenc/regen.sh`);
//! - the Go tool still produces the committed bytes from the committed spec;
//! - every committed file decodes into the expected `TaskConfig` / `DriverConfig`;
//! - our encoder writes the same bytes for the decoded value, and our hcldec over the HCL
//!   body (parsed with hcl-rs) produces the same bytes too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use config::{
    CertificateConfig, DriverConfig, Identity, ManagedPipelineMode, ManagedRuntimeVersion, PortRef,
    ProcdumpConfig, ProcessConfig, ResolveContext, TaskConfig,
};
use control::{BindingKind, StartMode, UnavailableResponse};
use nomad_plugin::cty::{self, Reader};
use nomad_plugin::hclspec::{decode_json, output_type, to_json};
use nomad_plugin::proto::hclspec::Spec;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every golden body: (name without extension, spec kind).
fn golden_cases() -> Vec<(String, &'static str)> {
    let mut cases: Vec<(String, &'static str)> = std::fs::read_dir(golden_dir())
        .expect("golden folder is readable")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let base = name.strip_suffix(".hcl")?.to_owned();
            let kind = if base.starts_with("task_") {
                "task"
            } else if base.starts_with("driver_") {
                "driver"
            } else {
                return None;
            };
            Some((base, kind))
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "golden bodies are missing: {cases:?}");
    cases
}

fn spec_of(kind: &str) -> Spec {
    match kind {
        "task" => TaskConfig::spec(),
        _ => DriverConfig::spec(),
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run tools/ctyenc/regen.sh to generate the golden files",
            path.display()
        )
    })
}

fn golden_bytes(name: &str) -> Vec<u8> {
    read(&golden_dir().join(format!("{name}.msgpack")))
}

fn task(name: &str) -> TaskConfig {
    TaskConfig::from_msgpack(&golden_bytes(name))
        .unwrap_or_else(|e| panic!("{name}.msgpack does not decode: {e}"))
}

fn driver(name: &str) -> DriverConfig {
    DriverConfig::from_msgpack(&golden_bytes(name))
        .unwrap_or_else(|e| panic!("{name}.msgpack does not decode: {e}"))
}

/// The Go tool, built into a temporary folder that is removed on drop, even when the test
/// fails.
struct GoTool {
    dir: tempfile::TempDir,
}

impl GoTool {
    fn build() -> GoTool {
        let missing = "the golden tests need Go and go-cty: install them with \
             `apt-get install -y golang-go golang-github-zclconf-go-cty-dev \
             golang-github-hashicorp-hcl-v2-dev` (see tools/ctyenc/README.md)";
        match Command::new("go").arg("version").output() {
            Ok(out) if out.status.success() => {}
            _ => panic!("`go` is not on PATH; {missing}"),
        }
        assert!(
            Path::new("/usr/share/gocode/src/github.com/zclconf/go-cty").is_dir(),
            "go-cty is not installed under /usr/share/gocode; {missing}"
        );
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut build = Command::new("go");
        build
            .current_dir(repo_root().join("tools/ctyenc"))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .args(["build", "-o"])
            .arg(dir.path().join("ctyenc"));
        if std::env::var_os("HOME").is_none() && std::env::var_os("GOCACHE").is_none() {
            build.env("GOCACHE", dir.path().join("gocache"));
        }
        let out = build.output().expect("go build runs");
        assert!(
            out.status.success(),
            "building tools/ctyenc failed ({missing}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        GoTool { dir }
    }

    fn encode(&self, spec: &Path, body: &Path, vars: Option<&Path>) -> Vec<u8> {
        let out_file = self.dir.path().join("out.msgpack");
        let mut cmd = Command::new(self.dir.path().join("ctyenc"));
        cmd.arg("-spec").arg(spec).arg("-config").arg(body);
        if let Some(vars) = vars {
            cmd.arg("-vars").arg(vars);
        }
        cmd.arg("-out").arg(&out_file);
        let out = cmd.output().expect("ctyenc runs");
        assert!(
            out.status.success(),
            "ctyenc failed for {}:\n{}",
            body.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        read(&out_file)
    }
}

fn vars_file(name: &str) -> Option<PathBuf> {
    let path = golden_dir().join(format!("{name}.vars.json"));
    path.is_file().then_some(path)
}

#[test]
fn committed_spec_json_is_current() {
    for kind in ["task", "driver"] {
        let path = golden_dir().join(format!("{kind}.spec.json"));
        let committed = String::from_utf8(read(&path)).expect("UTF-8");
        let current = serde_json::to_string_pretty(&to_json(&spec_of(kind))).expect("JSON") + "\n";
        assert!(
            committed == current,
            "{} is out of date: the {kind} spec changed; run tools/ctyenc/regen.sh",
            path.display()
        );
    }
}

#[test]
fn go_tool_reproduces_committed_bytes() {
    let tool = GoTool::build();
    for (name, kind) in golden_cases() {
        let spec = golden_dir().join(format!("{kind}.spec.json"));
        let body = golden_dir().join(format!("{name}.hcl"));
        let fresh = tool.encode(&spec, &body, vars_file(&name).as_deref());
        assert!(
            fresh == golden_bytes(&name),
            "{name}: go-cty's bytes differ from the committed {name}.msgpack; \
             run tools/ctyenc/regen.sh and review the change"
        );
    }
}

#[test]
fn rust_encoder_matches_go_for_every_golden() {
    for (name, kind) in golden_cases() {
        let bytes = golden_bytes(&name);
        let ty = output_type(&spec_of(kind)).expect("spec has a type");
        let raw = cty::decode(&bytes).expect("golden decodes");
        let value = Reader::new(&raw)
            .to_value(&ty)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cty::encode(&value), bytes, "{name}: encode");
        assert_eq!(
            cty::marshal(&value, &ty).expect("value fits the spec type"),
            bytes,
            "{name}: marshal against the spec type"
        );
    }
}

/// hcl-rs gives a repeated block as a list and a single one as an object; both are block
/// shapes `decode_json` accepts, as Nomad's job parser output is.
fn hcl_body_as_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(golden_dir().join(format!("{name}.hcl"))).expect("body");
    let mut ctx = hcl::eval::Context::new();
    if let Some(vars) = vars_file(name) {
        let vars: BTreeMap<String, String> =
            serde_json::from_slice(&read(&vars)).expect("vars JSON");
        for (key, value) in vars {
            ctx.declare_var(key, value);
        }
    }
    hcl::eval::from_str(&text, &ctx).unwrap_or_else(|e| panic!("{name}.hcl: {e}"))
}

#[test]
fn rust_hcldec_matches_go_for_every_golden() {
    for (name, kind) in golden_cases() {
        let body = hcl_body_as_json(&name);
        let value = decode_json(&spec_of(kind), &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            cty::encode(&value) == golden_bytes(&name),
            "{name}: our hcldec + encoder differ from go-cty"
        );
    }
}

#[test]
fn every_golden_validates_or_fails_as_expected() {
    let permissive = DriverConfig {
        allowed_target_websites: vec!["*".into()],
        allowed_apppool_identities: Identity::ALL.iter().map(|(_, i)| *i).collect(),
        allowed_apppool_users: vec!["*".into()],
        ..DriverConfig::default()
    };
    for (name, kind) in golden_cases() {
        if kind != "task" {
            continue;
        }
        let result = task(&name).validate(&permissive);
        if name == "task_https_thumbprint" {
            assert_eq!(
                result.map_err(|e| e.to_string()),
                Err(
                    "binding[0].certificate.thumbprint: there is no Windows certificate store \
                     on Linux; use pfx_file, cert_file + key_file or use_self_signed"
                        .to_owned()
                )
            );
        } else {
            assert!(result.is_ok(), "{name}: {result:?}");
        }
    }
}

#[test]
fn sample_app_decodes() {
    let config = task("task_sample_app");
    assert_eq!(config.applications.len(), 1);
    assert_eq!(config.applications[0].path, "local");
    assert_eq!(config.applications[0].alias, "/");
    assert_eq!(config.applications[0].application_pool, "default");
    assert_eq!(config.bindings.len(), 1);
    assert_eq!(config.bindings[0].kind, BindingKind::Http);
    assert_eq!(config.bindings[0].port, PortRef::Label("httplabel".into()));
    assert!(config.permit_iusr);
    assert!(config.application_pools.is_empty());
    let notices = config.validate(&DriverConfig::default()).expect("valid");
    assert!(notices.is_empty(), "{notices:?}");
}

#[test]
fn docs_example_decodes() {
    let config = task("task_docs_example");
    assert_eq!(config.application_pools.len(), 1);
    assert_eq!(config.application_pools[0].name, "default");
    assert_eq!(
        config.application_pools[0].identity,
        Identity::ApplicationPoolIdentity
    );
}

#[test]
fn https_examples_decode() {
    let cert = |name: &str| {
        task(name).bindings[0]
            .certificate
            .clone()
            .expect("certificate block")
    };
    assert_eq!(
        cert("task_https_thumbprint").thumbprint.as_deref(),
        Some("005ce633b71c48f2345b533fd8e259f154e45ed6")
    );
    assert_eq!(
        cert("task_https_pfx"),
        CertificateConfig {
            pfx_file: Some("/var/nomad/alloc/5b3a9e0c/app/secrets/mycertificate.pfx".into()),
            password: Some("super#secret".into()),
            ..CertificateConfig::default()
        }
    );
    let pem = cert("task_https_pem");
    assert_eq!(
        pem.cert_file.as_deref(),
        Some("/var/nomad/alloc/5b3a9e0c/app/secrets/certificate.pem")
    );
    assert_eq!(pem.key_file, pem.cert_file);
    assert!(cert("task_https_self_signed").use_self_signed);
    assert_eq!(task("task_https_pfx").bindings[0].kind, BindingKind::Https);
}

#[test]
fn multi_pool_example_decodes() {
    let config = task("task_multi_pool");
    let pools: Vec<(&str, Identity, Option<StartMode>)> = config
        .application_pools
        .iter()
        .map(|p| (p.name.as_str(), p.identity, p.start_mode))
        .collect();
    assert_eq!(
        pools,
        vec![
            (
                "default",
                Identity::ApplicationPoolIdentity,
                Some(StartMode::AlwaysRunning)
            ),
            (
                "appA",
                Identity::NetworkService,
                Some(StartMode::AlwaysRunning)
            ),
            (
                "appB",
                Identity::SpecificUser,
                Some(StartMode::AlwaysRunning)
            ),
        ]
    );
    assert_eq!(
        config.application_pools[0].managed_runtime_version,
        Some(ManagedRuntimeVersion::None)
    );
    assert_eq!(
        config.application_pools[2].username.as_deref(),
        Some("CONTOSO\\WebAppUser")
    );
    let apps: Vec<(&str, &str, &str)> = config
        .applications
        .iter()
        .map(|a| {
            (
                a.alias.as_str(),
                a.path.as_str(),
                a.application_pool.as_str(),
            )
        })
        .collect();
    assert_eq!(
        apps,
        vec![
            ("/", "local/path-to-root-app", "default"),
            ("/app-a", "local/path-to-appA", "appA"),
            ("/app-b", "local/path-to-appB", "appB"),
        ]
    );
}

#[test]
fn identities_example_needs_allowed_identities() {
    let config = task("task_identities");
    assert_eq!(
        config
            .validate(&DriverConfig::default())
            .map_err(|e| e.to_string()),
        Err(
            "application_pool[1].identity: identity \"NetworkService\" is not allowed on this \
             node (allowed: ApplicationPoolIdentity)"
                .to_owned()
        )
    );
    assert_eq!(
        config.application_pools[3].username.as_deref(),
        Some("DOMAIN\\GMSAAccount$")
    );
    assert_eq!(config.application_pools[3].password, None);
}

#[test]
fn legacy_pool_block_merges() {
    let config = task("task_legacy_pool");
    assert!(config.application_pools.is_empty());
    assert_eq!(config.legacy_application_pools.len(), 1);
    assert_eq!(
        config.legacy_application_pools[0].start_mode,
        Some(StartMode::AlwaysRunning)
    );
    assert_eq!(config.pools()[0].0, "applicationPool[0]");
    assert_eq!(
        config.service_auto_start_providers[0].name,
        "MyPreloadProvider"
    );
    assert_eq!(
        config.service_auto_start_providers[0].type_name,
        "MyNamespace.ApplicationPreload, MyAssembly"
    );
    assert_eq!(
        config.applications[0].service_auto_start_enabled,
        Some(true)
    );
}

#[test]
fn all_task_options_decode() {
    let config = task("task_all_options");
    assert_eq!(config.target_website.as_deref(), Some("Default Web Site"));
    assert!(!config.permit_iusr);
    assert_eq!(config.legacy_application_pools[0].name, "legacy");

    let pool = &config.application_pools[0];
    assert_eq!(pool.name, "default");
    assert_eq!(pool.identity, Identity::SpecificUser);
    assert_eq!(pool.username.as_deref(), Some("svc-web"));
    assert_eq!(pool.password.as_deref(), Some("s3cret"));
    assert_eq!(
        pool.managed_pipeline_mode,
        Some(ManagedPipelineMode::Integrated)
    );
    assert_eq!(
        pool.managed_runtime_version,
        Some(ManagedRuntimeVersion::V4)
    );
    assert_eq!(pool.start_mode, Some(StartMode::AlwaysRunning));
    assert_eq!(pool.idle_timeout, Some(Duration::from_secs(5400)));
    assert_eq!(pool.periodic_restart, Some(Duration::from_secs(86_400)));
    assert_eq!(pool.start_time_limit, Some(Duration::from_secs(90)));
    assert_eq!(pool.shutdown_time_limit, Some(Duration::from_secs(45)));
    assert_eq!(pool.disable_overlapped_recycle, Some(true));
    assert_eq!(pool.enable_32bit_app_on_win64, Some(false));
    assert_eq!(
        pool.service_unavailable_response,
        Some(UnavailableResponse::TcpLevel)
    );
    assert_eq!(pool.queue_length, Some(2000));
    assert_eq!(pool.extensions[0].name, "autoStart");

    let root = &config.applications[0];
    assert_eq!(root.enable_preload, Some(true));
    assert_eq!(root.service_auto_start_provider.as_deref(), Some("Warmup"));
    assert_eq!(root.virtual_directories.len(), 2);
    assert_eq!(root.virtual_directories[0].alias, "/images");
    assert_eq!(root.virtual_directories[0].extensions[0].value, "ClearText");
    assert_eq!(root.extensions[0].name, "preloadEnabled");
    assert_eq!(config.applications[1].alias, "/api/v1/");

    let b = &config.bindings;
    assert_eq!(b.len(), 4);
    assert_eq!(b[1].port, PortRef::Static(443));
    assert_eq!(b[1].hostname.as_deref(), Some("shop.example.com"));
    assert_eq!(b[1].require_sni, Some(true));
    assert_eq!(b[1].ip_address, Some([10, 0, 0, 5].into()));
    assert_eq!(
        b[2].certificate
            .as_ref()
            .and_then(|c| c.key_file.as_deref()),
        Some("secrets/api.key")
    );
    assert_eq!(b[3].ip_address, None);
    let admin = b[3].certificate.as_ref().expect("certificate");
    assert!(admin.use_self_signed && admin.thumbprint.is_some());

    let driver = DriverConfig {
        allowed_target_websites: vec!["Default Web Site".into()],
        allowed_apppool_identities: vec![Identity::SpecificUser, Identity::ApplicationPoolIdentity],
        allowed_apppool_users: vec!["svc-web".into()],
        ..DriverConfig::default()
    };
    let notices: Vec<String> = config
        .validate(&driver)
        .expect("valid")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        notices.contains(
            &"applicationPool[0]: pool \"legacy\" is not used by any application and is not created"
                .to_owned()
        ),
        "{notices:?}"
    );
    assert!(
        notices.contains(
            &"binding[3].certificate.thumbprint: has no effect on Linux; use_self_signed is used"
                .to_owned()
        ),
        "{notices:?}"
    );
}

#[test]
fn converted_values_decode() {
    let config = task("task_conversions");
    let pool = &config.application_pools[0];
    assert_eq!(pool.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(pool.queue_length, Some(1000));
    assert_eq!(config.applications[0].enable_preload, Some(true));
    assert_eq!(config.bindings[0].port, PortRef::Static(8080));
}

#[test]
fn driver_goldens_decode() {
    assert_eq!(driver("driver_empty"), DriverConfig::default());

    let docs = driver("driver_docs_example");
    assert_eq!(docs.fingerprint_interval, Duration::from_secs(30));
    assert_eq!(docs.allowed_target_websites, vec!["Default Web Site"]);
    assert_eq!(
        docs.allowed_apppool_identities,
        vec![Identity::ApplicationPoolIdentity, Identity::NetworkService]
    );
    assert_eq!(
        docs.allowed_apppool_users,
        vec!["IIS_IUSRS", "CONTOSO\\WebAppUser"]
    );
    assert_eq!(
        docs.procdump,
        Some(ProcdumpConfig {
            binary_path: Some("C:\\procdump.exe".into()),
            accept_eula: true
        })
    );

    let dev = driver("driver_agent_dev");
    assert_eq!(dev.fingerprint_interval, Duration::from_secs(10));
    assert!(dev.enabled && dev.directory_security);
    assert_eq!(
        dev.allowed_apppool_identities,
        vec![Identity::ApplicationPoolIdentity]
    );

    let all = driver("driver_all_options");
    assert_eq!(
        all,
        DriverConfig {
            enabled: false,
            fingerprint_interval: Duration::from_secs(60),
            directory_security: false,
            allowed_target_websites: vec!["*".into()],
            allowed_apppool_identities: vec![
                Identity::ApplicationPoolIdentity,
                Identity::SpecificUser
            ],
            allowed_apppool_users: vec!["*".into()],
            placeholder_app_path: Some("/srv/nomad_iis/placeholder".into()),
            procdump: Some(ProcdumpConfig {
                binary_path: Some("/usr/bin/gcore".into()),
                accept_eula: true,
            }),
            limits: control::HostLimits {
                h2_max_concurrent_streams: 64,
                response_buffer_budget: 32 * 1024 * 1024,
                max_connections_per_listener: 4096,
                header_read_timeout: Duration::from_secs(20),
                h2_keepalive_interval: Duration::from_secs(60),
                max_header_size: 32 * 1024,
            },
        }
    );
}

#[test]
fn process_example_decodes_and_resolves() {
    let config = task("task_process");
    let process = config.applications[0]
        .process
        .clone()
        .expect("a process block");
    assert_eq!(
        process,
        ProcessConfig {
            command: "python3".into(),
            args: ["-m", "http.server", "%PORT%", "--bind", "127.0.0.1"]
                .map(String::from)
                .to_vec(),
            env: BTreeMap::from([
                ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
                ("WORKERS".to_owned(), "4".to_owned()),
            ]),
        }
    );
    assert_eq!(config.applications[1].process, None);
    assert_eq!(
        config.applications[2].process,
        Some(ProcessConfig {
            command: "./tool".into(),
            ..ProcessConfig::default()
        })
    );
    let notices = config.validate(&DriverConfig::default()).expect("valid");
    assert!(notices.is_empty(), "{notices:?}");
    let ctx = ResolveContext {
        alloc_id: "a1".into(),
        task_name: "web".into(),
        task_dir: "/alloc/web".into(),
        ports: [("web".to_owned(), 25001)].into(),
        ..ResolveContext::default()
    };
    let spec = config::resolve(&config, &ctx).expect("resolvable");
    let processes: Vec<(&str, Option<&str>)> = spec
        .applications
        .iter()
        .map(|a| {
            (
                a.alias.as_str(),
                a.process.as_ref().map(|p| p.command.as_str()),
            )
        })
        .collect();
    assert_eq!(
        processes,
        vec![
            ("/api", Some("python3")),
            ("/", None),
            ("/tool", Some("./tool"))
        ]
    );
    assert_eq!(
        spec.applications[0].process.as_ref().map(|p| p.env.len()),
        Some(2)
    );
}
