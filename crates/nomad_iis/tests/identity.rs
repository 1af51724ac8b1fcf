//! Pool identities as Nomad drives them: the real plugin binary starts tasks whose application
//! is a small Python worker (named by the job's `process {}` block) that reports its real uid,
//! gid and groups, and tries to read and write files it is told to. Checks: an
//! ApplicationPoolIdentity worker runs as a dynamic uid of its own (not root), reaches its own
//! task's folders and gets EACCES on another task's; Nomad's task `user` wins; the node's
//! allow-lists fail StartTask naming the field; releasing on DestroyTask leaves nothing
//! behind. When the tests do not run as root, the plugin cannot switch users and says so.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::http;
use harness::{Allocation, Clients, Fixture, Task};

/// A worker that answers `uid=… gid=… groups=[…]`, or with `?read=PATH` the file's text (or
/// `errno:N`), or with `?write=PATH` `wrote` (or `errno:N`).
const WHOAMI: &str = r#"
import http.server, os, sys
from urllib.parse import parse_qs, urlparse

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = parse_qs(urlparse(self.path).query)
        try:
            if "read" in query:
                with open(query["read"][0]) as f:
                    body = "read:" + f.read()
            elif "write" in query:
                with open(query["write"][0], "w") as f:
                    f.write("written by the worker")
                body = "wrote"
            else:
                body = "uid=%d gid=%d groups=%s" % (os.getuid(), os.getgid(), sorted(os.getgroups()))
        except OSError as e:
            body = "errno:%d" % e.errno
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

/// The task config: the worker above in `local/site`, in a pool configured by `pool`.
fn task_config(pool: &str) -> String {
    format!(
        r#"
application {{
  path = "local/site"
  process {{
    command = "python3"
    args = ["-u", "whoami.py", "%PORT%"]
  }}
}}
application_pool {{
  start_mode = "AlwaysRunning"
  {pool}
}}
binding {{
  type = "http"
  port = "http"
}}
"#
    )
}

