//! Real `web.config` files, written the way `dotnet publish` and the IIS / HttpPlatformHandler
//! documentation write them (`tests/fixtures/`), read and resolved against real folders.

use std::path::{Path, PathBuf};
use std::time::Duration;

use webconfig::{Module, WebConfigError, WorkerDefinition, parse, resolve_command};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap()
}

fn definition(name: &str) -> WorkerDefinition {
    parse(&fixture(name)).unwrap().unwrap()
}

/// An application folder holding the given (empty) files.
fn app_with(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }
    dir
}

/// Where `name` is on this process's PATH.
fn on_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

#[test]
fn a_published_aspnetcore_app_with_location_wrapper() {
    let def = definition("aspnetcore-published.web.config");
    assert_eq!(
        def,
        WorkerDefinition {
            module: Module::AspNetCore,
            process_path: "dotnet".into(),
            arguments: r".\MyApp.dll".into(),
            env: vec![],
            stdout_log_enabled: false,
            stdout_log_file: r".\logs\stdout".into(),
            startup_time_limit: Duration::from_secs(120),
            shutdown_time_limit: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            rapid_fails_per_minute: 10,
            startup_retry_count: 0,
            inprocess: true,
        }
    );
}

#[test]
fn an_out_of_process_aspnetcore_app_with_limits_and_environment() {
    let def = definition("aspnetcore-outofprocess-env.web.config");
    assert_eq!(def.module, Module::AspNetCore);
    assert!(!def.inprocess);
    assert!(def.stdout_log_enabled);
    assert_eq!(def.startup_time_limit, Duration::from_secs(60));
    assert_eq!(def.shutdown_time_limit, Duration::from_secs(5));
    assert_eq!(def.request_timeout, Duration::from_secs(330));
    assert_eq!(def.rapid_fails_per_minute, 3);
    assert_eq!(
        def.env,
        [
            ("ASPNETCORE_ENVIRONMENT".to_owned(), "Production".to_owned()),
            (
                "ConnectionStrings__Default".to_owned(),
                "Server=db;Database=app".to_owned()
            ),
        ]
    );
}

#[test]
fn dotnet_with_a_backslashed_dll_resolves_to_dotnet_on_path_and_a_unix_dll_path() {
    // `sh` stands in for `dotnet` (not installed here): the same bare-name lookup.
    let mut def = definition("aspnetcore-outofprocess-env.web.config");
    def.process_path = "sh".into();
    let app = app_with(&["MyApp.dll"]);
    let command = resolve_command(&def, app.path(), 5000).unwrap();
    assert_eq!(command.program, on_path("sh"));
    assert_eq!(command.args, ["./MyApp.dll", "--urls-from-module"]);
    assert_eq!(command.env[1].1, "Server=db;Database=app");
}

#[test]
fn a_v1_apphost_exe_resolves_to_the_linux_apphost() {
    let def = definition("aspnetcore-v1-apphost.web.config");
    assert_eq!(def.module, Module::AspNetCore);
    assert!(
        !def.inprocess,
        "no hostingModel: out of process, the module's default"
    );
    assert_eq!(def.arguments, "");

    let app = app_with(&["MyApp"]);
    let command = resolve_command(&def, app.path(), 5000).unwrap();
    assert_eq!(command.program, app.path().join("MyApp"));
    assert!(command.args.is_empty());

    // A real MyApp.exe (a Windows publish copied as is) is taken as written.
    let app = app_with(&["MyApp.exe", "MyApp"]);
    let command = resolve_command(&def, app.path(), 5000).unwrap();
    assert_eq!(command.program, app.path().join("MyApp.exe"));

    let empty = app_with(&[]);
    let error = resolve_command(&def, empty.path(), 5000)
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("aspNetCore.processPath: "), "{error}");
    assert!(
        error.contains("./MyApp.exe") && error.contains("./MyApp"),
        "{error}"
    );
}

#[test]
fn a_development_web_config_asks_for_dotnet_publish() {
    let def = definition("aspnetcore-development.web.config");
    assert!(def.inprocess, "hostingModel is case-insensitive");
    let app = app_with(&[]);
    let error = resolve_command(&def, app.path(), 5000)
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("aspNetCore.processPath: "), "{error}");
    assert!(error.contains("development web.config"), "{error}");
    assert!(error.contains("dotnet publish"), "{error}");
}

#[test]
fn httpplatform_python_gets_the_port_in_its_arguments_and_module_defaults() {
    let def = definition("httpplatform-python.web.config");
    assert_eq!(def.module, Module::HttpPlatform);
    assert_eq!(def.startup_time_limit, Duration::from_secs(20));
    assert_eq!(def.startup_retry_count, 3);
    assert_eq!(def.request_timeout, Duration::from_secs(240));
    assert_eq!(def.stdout_log_file, r".\logs\python.log");
    assert!(!def.inprocess);

    let app = app_with(&["app.py"]);
    let command = resolve_command(&def, app.path(), 8123).unwrap();
    assert_eq!(command.program, on_path("python3"));
    assert_eq!(
        command.args,
        ["app.py", "--port", "8123", "--name", "my site"]
    );
    assert_eq!(
        command.env,
        [("PYTHONUNBUFFERED".to_owned(), "1".to_owned())]
    );
}

