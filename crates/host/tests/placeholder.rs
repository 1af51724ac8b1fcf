//! An empty application folder without a `placeholder_app_path` answers with the built-in start
//! page (IIS shows its start page there), not 404; content uploaded later takes over.

mod common;

use common::*;
use http::StatusCode;

#[tokio::test]
async fn an_empty_folder_shows_the_start_page_until_content_arrives() {
    let site = Site::new();
    std::fs::remove_file(site.path("app/index.html")).unwrap();
    let host = start(site.spec.clone()).await;
    let addr = host.addr(0);

    let (status, body) = get(addr, "localhost", "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("This site is running"), "{body}");

    site.write("app/default.htm", "deployed");
    let deployed = eventually(100, || async {
        get(addr, "localhost", "/").await.unwrap().1 == "deployed"
    })
    .await;
    assert!(deployed, "uploaded content did not replace the start page");
    host.stop().await;
}
