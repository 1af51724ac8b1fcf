//! `nomad_iis run`: the standalone mode, driven as a person would from a shell.
//!
//! Each test starts the real binary with its own runtime folder, reads the URLs it prints,
//! talks HTTP to them, stops it with SIGINT (Ctrl-C) and checks that nothing is left behind.
//! A guard kills the process group and removes the folders even when an assertion fails.

#[path = "harness/ports.rs"]
mod ports;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running `nomad_iis run`, killed with its hosts on drop.
struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
}

impl Run {
    fn start(dir: tempfile::TempDir, job: &Path, extra: &[&str]) -> Run {
        let runtime = dir.path().join("runtime");
        std::fs::create_dir_all(&runtime).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_nomad_iis"))
            .arg("run")
            .arg(job)
            .arg("--runtime-dir")
            .arg(&runtime)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = forward(child.stdout.take().unwrap());
        let stderr = forward(child.stderr.take().unwrap());
        Run {
            child,
            lines,
            stderr,
            dir,
        }
    }

    /// Stdout lines up to "Press Ctrl-C", or a panic with stderr when the run ends first.
    fn banner(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("Press Ctrl-C") => return seen,
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.child.kill();
        panic!(
            "no banner; stdout {seen:?}; stderr {:?}",
            self.stderr_lines()
        );
    }

    /// Stderr so far; once the run has exited, all of it: the reader thread's last lines are
    /// awaited (the channel closes at end of file), not raced.
    fn stderr_lines(&mut self) -> Vec<String> {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            return self.stderr.try_iter().collect();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("runtime")
    }

    /// Sends SIGINT and waits for the exit code.
    fn interrupt(&mut self) -> i32 {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "run did not stop after SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to end by itself.
    fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "run did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Hosts die with `run` (parent-death signal); kill any that a failure left.
        for pid in host_pids(&self.runtime()) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn forward(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Pids of processes whose command line names this runtime folder.
fn host_pids(runtime: &Path) -> Vec<Pid> {
    let needle = runtime.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" host ") && cmdline.contains(&needle) {
            pids.push(Pid::from_raw(pid));
        }
    }
    pids
}

/// A plain HTTP/1.1 GET; returns (status, body).
fn get(url: &str, host_header: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let port = authority.rsplit_once(':').unwrap().1;
    let mut stream = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let host = host_header.unwrap_or(authority);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn urls(banner: &[String]) -> Vec<String> {
    banner
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("http://") || l.starts_with("https://"))
        .map(str::to_owned)
        .collect()
}

fn site(dir: &Path) {
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::create_dir_all(dir.join("api")).unwrap();
    std::fs::write(dir.join("site/index.html"), "<h1>root app</h1>").unwrap();
    std::fs::write(dir.join("api/index.html"), "api app").unwrap();
}

#[test]
fn runs_a_job_file_serves_it_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let job = dir.path().join("web.nomad.hcl");
    std::fs::write(
        &job,
        r#"
job "web" {
  group "g" {
    network {
      port "http" {}
    }
    task "t" {
      driver = "iis"
      env {
        WHERE = "${NOMAD_TASK_DIR}"
      }
      config {
        application { path = "site" }
        application {
          alias = "/api"
          path  = "api"
        }
        binding {
          type = "http"
          port = "http"
        }
      }
    }
  }
}
"#,
    )
    .unwrap();
    let mut run = Run::start(dir, &job, &[]);
    let banner = run.banner();
    assert!(banner.iter().any(|l| l.contains("task g/t")), "{banner:?}");
    let urls = urls(&banner);
    assert_eq!(urls.len(), 1, "{banner:?}");
    assert_eq!(get(&urls[0], None), (200, "<h1>root app</h1>".to_owned()));
    assert_eq!(
        get(&format!("{}api/", urls[0]), None),
        (200, "api app".to_owned())
    );
    assert_eq!(host_pids(&run.runtime()).len(), 1);

    assert_eq!(run.interrupt(), 0, "stderr: {:?}", run.stderr_lines());
    assert!(host_pids(&run.runtime()).is_empty(), "a host outlived run");
    let left: Vec<_> = std::fs::read_dir(run.runtime()).unwrap().collect();
    assert!(left.is_empty(), "runtime folder not cleaned: {left:?}");
}