/// Allows more than the default `ApplicationPoolIdentity`, and two users.
const PERMISSIVE: &str = r#"
enabled = true
fingerprint_interval = "10s"
allowed_apppool_identities = ["ApplicationPoolIdentity", "NetworkService", "SpecificUser"]
allowed_apppool_users = ["www-data", "no-such-user-zz"]
"#;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A new allocation whose `local/site` holds the worker and a `secret.txt`, its folders made
/// as Nomad makes them (Nomad's `dropDirPermissions`: 0777 and, as root, owned by `nobody`).
async fn allocation(fixture: &Fixture, name: &str) -> Allocation {
    use std::os::unix::fs::PermissionsExt;
    let alloc = fixture.allocation(name).await;
    let site = alloc.static_site("site", "unused");
    std::fs::write(site.join("whoami.py"), WHOAMI).unwrap();
    std::fs::write(site.join("secret.txt"), format!("secret of {name}")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
    for dir in [
        alloc.task_dir.clone(),
        alloc.task_dir.join("local"),
        alloc.task_dir.join("tmp"),
        alloc.task_dir.join("secrets"),
        alloc.alloc_dir.join("alloc"),
        alloc.alloc_dir.join("alloc/data"),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        if let Some(nobody) = nobody.as_ref().filter(|_| is_root()) {
            nix::unistd::chown(&dir, Some(nobody.uid), Some(nobody.gid)).unwrap();
        }
    }
    alloc
}

/// Starts `alloc` with `config` (and Nomad's task `user`) on a free port.
async fn start(
    fixture: &Fixture,
    clients: &mut Clients,
    alloc: &Allocation,
    config: &str,
    user: &str,
) -> Result<(Task, u16), tonic::Status> {
    let port = harness::free_port();
    let spec = clients.task_schema().await;
    let mut task = alloc.task_config(&spec, config, &[("http", port)]);
    task.user = user.to_owned();
    let task = fixture.start_prepared(clients, task).await?;
    Ok((task, port))
}

/// The worker's answer to `path`, once it accepts connections.
async fn ask(port: u16, path: &str) -> String {
    let addr = harness::local(port);
    for _ in 0..200 {
        if let Ok(response) = http::get(addr, "localhost", path).await
            && response.status == 200
        {
            return response.text();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the worker on port {port} never answered {path}");
}

/// `(uid, gid, groups)` from the worker's `uid=… gid=… groups=[…]`.
fn parse_ids(answer: &str) -> (u32, u32, String) {
    let field = |name: &str| {
        answer
            .split_whitespace()
            .find_map(|part| part.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} missing in {answer:?}"))
            .to_owned()
    };
    let groups = answer
        .split_once("groups=")
        .map(|(_, g)| g.to_owned())
        .unwrap_or_default();
    (
        field("uid=").parse().unwrap(),
        field("gid=").parse().unwrap(),
        groups,
    )
}

fn query(key: &str, path: &Path) -> String {
    format!("/?{key}={}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_as_their_pool_identity_and_cannot_read_another_tasks_folder() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture.configured_plugin(PERMISSIVE).await;
    let mut events = clients.events().await;
    let one = allocation(&fixture, "one").await;
    let two = allocation(&fixture, "two").await;
    let (task_one, port_one) = start(&fixture, &mut clients, &one, &task_config(""), "")
        .await
        .expect("StartTask one");
    let (task_two, port_two) = start(&fixture, &mut clients, &two, &task_config(""), "")
        .await
        .expect("StartTask two");

    let (uid_one, gid_one, groups_one) = parse_ids(&ask(port_one, "/").await);
    let (uid_two, _, _) = parse_ids(&ask(port_two, "/").await);
    if !is_root() {
        harness::expect_event(&mut events, &one, "not applied").await;
        assert_eq!(uid_one, nix::unistd::geteuid().as_raw());
        clients.stop_and_destroy(task_one.id()).await;
        clients.stop_and_destroy(task_two.id()).await;
        return;
    }
    let event = harness::expect_event(&mut events, &one, "runs as ApplicationPoolIdentity").await;
    assert!(
        event.message.contains(&format!("(uid {uid_one})")),
        "{}",
        event.message
    );
    // A dynamic id of its own: no passwd entry, not root, no supplementary groups.
    assert!((61184..=65519).contains(&uid_one), "uid {uid_one}");
    assert_eq!(gid_one, uid_one);
    assert_eq!(groups_one, "[]");
    assert_ne!(uid_one, uid_two, "two tasks, two identities");
    assert!(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid_one))
            .unwrap()
            .is_none()
    );

    // Its own folders: the application reads, tmp/local/alloc data writes.
    let own_secret = one.task_dir.join("local/site/secret.txt");
    assert_eq!(
        ask(port_one, &query("read", &own_secret)).await,
        "read:secret of one"
    );
    for writable in [
        one.task_dir.join("tmp/scratch"),
        one.task_dir.join("local/state"),
        one.alloc_dir.join("alloc/data/shared"),
    ] {
        assert_eq!(
            ask(port_one, &query("write", &writable)).await,
            "wrote",
            "{}",
            writable.display()
        );
        let meta = std::fs::metadata(&writable).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            uid_one,
            "files it creates are its own"
        );
    }

    // Another task's folders: EACCES (13), for reading and writing alike.
    for (key, foreign) in [
        ("read", two.task_dir.join("local/site/secret.txt")),
        ("read", two.alloc_dir.join("alloc/data/../../two/tmp/x")),
        ("write", two.task_dir.join("tmp/intruder")),
        ("write", two.alloc_dir.join("alloc/data/intruder")),
    ] {
        assert_eq!(
            ask(port_one, &query(key, &foreign)).await,
            "errno:13",
            "{key} {}",
            foreign.display()
        );
    }
    assert!(!two.task_dir.join("tmp/intruder").exists());

    // A NetworkService pool runs as `nobody`, which Nomad made the owner of every task
    // folder: it is shut out of the others all the same.
    let three = allocation(&fixture, "three").await;
    let (task_three, port_three) = start(
        &fixture,
        &mut clients,
        &three,
        &task_config(r#"identity = "NetworkService""#),
        "",
    )
    .await
    .expect("StartTask three");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        parse_ids(&ask(port_three, "/").await).0,
        nobody.uid.as_raw()
    );
    assert_eq!(
        ask(port_three, &query("read", &own_secret)).await,
        "errno:13"
    );
    assert_eq!(
        ask(
            port_three,
            &query("read", &three.task_dir.join("local/site/secret.txt"))
        )
        .await,
        "read:secret of three"
    );

    clients.stop_and_destroy(task_one.id()).await;
    clients.stop_and_destroy(task_two.id()).await;
    clients.stop_and_destroy(task_three.id()).await;
    assert!(
        fixture.runtime_leftovers().is_empty(),
        "released identities leave nothing under the runtime root: {:?}",
        fixture.runtime_leftovers()
    );
    fixture.assert_clean(index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_user_and_mapped_identities_win_and_allow_lists_name_the_field() {
    let mut fixture = Fixture::new();
    let (index, mut clients) = fixture.configured_plugin(PERMISSIVE).await;

    // The node's allow-lists: a clear StartTask error naming the field.
    let refused = [
        (
            r#"identity = "LocalSystem""#,
            "application_pool[0].identity: identity \"LocalSystem\" is not allowed on this node",
        ),
        (
            "identity = \"SpecificUser\"\n  username = \"daemon\"",
            "application_pool[0].username: user \"daemon\" is not allowed on this node",
        ),
        (
            "identity = \"SpecificUser\"\n  username = \"no-such-user-zz\"",
            "application_pool[0].username: no user \"no-such-user-zz\" on this node",
        ),
    ];
    for (i, (pool, message)) in refused.iter().enumerate() {
        let alloc = allocation(&fixture, &format!("r{i}")).await;
        let err = start(&fixture, &mut clients, &alloc, &task_config(pool), "")
            .await
            .err()
            .unwrap_or_else(|| panic!("{pool} was accepted"));
        if !is_root() && message.contains("no user") {
            // Without root nothing is looked up: the pool runs as the plugin.
            continue;
        }
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(message), "{}", err.message());
    }

    let accepted = [
        (r#"identity = "NetworkService""#, "", "nobody"),
        (
            "identity = \"SpecificUser\"\n  username = \"www-data\"",
            "",
            "www-data",
        ),
        // Nomad's task user wins over the pool's identity.
        (r#"identity = "NetworkService""#, "www-data", "www-data"),
    ];
    for (i, (pool, user, expected)) in accepted.iter().enumerate() {
        let alloc = allocation(&fixture, &format!("a{i}")).await;
        let (task, port) = start(&fixture, &mut clients, &alloc, &task_config(pool), user)
            .await
            .unwrap_or_else(|e| panic!("StartTask {pool} user {user:?}: {e:?}"));
        let (uid, gid, _) = parse_ids(&ask(port, "/").await);
        let expected = if is_root() {
            nix::unistd::User::from_name(expected).unwrap().unwrap()
        } else {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .unwrap()
                .unwrap()
        };
        assert_eq!(
            (uid, gid),
            (expected.uid.as_raw(), expected.gid.as_raw()),
            "{pool} user {user:?}"
        );
        clients.stop_and_destroy(task.id()).await;
    }
    assert!(
        fixture.runtime_leftovers().is_empty(),
        "{:?}",
        fixture.runtime_leftovers()
    );
    fixture.assert_clean(index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_survive_a_plugin_restart_and_are_released_on_destroy() {
    let mut fixture = Fixture::new();
    let (first, mut clients) = fixture.configured_plugin(harness::DRIVER_CONFIG).await;
    let one = allocation(&fixture, "one").await;
    let (task_one, port_one) = start(&fixture, &mut clients, &one, &task_config(""), "")
        .await
        .expect("StartTask one");
    let (uid_one, _, _) = parse_ids(&ask(port_one, "/").await);

    // The plugin dies; a new one recovers the task from its persisted handle.
    fixture.plugin(first).kill();
    let (second, mut clients) = fixture.configured_plugin(harness::DRIVER_CONFIG).await;
    clients
        .recover(task_one.persisted_handle())
        .await
        .expect("RecoverTask");
    assert_eq!(parse_ids(&ask(port_one, "/").await).0, uid_one);

    // A task started by the new plugin gets an id of its own (the records survived).
    let two = allocation(&fixture, "two").await;
    let (task_two, port_two) = start(&fixture, &mut clients, &two, &task_config(""), "")
        .await
        .expect("StartTask two");
    let (uid_two, _, _) = parse_ids(&ask(port_two, "/").await);
    if is_root() {
        assert_ne!(uid_two, uid_one, "an id in use was handed out again");
    } else {
        assert_eq!(
            uid_two, uid_one,
            "without root both run as the plugin's user"
        );
    }
    assert_eq!(
        ask(
            port_two,
            &query("read", &one.task_dir.join("local/site/secret.txt"))
        )
        .await,
        if is_root() {
            "errno:13"
        } else {
            "read:secret of one"
        }
    );

    clients.stop_and_destroy(task_one.id()).await;
    clients.stop_and_destroy(task_two.id()).await;
    assert!(
        fixture.runtime_leftovers().is_empty(),
        "{:?}",
        fixture.runtime_leftovers()
    );
    fixture.assert_clean(second);
}
