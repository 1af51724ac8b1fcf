//! End-to-end tests of `transport::serve_with` over real unix and TCP sockets, with tonic
//! clients playing the part of Nomad's go-plugin client.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use nomad_plugin::proto::base::base_plugin_client::BasePluginClient;
use nomad_plugin::proto::base::base_plugin_server::{BasePlugin, BasePluginServer};
use nomad_plugin::proto::base::{
    ConfigSchemaRequest, ConfigSchemaResponse, PluginInfoRequest, PluginInfoResponse,
    SetConfigRequest, SetConfigResponse,
};
use nomad_plugin::proto::goplugin::grpc_broker_client::GrpcBrokerClient;
use nomad_plugin::proto::goplugin::grpc_controller_client::GrpcControllerClient;
use nomad_plugin::proto::goplugin::grpc_stdio_client::GrpcStdioClient;
use nomad_plugin::proto::goplugin::{ConnInfo, Empty};
use nomad_plugin::status;
use nomad_plugin::transport::{Listen, MAX_MESSAGE_SIZE, TransportError, serve_with};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Nomad kills a plugin 2 s after asking it to shut down; `serve` must return before that.
/// This is the protocol's deadline, not a performance target.
const NOMAD_KILL_DEADLINE: Duration = Duration::from_secs(2);

/// A five mebibyte payload: larger than tonic's 4 MiB default decode limit.
const LARGE_PAYLOAD: usize = 5 * 1024 * 1024;

// === test harness ===

/// A running `serve_with` and everything needed to stop it and clean up, even on failure.
struct Served {
    /// The handshake line as handed to the callback.
    line: String,
    /// Whether the address accepted a connection at the moment the line was emitted.
    connectable_at_handshake: bool,
    /// Dropping this completes the caller's shutdown future.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), TransportError>>>,
    /// The parent of the private socket folder, removed on drop.
    parent: tempfile::TempDir,
}

enum Network {
    Unix,
    Tcp,
}

impl Served {
    async fn start(network: Network, routes: Routes) -> Served {
        let parent = tempfile::tempdir().expect("temp dir");
        let listen = match network {
            Network::Unix => Listen::Unix {
                dir: Some(parent.path().to_path_buf()),
            },
            Network::Tcp => Listen::Tcp { port: 0 },
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (line_tx, line_rx) = oneshot::channel();
        let task = tokio::spawn(serve_with(
            listen,
            routes,
            async {
                let _ = stop_rx.await;
            },
            move |line: &str| {
                let connectable = connect_now(line);
                let _ = line_tx.send((line.to_owned(), connectable));
            },
        ));
        let (line, connectable_at_handshake) = match line_rx.await {
            Ok(received) => received,
            Err(_) => panic!("serve_with ended before the handshake: {:?}", task.await),
        };
        Served {
            line,
            connectable_at_handshake,
            stop: Some(stop_tx),
            task: Some(task),
            parent,
        }
    }

    fn fields(&self) -> Vec<&str> {
        self.line.split('|').collect()
    }

    fn socket_path(&self) -> PathBuf {
        PathBuf::from(self.fields()[3])
    }

    async fn channel(&self) -> Channel {
        connect(&self.line).await
    }

    /// Waits for `serve_with` to return on its own, within Nomad's kill deadline.
    async fn finished(&mut self) -> Result<(), TransportError> {
        let task = self.task.take().expect("serve task still owned");
        tokio::time::timeout(NOMAD_KILL_DEADLINE, task)
            .await
            .expect("serve returned before Nomad's kill deadline")
            .expect("serve task did not panic")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Dials the handshake address synchronously, as a client reading the line would.
fn connect_now(line: &str) -> bool {
    let fields: Vec<&str> = line.split('|').collect();
    match fields.get(2..4) {
        Some(["unix", path]) => std::os::unix::net::UnixStream::connect(path).is_ok(),
        Some(["tcp", address]) => std::net::TcpStream::connect(address).is_ok(),
        _ => false,
    }
}

/// Opens an h2c gRPC channel to the handshake address.
async fn connect(line: &str) -> Channel {
    let fields: Vec<&str> = line.split('|').collect();
    match fields[2] {
        "unix" => {
            let path = PathBuf::from(fields[3]);
            Endpoint::try_from("http://[::]:50051")
                .expect("endpoint")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
                }))
                .await
                .expect("unix channel")
        }
        "tcp" => Endpoint::from_shared(format!("http://{}", fields[3]))
            .expect("endpoint")
            .connect()
            .await
            .expect("tcp channel"),
        other => panic!("unknown network {other}"),
    }
}