/// `nomad_iis run … > out.txt 2>&1`: the host's notices and `run`'s own lines share one file
/// description, so neither overwrites the other (a stray `0.0.0:18443` after "Press Ctrl-C to
/// stop." was the tail of a host notice overwritten by `run`'s later lines).
#[test]
fn output_redirected_to_a_file_has_only_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let config = dir.path().join("site.hcl");
    std::fs::write(
        &config,
        "application {\n  path = \"site\"\n}\nbinding {\n  type = \"http\"\n  port = \"web\"\n}\n",
    )
    .unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let out_path = dir.path().join("out.txt");
    // Truncating, not appending: what a shell's `>` gives.
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nomad_iis"))
        .arg("run")
        .arg(&config)
        .arg("--runtime-dir")
        .arg(&runtime)
        .arg("--stdout")
        .arg("/dev/null")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(read().contains("Press Ctrl-C to stop.") && read().contains(" started, listening on "))
    {
        assert!(Instant::now() < deadline, "no banner: {}", read());
        assert!(child.try_wait().unwrap().is_none(), "run ended: {}", read());
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", read());
    for host in host_pids(&runtime) {
        let _ = kill(host, Signal::SIGKILL);
    }

    let text = read();
    assert!(text.contains("nomad_iis host: stopped"), "{text}");
    for line in text.lines() {
        let whole = line.starts_with("nomad_iis run: job ")
            || line.starts_with("  alloc ")
            || line.starts_with("    http://")
            || line == "Press Ctrl-C to stop."
            || line == "stopping…"
            || line.starts_with("warning: nomad_iis run applies no application pool identities")
            // A host notice: RFC 3339 time, then the prefix.
            || (line.starts_with("20") && line.contains("Z nomad_iis host: "));
        assert!(whole, "stray line {line:?} in:\n{text}");
    }
}

#[test]
fn a_bare_config_file_gets_ports_for_its_labels_and_a_fixed_port_on_request() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let fixed = ports::free_port();
    let config = dir.path().join("site.hcl");
    std::fs::write(
        &config,
        "application {\n  path = \"site\"\n}\nbinding {\n  type = \"http\"\n  port = \"web\"\n}\nbinding {\n  type = \"http\"\n  port = \"other\"\n}\n",
    )
    .unwrap();
    let mut run = Run::start(dir, &config, &["--port", &format!("web={fixed}")]);
    let banner = run.banner();
    let urls = urls(&banner);
    assert_eq!(urls.len(), 2, "{banner:?}");
    assert!(
        urls.contains(&format!("http://localhost:{fixed}/")),
        "{urls:?}"
    );
    for url in &urls {
        assert_eq!(get(url, None).0, 200, "{url}");
    }
    assert_eq!(run.interrupt(), 0);
}

#[test]
fn job_features_it_cannot_honour_are_named() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let job = dir.path().join("j.hcl");
    let text = |extra_group: &str, extra_task: &str, path: &str| {
        format!(
            "job \"j\" {{\n group \"g\" {{\n {extra_group}\n network {{\n port \"http\" {{}}\n }}\n task \"t\" {{\n driver = \"iis\"\n {extra_task}\n config {{\n application {{ path = \"{path}\" }}\n binding {{\n type = \"http\"\n port = \"http\"\n }}\n }}\n }}\n }}\n}}\n"
        )
    };

    std::fs::write(&job, text("count = 2", "", "site")).unwrap();
    let mut run = Run::start(tempfile::tempdir().unwrap(), &job, &[]);
    assert_ne!(run.wait(), 0);
    let err = run.stderr_lines().join("\n");
    assert!(err.contains("group \"g\": count = 2"), "{err}");

    std::fs::write(&job, text("", "", "${NOMAD_SECRET_THING}/site")).unwrap();
    let mut run = Run::start(tempfile::tempdir().unwrap(), &job, &[]);
    assert_ne!(run.wait(), 0);
    let err = run.stderr_lines().join("\n");
    assert!(err.contains("NOMAD_SECRET_THING"), "{err}");

    std::fs::write(
        &job,
        text(
            "",
            "template {\n data = \"x\"\n destination = \"local/x\"\n }",
            "site",
        ),
    )
    .unwrap();
    let mut run = Run::start(tempfile::tempdir().unwrap(), &job, &[]);
    let _ = run.banner();
    assert_eq!(run.interrupt(), 0);
    let err = run.stderr_lines().join("\n");
    assert!(err.contains("warning") && err.contains("template"), "{err}");
    // Run by root, the workers would be root too: it says so rather than pretending.
    assert_eq!(
        err.contains("applies no application pool identities"),
        nix::unistd::geteuid().is_root(),
        "{err}"
    );
    drop(dir);
}

#[test]
fn a_config_error_names_the_field_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let config = dir.path().join("bad.hcl");
    std::fs::write(
        &config,
        "application {\n  path = \"site\"\n}\napplication {\n  path = \"api\"\n  alias = \"/\"\n}\nbinding {\n  type = \"http\"\n  port = \"web\"\n}\n",
    )
    .unwrap();
    let mut run = Run::start(dir, &config, &[]);
    assert_ne!(run.wait(), 0);
    let err = run.stderr_lines().join("\n");
    assert!(err.contains("application[1].alias"), "{err}");
    assert!(host_pids(&run.runtime()).is_empty());
}
