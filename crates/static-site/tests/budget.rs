//! Streamed responses are bounded: with a response buffer budget set (once per process, so this is
//! its own test binary), responses whose chunks nobody takes stop reading once the budget is used, go
//! on when a chunk is written (dropped), and all streams of one file share one descriptor.

mod common;

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use common::TestSite;
use http::{HeaderMap, Method, StatusCode};
use http_body::Body as _;
use static_site::budget;

#[tokio::test]
async fn stalled_streams_hold_at_most_the_budget_and_one_descriptor() {
    const BUDGET: usize = 1024 * 1024;
    assert!(budget::set_response_buffer_budget(BUDGET as u64));
    let site = TestSite::new();
    site.write("big.bin", vec![7u8; 4 * 1024 * 1024]);

    // Each stream reads its first chunk (64 KiB) and is then left alone, like an h2 stream whose
    // client never reads: 16 of them use the whole budget.
    let mut bodies = Vec::new();
    let mut chunks = Vec::new();
    for _ in 0..16 {
        let response = site
            .site
            .serve(&Method::GET, "/big.bin", &HeaderMap::new())
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        chunks.push(frame.unwrap().unwrap().into_data().unwrap());
        bodies.push(body);
    }
    assert_eq!(budget::response_buffer_available(), Some(0));
    assert_eq!(budget::shared_descriptors(), 1);

    // A 17th stream waits for budget instead of reading.
    let response = site
        .site
        .serve(&Method::GET, "/big.bin", &HeaderMap::new())
        .await;
    let mut waiting = response.into_body();
    let pending =
        poll_fn(|cx| Poll::Ready(Pin::new(&mut waiting).poll_frame(cx).is_pending())).await;
    assert!(pending, "a stream read past the budget");

    // One chunk written (dropped): the waiting stream reads.
    chunks.pop();
    let frame = poll_fn(|cx| Pin::new(&mut waiting).poll_frame(cx)).await;
    assert_eq!(
        frame.unwrap().unwrap().into_data().unwrap().len(),
        64 * 1024
    );

    drop((chunks, bodies, waiting));
    assert_eq!(budget::response_buffer_available(), Some(BUDGET));
    assert_eq!(budget::shared_descriptors(), 0);
}