#[test]
fn httpplatform_node_gets_the_port_through_its_environment() {
    let def = definition("httpplatform-node.web.config");
    assert_eq!(def.module, Module::HttpPlatform);
    // HttpPlatformHandler's own defaults.
    assert_eq!(def.startup_time_limit, Duration::from_secs(10));
    assert_eq!(def.startup_retry_count, 10);
    assert_eq!(def.rapid_fails_per_minute, 10);
    assert_eq!(def.request_timeout, Duration::from_secs(120));
    assert_eq!(def.stdout_log_file, "httpplatform-stdout");
    assert!(!def.stdout_log_enabled);

    let mut def = def;
    def.process_path = "sh".into();
    let app = app_with(&["server/index.js"]);
    let command = resolve_command(&def, app.path(), 9001).unwrap();
    assert_eq!(command.args, ["./server/index.js"]);
    assert_eq!(
        command.env,
        [
            ("PORT".to_owned(), "9001".to_owned()),
            ("NODE_ENV".to_owned(), "production".to_owned()),
        ]
    );
}

#[test]
fn relative_process_paths_with_backslashes_are_relative_to_the_application() {
    let xml = r#"<configuration><system.webServer>
        <httpPlatform processPath=".\bin\server.exe" arguments="bin\config.toml --verbose" />
        </system.webServer></configuration>"#;
    let def = parse(xml).unwrap().unwrap();
    let app = app_with(&["bin/server", "bin/config.toml"]);
    let command = resolve_command(&def, app.path(), 1).unwrap();
    assert_eq!(command.program, app.path().join("bin/server"));
    assert_eq!(command.args, ["bin/config.toml", "--verbose"]);
}

#[test]
fn other_variables_expand_from_the_environment_or_stay() {
    let xml = r#"<configuration><system.webServer>
        <httpPlatform processPath="%SHELL_FOR_TEST_UNSET%" />
        </system.webServer></configuration>"#;
    let def = parse(xml).unwrap().unwrap();
    let app = app_with(&[]);
    let error = resolve_command(&def, app.path(), 1)
        .unwrap_err()
        .to_string();
    assert!(error.contains("%SHELL_FOR_TEST_UNSET%"), "{error}");

    let mut def = def;
    def.process_path = "sh".into();
    def.arguments = "%PATH% %NOT_SET_ANYWHERE_42%".into();
    let command = resolve_command(&def, app.path(), 1).unwrap();
    assert_eq!(
        command.args[0],
        std::env::var("PATH")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    );
    assert_eq!(command.args.last().unwrap(), "%NOT_SET_ANYWHERE_42%");
}

#[test]
fn files_without_a_worker_module_are_none() {
    assert_eq!(parse(&fixture("static-only.web.config")).unwrap(), None);
    assert_eq!(parse("<configuration/>").unwrap(), None);
    assert_eq!(
        parse("\u{feff}<?xml version=\"1.0\"?><configuration><system.web/></configuration>")
            .unwrap(),
        None
    );
}

#[test]
fn errors_name_the_attribute() {
    let cases = [
        (
            r#"<aspNetCore arguments="x" />"#,
            "aspNetCore.processPath: missing",
        ),
        (
            r#"<aspNetCore processPath="dotnet" requestTimeout="120" />"#,
            "aspNetCore.requestTimeout: ",
        ),
        (
            r#"<httpPlatform processPath="node" startupTimeLimit="ten" />"#,
            "httpPlatform.startupTimeLimit: ",
        ),
        (
            r#"<httpPlatform processPath="node" rapidFailsPerMinute="-1" />"#,
            "httpPlatform.rapidFailsPerMinute: ",
        ),
        (
            r#"<aspNetCore processPath="dotnet" stdoutLogEnabled="yes" />"#,
            "aspNetCore.stdoutLogEnabled: ",
        ),
        (
            r#"<aspNetCore processPath="dotnet" hostingModel="both" />"#,
            "aspNetCore.hostingModel: ",
        ),
        (
            r#"<aspNetCore processPath="dotnet" /><httpPlatform processPath="node" />"#,
            "system.webServer: both",
        ),
    ];
    for (element, expected) in cases {
        let xml = format!(
            "<configuration><system.webServer>{element}</system.webServer></configuration>"
        );
        let error = parse(&xml).unwrap_err().to_string();
        assert!(error.starts_with(expected), "{element}: {error}");
    }
    assert!(matches!(
        parse("<configuration>"),
        Err(WebConfigError::Xml(_))
    ));

    let def = parse(
        r#"<configuration><system.webServer><httpPlatform processPath="sh" arguments="&quot;open" /></system.webServer></configuration>"#,
    )
    .unwrap()
    .unwrap();
    let error = resolve_command(&def, Path::new("/"), 1)
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("httpPlatform.arguments: "), "{error}");
}

#[test]
fn the_worker_app_example_resolves_to_python_with_its_port() {
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/worker-app/app");
    let xml = std::fs::read_to_string(app.join("web.config")).unwrap();
    let def = parse(&xml).unwrap().unwrap();
    assert_eq!(def.module, Module::HttpPlatform);
    let command = resolve_command(&def, &app, 5123).unwrap();
    assert_eq!(command.program, on_path("python3"));
    assert_eq!(command.args, ["app.py", "5123"]);
    assert!(app.join(&command.args[0]).is_file());
}
