//! `StaticSite::serve` called directly, against real files in temporary folders.

mod common;

use std::os::unix::fs::symlink;

use common::TestSite;
use http::{Method, StatusCode};
use static_site::Options;

fn small_cache() -> Options {
    Options {
        cache_max_file_size: 4 * 1024,
        ..Options::default()
    }
}

/// Distinct, position-dependent bytes, so a wrong offset shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn a_small_file_is_served_with_its_headers_then_from_the_cache() {
    let site = TestSite::new();
    site.write("hello.txt", "hello, world");

    let first = site.get("/hello.txt").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.text(), "hello, world");
    assert_eq!(
        first.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(first.header("content-length"), Some("12"));
    assert_eq!(first.header("accept-ranges"), Some("bytes"));
    assert!(first.header("vary").is_none(), "no precompressed sibling");
    let etag = first.header("etag").expect("etag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));
    let last_modified = first.header("last-modified").expect("last-modified");
    assert!(httpdate::parse_http_date(last_modified).is_ok());

    let second = site.get("/hello.txt").await;
    assert_eq!(second.text(), "hello, world");
    assert_eq!(second.header("etag"), Some(etag));
    let stats = site.site.cache_stats();
    assert_eq!((stats.entries, stats.bytes), (1, 12));
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let site = TestSite::new();
    site.write("page.html", "<p>hi</p>");
    for round in ["miss", "hit"] {
        let reply = site.request(Method::HEAD, "/page.html", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{round}");
        assert_eq!(reply.header("content-length"), Some("9"), "{round}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(reply.header("etag").is_some());
        assert!(reply.body.is_empty(), "{round}");
    }
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let site = TestSite::new();
    site.write("a.txt", "a");
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let reply = site.request(method.clone(), "/a.txt", &[]).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        assert!(!reply.body.is_empty(), "error statuses carry a text body");
    }
}

#[tokio::test]
async fn a_file_changed_on_disk_is_served_fresh_on_the_next_request() {
    let site = TestSite::new();
    let path = site.write("data/v.txt", "version 1");
    assert_eq!(site.get("/data/v.txt").await.text(), "version 1");
    assert_eq!(site.get("/data/v.txt").await.text(), "version 1");

    // Written in place, same length.
    std::fs::write(&path, "version 2").unwrap();
    site.settle().await;
    assert_eq!(site.get("/data/v.txt").await.text(), "version 2");

    // Replaced atomically by a rename, as deployment tools do.
    let staged = site.write("data/v.txt.tmp", "version three");
    std::fs::rename(&staged, &path).unwrap();
    site.settle().await;
    let reply = site.get("/data/v.txt").await;
    assert_eq!(reply.text(), "version three");
    assert_eq!(reply.header("content-length"), Some("13"));

    // The folder holding it replaced by another.
    let data = site.root().join("data");
    std::fs::rename(&data, site.root().join("old")).unwrap();
    site.write("data/v.txt", "version 4, new folder");
    site.settle().await;
    assert_eq!(
        site.get("/data/v.txt").await.text(),
        "version 4, new folder"
    );

    // Deleted.
    std::fs::remove_file(site.root().join("data/v.txt")).unwrap();
    site.settle().await;
    assert_eq!(site.get("/data/v.txt").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_whole_root_swapped_by_renames_is_noticed() {
    let site = TestSite::new();
    site.write("deep/er/file.txt", "old");
    site.write("top.txt", "old top");
    assert_eq!(site.get("/deep/er/file.txt").await.text(), "old");
    assert_eq!(site.get("/top.txt").await.text(), "old top");

    let staging = site.outside().join("staging");
    std::fs::create_dir_all(staging.join("deep/er")).unwrap();
    std::fs::write(staging.join("deep/er/file.txt"), "new").unwrap();
    std::fs::write(staging.join("top.txt"), "new top").unwrap();
    std::fs::rename(site.root(), site.outside().join("previous")).unwrap();
    std::fs::rename(&staging, site.root()).unwrap();
    site.settle().await;

    assert_eq!(site.get("/deep/er/file.txt").await.text(), "new");
    assert_eq!(site.get("/top.txt").await.text(), "new top");
}

#[tokio::test]
async fn unrelated_changes_next_to_a_cached_file_keep_it_cached() {
    let site = TestSite::new();
    site.write("index.html", "home");
    site.write("css/site.css", "body{}");
    for remainder in ["/", "/index.html", "/css/site.css"] {
        assert_eq!(site.get(remainder).await.status, StatusCode::OK);
    }
    site.write("app.log", "line 1\n");
    site.write("app.log", "line 1\nline 2\n");
    site.write("css/other.css", "p{}");
    std::fs::create_dir(site.root().join("uploads")).unwrap();
    site.settle().await;
    let before = site.site.cache_stats();
    for remainder in ["/", "/index.html", "/css/site.css"] {
        assert_eq!(site.get(remainder).await.status, StatusCode::OK);
    }
    let after = site.site.cache_stats();
    assert_eq!(after.hits, before.hits + 3, "{after:?}");
    assert_eq!(after.misses, before.misses);
}

#[tokio::test]
async fn a_deleted_file_is_404() {
    let site = TestSite::new();
    let path = site.write("gone.txt", "here");
    assert_eq!(site.get("/gone.txt").await.status, StatusCode::OK);
    std::fs::remove_file(path).unwrap();
    site.settle().await;
    let reply = site.get("/gone.txt").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(reply.text().contains("404"));
    assert_eq!(site.site.cache_stats().entries, 0);
}

#[tokio::test]
async fn symlinks_inside_the_root_work_and_symlinks_out_of_it_are_404() {
    let site = TestSite::new();
    std::fs::write(site.outside().join("secret.txt"), "secret").unwrap();
    std::fs::create_dir(site.outside().join("secrets")).unwrap();
    std::fs::write(site.outside().join("secrets/index.html"), "secret index").unwrap();
    site.write("real/inside.txt", "inside");
    site.write("linked-doc/placeholder", "");
    symlink(
        site.outside().join("secret.txt"),
        site.root().join("out.txt"),
    )
    .unwrap();
    symlink(site.outside().join("secrets"), site.root().join("outdir")).unwrap();
    symlink(
        site.outside().join("secret.txt"),
        site.root().join("linked-doc/index.html"),
    )
    .unwrap();
    symlink(
        site.root().join("real/inside.txt"),
        site.root().join("in.txt"),
    )
    .unwrap();
    symlink("real", site.root().join("alias")).unwrap();

    for remainder in ["/out.txt", "/outdir/", "/outdir/index.html", "/linked-doc/"] {
        let reply = site.get(remainder).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{remainder}");
        assert!(!reply.text().contains("secret"));
    }
    assert_eq!(site.get("/in.txt").await.text(), "inside");
    assert_eq!(site.get("/alias/inside.txt").await.text(), "inside");

    // The target of a cached symlink changes: the cache follows.
    std::fs::write(site.root().join("real/inside.txt"), "inside, edited").unwrap();
    site.settle().await;
    assert_eq!(site.get("/in.txt").await.text(), "inside, edited");
    assert_eq!(site.get("/alias/inside.txt").await.text(), "inside, edited");

    // A symlink retargeted out of the root after it was cached.
    std::fs::remove_file(site.root().join("in.txt")).unwrap();
    symlink(
        site.outside().join("secret.txt"),
        site.root().join("in.txt"),
    )
    .unwrap();
    site.settle().await;
    assert_eq!(site.get("/in.txt").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn traversal_and_encoding_attacks_are_refused() {
    let site = TestSite::new();
    std::fs::write(site.outside().join("outside.txt"), "outside").unwrap();
    site.write("sub/inside.txt", "inside");
    for remainder in [
        "/../outside.txt",
        "/sub/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E/outside.txt",
        "/sub/%2e%2e/%2e%2e/outside.txt",
        "/sub%2F..%2F..%2Foutside.txt",
        "/sub%2finside.txt",
        "/sub%5Cinside.txt",
        "/sub\\inside.txt",
        "/..\\outside.txt",
        "/sub/inside.txt%00.png",
        "/%ff",
        "/%zz",
        "/./sub/inside.txt",
    ] {
        let reply = site.get(remainder).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{remainder}");
        assert!(!reply.text().contains("outside"), "{remainder}");
    }
    assert_eq!(site.get("/sub/inside.txt").await.text(), "inside");
    assert_eq!(site.get("//sub//inside.txt").await.text(), "inside");
    assert_eq!(site.get("/sub/in%73ide.txt").await.text(), "inside");
}

#[tokio::test]
async fn default_documents_are_found_in_order() {
    let site = TestSite::new();
    site.write("index.html", "root index");
    site.write("docs/default.htm", "docs default");
    site.write("docs/index.htm", "docs index.htm");
    site.write("empty/readme.txt", "no default document here");

    assert_eq!(site.get("/").await.text(), "root index");
    assert_eq!(site.get("").await.text(), "root index");
    let docs = site.get("/docs/").await;
    assert_eq!(docs.text(), "docs index.htm");
    assert_eq!(
        docs.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(site.get("/docs/").await.text(), "docs index.htm");

    // A better default document appears: the cached answer for the folder goes.
    site.write("docs/index.html", "docs index.html");
    site.settle().await;
    assert_eq!(site.get("/docs/").await.text(), "docs index.html");

    let empty = site.get("/empty/").await;
    assert_eq!(empty.status, StatusCode::NOT_FOUND, "never a listing");
    assert!(!empty.text().contains("readme"));
}

#[tokio::test]
async fn custom_default_documents_are_used() {
    let site = TestSite::with_options(Options {
        default_documents: vec!["home.txt".into()],
        ..Options::default()
    });
    site.write("index.html", "not this");
    site.write("home.txt", "home");
    assert_eq!(site.get("/").await.text(), "home");
}

#[tokio::test]
async fn a_folder_without_its_slash_is_redirected() {
    let site = TestSite::new();
    site.write("sub/index.html", "sub");
    site.write("my dir/index.html", "spaced");
    site.write("a:b/index.html", "colon");

    let reply = site.get("/sub").await;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(reply.header("location"), Some("./sub/"));
    assert_eq!(
        site.get("/my%20dir").await.header("location"),
        Some("./my%20dir/")
    );
    assert_eq!(site.get("/a:b").await.header("location"), Some("./a:b/"));
    assert_eq!(
        site.get("/sub/index.html/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(site.get("/nothing").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        site.get("/sub/index.html/x").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn byte_ranges_are_served_from_the_cache() {
    let site = TestSite::new();
    site.write("digits.txt", "0123456789");
    let etag = site
        .get("/digits.txt")
        .await
        .header("etag")
        .unwrap()
        .to_owned();

    let cases = [
        ("bytes=0-4", "01234", "bytes 0-4/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=8-100", "89", "bytes 8-9/10"),
    ];
    for (range, body, content_range) in cases {
        let reply = site.get_with("/digits.txt", &[("range", range)]).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(reply.text(), body, "{range}");
        assert_eq!(
            reply.header("content-range"),
            Some(content_range),
            "{range}"
        );
        assert_eq!(
            reply.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }

    let unsatisfiable = site
        .get_with("/digits.txt", &[("range", "bytes=10-")])
        .await;
    assert_eq!(unsatisfiable.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(unsatisfiable.header("content-range"), Some("bytes */10"));

    let several = site
        .get_with("/digits.txt", &[("range", "bytes=0-1,4-5")])
        .await;
    assert_eq!(
        several.status,
        StatusCode::OK,
        "several ranges get the whole file"
    );
    assert_eq!(several.text(), "0123456789");

    let matching = site
        .get_with(
            "/digits.txt",
            &[("range", "bytes=0-0"), ("if-range", &etag)],
        )
        .await;
    assert_eq!(
        (matching.status, matching.text()),
        (StatusCode::PARTIAL_CONTENT, "0")
    );
    let outdated = site
        .get_with(
            "/digits.txt",
            &[("range", "bytes=0-0"), ("if-range", "\"old\"")],
        )
        .await;
    assert_eq!(
        (outdated.status, outdated.text()),
        (StatusCode::OK, "0123456789")
    );

    let head = site
        .request(Method::HEAD, "/digits.txt", &[("range", "bytes=0-0")])
        .await;
    assert_eq!(head.status, StatusCode::OK, "HEAD ignores Range");
}

#[tokio::test]
async fn conditional_requests_get_304() {
    let site = TestSite::new();
    site.write("c.css", "body{}");
    let first = site.get("/c.css").await;
    let etag = first.header("etag").unwrap().to_owned();
    let last_modified = first.header("last-modified").unwrap().to_owned();
    let weak = format!("W/{etag}");
    let listed = format!("\"nope\", {etag}");
    let long_ago = httpdate::fmt_http_date(std::time::UNIX_EPOCH);

    let not_modified: [&[(&str, &str)]; 5] = [
        &[("if-none-match", &etag)],
        &[("if-none-match", &weak)],
        &[("if-none-match", &listed)],
        &[("if-none-match", "*")],
        &[("if-modified-since", &last_modified)],
    ];
    for headers in not_modified {
        let reply = site.get_with("/c.css", headers).await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "{headers:?}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
    }
    let modified: [&[(&str, &str)]; 3] = [
        &[("if-none-match", "\"nope\"")],
        &[("if-modified-since", &long_ago)],
        &[
            ("if-none-match", "\"nope\""),
            ("if-modified-since", &last_modified),
        ],
    ];
    for headers in modified {
        let reply = site.get_with("/c.css", headers).await;
        assert_eq!(
            (reply.status, reply.text()),
            (StatusCode::OK, "body{}"),
            "{headers:?}"
        );
    }
    let failed = site.get_with("/c.css", &[("if-match", "\"nope\"")]).await;
    assert_eq!(failed.status, StatusCode::PRECONDITION_FAILED);
    let head = site
        .request(Method::HEAD, "/c.css", &[("if-none-match", &etag)])
        .await;
    assert_eq!(head.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn precompressed_siblings_are_chosen_by_accept_encoding() {
    let site = TestSite::new();
    site.write("app.js", "plain javascript");
    site.write("app.js.br", "brotli bytes");
    site.write("app.js.gz", "gzip bytes");
    site.write("only-gz.css", "plain css");
    site.write("only-gz.css.gz", "gzip css");

    let cases = [
        ("/app.js", None, "plain javascript", None),
        (
            "/app.js",
            Some("gzip, deflate, br"),
            "brotli bytes",
            Some("br"),
        ),
        ("/app.js", Some("gzip"), "gzip bytes", Some("gzip")),
        (
            "/app.js",
            Some("br;q=0.5, gzip"),
            "gzip bytes",
            Some("gzip"),
        ),
        (
            "/app.js",
            Some("br;q=0, gzip;q=0"),
            "plain javascript",
            None,
        ),
        ("/app.js", Some("deflate"), "plain javascript", None),
        ("/only-gz.css", Some("br, gzip"), "gzip css", Some("gzip")),
        ("/only-gz.css", Some("br"), "plain css", None),
    ];
    // Twice: once filling the cache, once from it.
    for round in 0..2 {
        let mut etags = std::collections::HashSet::new();
        for (remainder, accept, body, encoding) in cases {
            let headers: Vec<(&str, &str)> =
                accept.map(|a| ("accept-encoding", a)).into_iter().collect();
            let reply = site.get_with(remainder, &headers).await;
            let context = format!("round {round}: {remainder} with {accept:?}");
            assert_eq!(reply.text(), body, "{context}");
            assert_eq!(reply.header("content-encoding"), encoding, "{context}");
            assert_eq!(reply.header("vary"), Some("Accept-Encoding"), "{context}");
            let expected_type = if remainder.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else {
                "text/css; charset=utf-8"
            };
            assert_eq!(
                reply.header("content-type"),
                Some(expected_type),
                "{context}"
            );
            etags.insert((remainder, reply.header("etag").unwrap().to_owned()));
        }
        assert_eq!(etags.len(), 5, "each variant has its own etag");
    }

    // A sibling added later is noticed.
    site.write("only-gz.css.br", "brotli css");
    site.settle().await;
    let reply = site
        .get_with("/only-gz.css", &[("accept-encoding", "br")])
        .await;
    assert_eq!(reply.text(), "brotli css");
}

#[tokio::test]
async fn a_large_file_is_streamed_not_cached() {
    let site = TestSite::with_options(small_cache());
    let contents = pattern(1024 * 1024 + 123);
    site.write("big.bin", &contents);

    let reply = site.get("/big.bin").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-length"), Some("1048699"));
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(reply.body == contents, "streamed bytes differ");
    assert_eq!(site.site.cache_stats().entries, 0);

    let range = site
        .get_with("/big.bin", &[("range", "bytes=500000-600000")])
        .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        range.header("content-range"),
        Some("bytes 500000-600000/1048699")
    );
    assert!(
        range.body == contents[500000..=600000],
        "streamed range differs"
    );

    let suffix = site.get_with("/big.bin", &[("range", "bytes=-10")]).await;
    assert!(suffix.body == contents[contents.len() - 10..]);

    let head = site.request(Method::HEAD, "/big.bin", &[]).await;
    assert_eq!(head.header("content-length"), Some("1048699"));
    assert!(head.body.is_empty());

    let etag = reply.header("etag").unwrap();
    let not_modified = site.get_with("/big.bin", &[("if-none-match", etag)]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn a_large_precompressed_sibling_is_streamed() {
    let site = TestSite::with_options(small_cache());
    let plain = pattern(10_000);
    let compressed = pattern(5_000);
    site.write("big.txt", &plain);
    site.write("big.txt.gz", &compressed);
    let reply = site
        .get_with("/big.txt", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
    assert!(reply.body == compressed);
    let reply = site.get("/big.txt").await;
    assert!(reply.header("content-encoding").is_none());
    assert!(reply.body == plain);
}

#[tokio::test]
async fn the_cache_stays_within_its_budget_and_can_be_flushed() {
    let site = TestSite::with_options(Options {
        cache_max_file_size: 1000,
        cache_max_total: 3000,
        ..Options::default()
    });
    for i in 0..10 {
        site.write(&format!("f{i}.bin"), pattern(900));
    }
    for i in 0..10 {
        let reply = site.get(&format!("/f{i}.bin")).await;
        assert_eq!(reply.body.len(), 900);
        let stats = site.site.cache_stats();
        assert!(stats.bytes <= 3000, "{stats:?}");
        assert!(stats.entries >= 1);
    }
    // The most recent file is cached.
    let before = site.site.cache_stats();
    site.get("/f9.bin").await;
    assert_eq!(site.site.cache_stats().hits, before.hits + 1);

    site.site.flush_cache();
    let flushed = site.site.cache_stats();
    assert_eq!((flushed.entries, flushed.bytes), (0, 0));
    assert_eq!(site.get("/f9.bin").await.body.len(), 900);
    assert_eq!(site.site.cache_stats().misses, flushed.misses + 1);
}

#[tokio::test]
async fn only_regular_files_are_served() {
    let site = TestSite::new();
    let fifo = site.root().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(site.get("/pipe").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn web_config_is_hidden() {
    let site = TestSite::new();
    site.write("web.config", "<configuration/>");
    site.write("sub/Web.Config", "<configuration/>");
    assert_eq!(site.get("/web.config").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        site.get("/sub/Web.Config").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_empty_file_is_served() {
    let site = TestSite::new();
    site.write("empty.txt", "");
    let reply = site.get("/empty.txt").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-length"), Some("0"));
    let range = site.get_with("/empty.txt", &[("range", "bytes=0-")]).await;
    assert_eq!(range.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(range.header("content-range"), Some("bytes */0"));
}

#[tokio::test]
async fn a_missing_root_is_an_error_naming_it() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("missing");
    let error = static_site::StaticSite::new(missing.clone(), Options::default()).unwrap_err();
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
    let file = temp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let error = static_site::StaticSite::new(file, Options::default()).unwrap_err();
    assert!(error.to_string().contains("is not a directory"), "{error}");
}