async fn health_of(channel: Channel, service: &str) -> Result<ServingStatus, Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// A minimal `BasePlugin`: records the size of the last config, fails on demand, and never
/// answers `ConfigSchema` (standing in for a long-lived call such as `WaitTask`).
#[derive(Clone, Default)]
struct TestPlugin {
    last_config_len: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl BasePlugin for TestPlugin {
    async fn plugin_info(
        &self,
        _request: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        Ok(Response::new(PluginInfoResponse {
            r#type: 2,
            plugin_api_versions: vec!["0.1.0".to_owned()],
            plugin_version: "0.1.0".to_owned(),
            name: "test".to_owned(),
        }))
    }

    async fn config_schema(
        &self,
        _request: Request<ConfigSchemaRequest>,
    ) -> Result<Response<ConfigSchemaResponse>, Status> {
        std::future::pending().await
    }

    async fn set_config(
        &self,
        request: Request<SetConfigRequest>,
    ) -> Result<Response<SetConfigResponse>, Status> {
        let config = request.into_inner().msgpack_config;
        if config == b"recoverable" {
            return Err(status::recoverable(Code::Unavailable, "try again later"));
        }
        if config == b"fatal" {
            return Err(status::fatal(Code::InvalidArgument, "bad config"));
        }
        self.last_config_len.store(config.len(), Ordering::SeqCst);
        Ok(Response::new(SetConfigResponse {}))
    }
}

fn routes_with_raised_limits(plugin: TestPlugin) -> Routes {
    Routes::new(
        BasePluginServer::new(plugin)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
    )
}

fn base_client(channel: Channel) -> BasePluginClient<Channel> {
    BasePluginClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

fn assert_folder_gone(path: &Path) {
    assert!(
        !path.exists(),
        "socket folder {} still exists after serve returned",
        path.display()
    );
}

// === tests ===

#[tokio::test]
async fn unix_handshake_names_a_private_socket_that_is_connectable_at_once() {
    let served = Served::start(Network::Unix, Routes::default()).await;
    let fields = served.fields();
    assert_eq!(fields.len(), 5, "line {:?}", served.line);
    assert_eq!(fields[0], "1");
    assert_eq!(fields[1], "2");
    assert_eq!(fields[2], "unix");
    assert_eq!(fields[4], "grpc");
    assert!(!served.line.contains('\n'));
    assert!(served.connectable_at_handshake);

    let socket = served.socket_path();
    assert!(socket.starts_with(served.parent.path()));
    let metadata = std::fs::metadata(&socket).expect("socket exists");
    assert!(metadata.file_type().is_socket());
    let folder = socket.parent().expect("socket has a folder");
    let mode = std::fs::metadata(folder)
        .expect("folder")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "socket folder mode {mode:o}");
}

#[tokio::test]
async fn health_reports_plugin_serving_over_the_socket() {
    let served = Served::start(Network::Unix, Routes::default()).await;
    let status = health_of(served.channel().await, "plugin").await;
    assert_eq!(status.expect("health check"), ServingStatus::Serving);
}

#[tokio::test]
async fn tcp_mode_binds_loopback_and_serves_health() {
    let served = Served::start(Network::Tcp, Routes::default()).await;
    let fields = served.fields();
    assert_eq!(fields[2], "tcp");
    let address: std::net::SocketAddr = fields[3].parse().expect("socket address");
    assert!(address.ip().is_loopback());
    assert_ne!(address.port(), 0);
    assert!(served.connectable_at_handshake);
    let status = health_of(served.channel().await, "plugin").await;
    assert_eq!(status.expect("health check"), ServingStatus::Serving);
}

#[tokio::test]
async fn broker_stream_stays_idle_until_the_client_closes_it() {
    let served = Served::start(Network::Unix, Routes::default()).await;
    let (offers, offer_stream) = mpsc::channel::<ConnInfo>(1);
    let mut inbound = GrpcBrokerClient::new(served.channel().await)
        .start_stream(ReceiverStream::new(offer_stream))
        .await
        .expect("broker stream opens")
        .into_inner();

    // An offer is read and ignored; nothing comes back and the stream stays open.
    offers
        .send(ConnInfo {
            service_id: 7,
            network: "unix".to_owned(),
            address: "/nowhere".to_owned(),
            knock: None,
        })
        .await
        .expect("offer sent");
    let quiet = tokio::time::timeout(Duration::from_millis(300), inbound.message()).await;
    assert!(quiet.is_err(), "broker sent or closed: {quiet:?}");

    drop(offers);
    let end = inbound.message().await;
    assert!(
        matches!(end, Ok(None)),
        "broker stream after close: {end:?}"
    );
}

#[tokio::test]
async fn stdio_stream_stays_open_and_silent() {
    let served = Served::start(Network::Unix, Routes::default()).await;
    let mut stdio = GrpcStdioClient::new(served.channel().await)
        .stream_stdio(())
        .await
        .expect("stdio stream opens")
        .into_inner();
    let quiet = tokio::time::timeout(Duration::from_millis(300), stdio.message()).await;
    assert!(quiet.is_err(), "stdio sent or closed: {quiet:?}");
}

#[tokio::test]
async fn shutdown_replies_then_serve_returns_despite_open_streams_and_calls() {
    let mut served = Served::start(
        Network::Unix,
        routes_with_raised_limits(TestPlugin::default()),
    )
    .await;
    let channel = served.channel().await;
    let socket = served.socket_path();

    let mut stdio = GrpcStdioClient::new(channel.clone())
        .stream_stdio(())
        .await
        .expect("stdio stream opens")
        .into_inner();
    let (_offers, offer_stream) = mpsc::channel::<ConnInfo>(1);
    let _broker = GrpcBrokerClient::new(channel.clone())
        .start_stream(ReceiverStream::new(offer_stream))
        .await
        .expect("broker stream opens");
    let mut plugin = base_client(channel.clone());
    let never_answered =
        tokio::spawn(async move { plugin.config_schema(ConfigSchemaRequest {}).await });

    GrpcControllerClient::new(channel)
        .shutdown(Empty {})
        .await
        .expect("shutdown is answered");
    served.finished().await.expect("serve returns Ok");

    let hung = never_answered.await.expect("call task");
    assert!(hung.is_err(), "the hanging call ended with {hung:?}");
    assert!(
        !matches!(stdio.message().await, Ok(Some(_))),
        "stdio never sends data"
    );
    assert_folder_gone(socket.parent().expect("socket folder"));
}

#[tokio::test]
async fn the_callers_shutdown_future_stops_serving_and_removes_the_socket() {
    let mut served = Served::start(Network::Unix, Routes::default()).await;
    let socket = served.socket_path();
    let _stdio = GrpcStdioClient::new(served.channel().await)
        .stream_stdio(())
        .await
        .expect("stdio stream opens");
    drop(served.stop.take());
    served.finished().await.expect("serve returns Ok");
    assert_folder_gone(socket.parent().expect("socket folder"));
    assert!(UnixStream::connect(&socket).await.is_err());
}

#[tokio::test]
async fn new_connections_are_accepted_after_earlier_clients_leave() {
    let served = Served::start(Network::Unix, Routes::default()).await;
    for _ in 0..3 {
        let channel = served.channel().await;
        let status = health_of(channel, "plugin").await;
        assert_eq!(status.expect("health check"), ServingStatus::Serving);
    }
}

#[tokio::test]
async fn a_request_above_four_mebibytes_reaches_a_route_with_raised_limits() {
    let plugin = TestPlugin::default();
    let served = Served::start(Network::Unix, routes_with_raised_limits(plugin.clone())).await;
    base_client(served.channel().await)
        .set_config(SetConfigRequest {
            msgpack_config: vec![0x90; LARGE_PAYLOAD],
            nomad_config: None,
            plugin_api_version: "0.1.0".to_owned(),
        })
        .await
        .expect("5 MiB SetConfig accepted");
    assert_eq!(plugin.last_config_len.load(Ordering::SeqCst), LARGE_PAYLOAD);
}

#[tokio::test]
async fn the_same_request_fails_without_raised_limits() {
    // The control for the test above: tonic's default limit really rejects the payload.
    let plugin = TestPlugin::default();
    let served = Served::start(
        Network::Unix,
        Routes::new(BasePluginServer::new(plugin.clone())),
    )
    .await;
    let result = base_client(served.channel().await)
        .set_config(SetConfigRequest {
            msgpack_config: vec![0x90; LARGE_PAYLOAD],
            nomad_config: None,
            plugin_api_version: "0.1.0".to_owned(),
        })
        .await;
    assert_eq!(
        result.expect_err("default limit rejects").code(),
        Code::OutOfRange
    );
    assert_eq!(plugin.last_config_len.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn recoverable_errors_keep_their_detail_across_the_wire() {
    let served = Served::start(
        Network::Unix,
        routes_with_raised_limits(TestPlugin::default()),
    )
    .await;
    let mut client = base_client(served.channel().await);
    let request = |config: &[u8]| SetConfigRequest {
        msgpack_config: config.to_vec(),
        nomad_config: None,
        plugin_api_version: "0.1.0".to_owned(),
    };

    let recoverable = client
        .set_config(request(b"recoverable"))
        .await
        .expect_err("fails");
    assert_eq!(recoverable.code(), Code::Unavailable);
    assert_eq!(recoverable.message(), "try again later");
    assert!(status::is_recoverable(&recoverable));

    let fatal = client
        .set_config(request(b"fatal"))
        .await
        .expect_err("fails");
    assert_eq!(fatal.code(), Code::InvalidArgument);
    assert!(!status::is_recoverable(&fatal));
}
