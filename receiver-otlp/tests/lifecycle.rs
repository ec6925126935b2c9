//! Start, shutdown and TLS: binding happens only at start, shutdown drains what is in flight.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use pipeline_core::{Lifecycle, Signal};
use prost::Message;

#[tokio::test]
async fn shutdown_without_start_and_double_start() {
    let h = build(BOTH, &Signal::ALL);
    h.receiver.shutdown().await.expect("shutdown before start");
    assert!(h.receiver.grpc_addr().is_none());
    h.receiver.start().await.expect("start");
    let e = h.receiver.start().await.expect_err("second start");
    assert!(e.to_string().contains("already started"), "{e}");
    h.receiver.shutdown().await.expect("shutdown");
    h.receiver.shutdown().await.expect("second shutdown");
    // A stopped receiver can be started again (config reload reuses nothing, but it is cheap
    // to allow).
    h.receiver.start().await.expect("restart");
    let r = post(
        h.http(),
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        traces(1).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, http::StatusCode::OK);
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn host_names_resolve_only_at_start() {
    let h = build(
        "protocols: {grpc: {endpoint: 'no-such-host.invalid:4317'}}",
        &Signal::ALL,
    );
    let e = h.receiver.start().await.expect_err("unresolvable");
    assert!(e.to_string().contains("no-such-host.invalid:4317"), "{e}");
}

#[tokio::test]
async fn bind_errors_name_the_address_and_release_the_other_port() {
    let first = start(BOTH, &Signal::ALL).await;
    let taken = first.http();
    let grpc_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let h = build(
        &format!(
            "protocols: {{grpc: {{endpoint: '127.0.0.1:{grpc_port}'}}, http: {{endpoint: '{taken}'}}}}"
        ),
        &Signal::ALL,
    );
    let e = h.receiver.start().await.expect_err("port in use");
    assert!(e.to_string().contains(&taken.to_string()), "{e}");
    // The gRPC port bound before the failure was let go.
    std::net::TcpListener::bind(("127.0.0.1", grpc_port)).expect("gRPC port released");
    first.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn shutdown_waits_for_requests_in_flight_then_refuses_new_ones() {
    let h = Arc::new(start(BOTH, &Signal::ALL).await);
    h.sink.delay_ms.store(400, Ordering::SeqCst);
    let grpc_addr = h.grpc();
    let http_addr = h.http();

    let mut client = TraceServiceClient::new(channel(grpc_addr).await);
    let grpc_call = tokio::spawn(async move { client.export(traces(5)).await });
    h.sink.entered.notified().await;
    let http_call = tokio::spawn(async move {
        post(
            http_addr,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            traces(6).encode_to_vec(),
        )
        .await
        .status
    });
    h.sink.entered.notified().await;

    let began = Instant::now();
    h.receiver.shutdown().await.expect("shutdown");
    assert!(
        began.elapsed() >= Duration::from_millis(200),
        "shutdown did not wait"
    );
    assert!(
        grpc_call.await.expect("join").is_ok(),
        "in-flight gRPC request completed"
    );
    assert_eq!(http_call.await.expect("join"), http::StatusCode::OK);
    let items: usize = h.sink.take().iter().map(|p| p.items()).sum();
    assert_eq!(items, 11);

    // The listeners are gone.
    assert!(tokio::net::TcpStream::connect(grpc_addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(http_addr).await.is_err());
}

#[tokio::test]
async fn shutdown_is_bounded_when_the_pipeline_hangs() {
    let h = start(BOTH, &Signal::ALL).await;
    h.sink.delay_ms.store(60_000, Ordering::SeqCst);
    let addr = h.http();
    let _stuck = tokio::spawn(async move {
        post(
            addr,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            traces(1).encode_to_vec(),
        )
        .await
    });
    h.sink.entered.notified().await;
    let began = Instant::now();
    h.receiver.shutdown().await.expect("shutdown");
    let took = began.elapsed();
    assert!(
        took >= receiver_otlp::SHUTDOWN_GRACE - Duration::from_millis(100),
        "{took:?}"
    );
    assert!(
        took < receiver_otlp::SHUTDOWN_GRACE + Duration::from_secs(2),
        "{took:?}"
    );
}

fn self_signed() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

#[tokio::test]
async fn tls_on_both_transports() {
    let (cert, key) = self_signed();
    let yaml = format!(
        "protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n    tls: {{cert_pem: {c:?}, key_pem: {k:?}}}\n  http:\n    endpoint: 127.0.0.1:0\n    tls: {{cert_pem: {c:?}, key_pem: {k:?}}}\n",
        c = cert,
        k = key
    );
    let h = start(&yaml, &Signal::ALL).await;

    // gRPC over TLS with the prost client.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert))
        .domain_name("localhost");
    let ch =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", h.grpc().port()))
            .expect("uri")
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
            .expect("TLS connect");
    let req = traces(3);
    TraceServiceClient::new(ch)
        .export(req.clone())
        .await
        .expect("export over TLS");

    // HTTP/1.1 over TLS.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut cert.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(h.http()).await.expect("tcp");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("http1 handshake");
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            http::Request::post("/v1/traces")
                .header("host", "localhost")
                .header("content-type", "application/x-protobuf")
                .body(Full::new(Bytes::from(req.encode_to_vec())))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), http::StatusCode::OK);
    let _ = resp.into_body().collect().await;

    let mut got = h.sink.take();
    assert_eq!(got.len(), 2);
    for p in &mut got {
        assert_eq!(**p.traces().expect("decode"), req);
    }

    // Plain-text clients are not served on a TLS port.
    let plain = TraceServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", h.grpc().port()))
            .expect("uri")
            .connect_lazy(),
    )
    .export(traces(1))
    .await;
    assert!(plain.is_err());
    h.receiver.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn missing_certificate_files_fail_start_not_validation() {
    let h = build(
        "protocols: {http: {endpoint: '127.0.0.1:0', tls: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}}}",
        &Signal::ALL,
    );
    let e = h.receiver.start().await.expect_err("no cert file");
    assert!(e.to_string().contains("/nonexistent/c.pem"), "{e}");
}

#[tokio::test]
async fn the_factory_builds_without_binding() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let addr = busy.local_addr().expect("addr");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&format!("protocols: {{http: {{endpoint: '{addr}'}}}}"))
            .expect("yaml");
    assert_eq!(receiver_otlp::FACTORY.type_name, "otlp");
    assert_eq!(receiver_otlp::FACTORY.signals, &Signal::ALL);
    let cfg = (receiver_otlp::FACTORY.parse)(&yaml, "receivers::otlp").expect("parse");
    let sink: Arc<dyn pipeline_core::Consumer> = Arc::new(TestConsumer::default());
    let receiver = cfg
        .build(pipeline_core::ReceiverContext {
            id: pipeline_core::ComponentId::parse("otlp").expect("id"),
            consumers: [(Signal::Traces, sink)].into_iter().collect(),
            telemetry: pipeline_core::Telemetry::default(),
        })
        .expect("build does not touch the busy port");
    let e = receiver.start().await.expect_err("port is busy");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    receiver
        .shutdown()
        .await
        .expect("shutdown after failed start");

    let e = (receiver_otlp::FACTORY.parse)(&serde_yaml::Value::Null, "receivers::otlp")
        .err()
        .expect("no protocols");
    assert_eq!(
        e.to_string(),
        "receivers::otlp: must specify at least one protocol when using the OTLP receiver"
    );
}
