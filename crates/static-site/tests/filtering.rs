//! IIS's request filtering against the original driver's own sample, a classic ASP.NET application
//! folder: its code, data and configuration are 404 however the path is spelt, its static content is
//! served, and the folder is recognised as an application that cannot run on Linux.

mod common;

use std::os::unix::fs::symlink;

use common::TestSite;
use http::StatusCode;
use static_site::filter;

/// The layout of the original's sample application.
fn sample() -> TestSite {
    let site = TestSite::new();
    site.write(
        "web.config",
        r#"<?xml version="1.0"?><configuration><system.web><compilation targetFramework="4.8" /></system.web></configuration>"#,
    );
    site.write("bin/AspNetSampleApp.dll", "MZ binary");
    site.write("App_Data/db.mdf", "database");
    site.write("Views/Home/Index.cshtml", "@{ secret }");
    site.write(
        "Global.asax",
        "<%@ Application Codebehind=\"Global.asax.cs\" %>",
    );
    site.write("Global.asax.cs", "class Secret {}");
    site.write("Content/site.css", "body{}");
    site.write("index.html", "home");
    site
}

#[tokio::test]
async fn the_samples_code_and_data_are_404_in_every_spelling() {
    let site = sample();
    for path in [
        "/web.config",
        "/bin/AspNetSampleApp.dll",
        "/App_Data/db.mdf",
        "/Views/Home/Index.cshtml",
        "/Global.asax",
        "/Global.asax.cs",
        // Percent-encoding, any case of the encoding and of the name.
        "/%62in/AspNetSampleApp.dll",
        "/%42IN/AspNetSampleApp.dll",
        "/App%5FData/db.mdf",
        "/app_data/db.mdf",
        "/APP_DATA/DB.MDF",
        "/Views/Home/Index.%63shtml",
        "/Views/Home/index.CSHTML",
        "/GLOBAL.ASAX",
        "/Web.Config",
        "/web%2Econfig",
        // What Windows would strip, and a parameter that reaches nothing.
        "/web.config.",
        "/App_Data./db.mdf",
        "/Global.asax%20",
        "/web.config::$DATA",
        "/bin;x/AspNetSampleApp.dll",
        // Folders themselves, with and without the slash.
        "/bin/",
        "/bin",
        "/App_Data/",
    ] {
        let reply = site.get(path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!reply.text().contains("secret"), "{path}");
    }
    // Twice: the second answer must not come from a cache the first filled.
    assert_eq!(
        site.get("/App_Data/db.mdf").await.status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(site.get("/Content/site.css").await.status, StatusCode::OK);
    assert_eq!(site.get("/").await.text(), "home");
}

#[tokio::test]
async fn a_link_to_hidden_content_is_404_too() {
    let site = sample();
    symlink(
        site.root().join("App_Data/db.mdf"),
        site.root().join("data.txt"),
    )
    .unwrap();
    symlink(site.root().join("bin"), site.root().join("libs")).unwrap();
    assert_eq!(site.get("/data.txt").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        site.get("/libs/AspNetSampleApp.dll").await.status,
        StatusCode::NOT_FOUND
    );
    // A default document that leads into a hidden folder is not served either.
    std::fs::create_dir(site.root().join("docs")).unwrap();
    symlink(
        site.root().join("App_Data/db.mdf"),
        site.root().join("docs/index.html"),
    )
    .unwrap();
    assert_eq!(site.get("/docs/").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        site.get("/docs/index.html").await.status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn the_sample_is_recognised_as_classic_aspnet() {
    let site = sample();
    let found = filter::detect_classic_aspnet(&site.root()).expect("classic ASP.NET");
    assert!(
        found.system_web && found.global_asax && found.bin_dlls,
        "{found:?}"
    );
    let warning = filter::classic_aspnet_warning("application[0].path", &site.root()).unwrap();
    assert!(warning.contains("cannot run on Linux"), "{warning}");

    let plain = TestSite::new();
    plain.write("index.html", "hi");
    assert_eq!(filter::detect_classic_aspnet(&plain.root()), None);
}
