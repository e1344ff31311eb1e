//! TLS and mutual TLS on a real server, with certificates made in the test
//! (rcgen): nothing checked in, nothing that expires.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use common::{binary::serve, call_probe, TestServer};
use errmap::{ErrorCode, ErrorStatusExt as _};
use errmap_server::{server::ServerConfig, tls::TlsConfig};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, SanType, SerialNumber,
};
use tokio_rustls::rustls::{self, pki_types::CertificateDer, RootCertStore};
use tonic::{
    transport::{Certificate as PemCert, Channel, ClientTlsConfig, Identity},
    Request,
};

/// A CA and what it signs.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf certificate for `names` (and 127.0.0.1), with `serial`.
    fn sign(&self, common_name: &str, names: &[&str], serial: u64) -> (String, String) {
        self.sign_for(common_name, names, serial, true)
    }

    /// A leaf certificate for `names`, and 127.0.0.1 if `loopback`.
    fn sign_for(
        &self,
        common_name: &str,
        names: &[&str],
        serial: u64,
        loopback: bool,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if loopback {
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// A directory of PEM files for one test.
fn dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("errmap-tls-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(PemCert::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// The serial of the certificate the server presents to a new connection.
async fn served_serial(addr: std::net::SocketAddr, ca: &Ca) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let der: CertificateDer<'_> = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    cert.raw_serial().to_vec()
}

/// TLS for `localhost` with a certificate `ca` signed, no client
/// certificates asked.
fn server_tls(dir: &Path, ca: &Ca) -> TlsConfig {
    let (cert, key) = ca.sign("server", &["localhost"], 1);
    TlsConfig::from_files(
        write(dir, "cert.pem", &cert),
        write(dir, "key.pem", &key),
        None::<PathBuf>,
    )
    .unwrap()
}

#[tokio::test]
async fn a_tls_call_succeeds_and_a_plaintext_client_fails_cleanly() {
    let dir = dir("basic");
    let ca = Ca::new("test CA");
    let mut config = ServerConfig::default();
    config.tls = Some(server_tls(&dir, &ca));
    let server = TestServer::start(config).await;
    let channel = tls_channel(server.addr, &ca.pem(), None).await.unwrap();
    let answer = call_probe(channel, "Echo", Request::new("over TLS".into()))
        .await
        .unwrap();
    assert_eq!(answer.into_inner(), "over TLS");

    // A plaintext client gets an error, promptly, not a hang.
    let plain = tokio::time::timeout(Duration::from_secs(10), async {
        match Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
        {
            Err(_) => true,
            Ok(channel) => call_probe(channel, "Echo", Request::new("x".into()))
                .await
                .is_err(),
        }
    })
    .await;
    assert_eq!(plain, Ok(true), "plaintext against the TLS port fails");
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_missing_and_foreign_certificates_and_names_the_peer() {
    let dir = dir("mtls");
    let ca = Ca::new("test CA");
    let clients = Ca::new("clients CA");
    let other = Ca::new("another CA");
    let (cert, key) = ca.sign("server", &["localhost"], 1);
    let mut config = ServerConfig::default();
    config.tls = Some(
        TlsConfig::from_files(
            write(&dir, "cert.pem", &cert),
            write(&dir, "key.pem", &key),
            Some(write(&dir, "clients.pem", &clients.pem())),
        )
        .unwrap(),
    );
    let server = TestServer::start(config).await;
    let ask = |identity: Option<(String, String)>| {
        let ca = ca.pem();
        let addr = server.addr;
        async move {
            let identity = identity.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
            let channel = tls_channel(addr, &ca, identity)
                .await
                .map_err(|e| e.to_string())?;
            call_probe(channel, "Peer", Request::new(String::new()))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| s.to_string())
        }
    };
    assert!(ask(None).await.is_err(), "no client certificate");
    assert!(
        ask(Some(other.sign("intruder", &["intruder.example"], 9)))
            .await
            .is_err(),
        "a certificate of another CA"
    );
    let peer = ask(Some(clients.sign("billing", &["billing.internal"], 5)))
        .await
        .expect("the right certificate");
    assert!(peer.contains("CN=billing"), "{peer}");
    assert!(peer.contains("DNS:billing.internal"), "{peer}");
    server.stop().await;
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections_only() {
    let dir = dir("reload");
    let ca = Ca::new("test CA");
    let (cert, key) = ca.sign("server", &["localhost"], 1);
    let cert_file = write(&dir, "cert.pem", &cert);
    let key_file = write(&dir, "key.pem", &key);
    let tls = TlsConfig::from_files(&cert_file, &key_file, None::<PathBuf>).unwrap();
    let mut config = ServerConfig::default();
    config.tls = Some(tls.clone());
    let server = TestServer::start(config).await;
    assert_eq!(served_serial(server.addr, &ca).await, [1]);

    // A call in flight on the old certificate.
    let channel = tls_channel(server.addr, &ca.pem(), None).await.unwrap();
    // Its handler has started (not a sleep: the probe counts it).
    let slow = server
        .start_slow(&channel, 700, 1)
        .await
        .pop()
        .expect("one slow call");

    let (cert, key) = ca.sign("server", &["localhost"], 2);
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    tls.reload().unwrap();
    assert_eq!(served_serial(server.addr, &ca).await, [2]);
    assert_eq!(
        slow.await.unwrap().unwrap().into_inner(),
        "700",
        "the call in flight finishes"
    );

    // A broken reload: a key that does not match, then garbage. Nothing changes.
    let (_, other_key) = ca.sign("server", &["localhost"], 3);
    std::fs::write(&key_file, other_key).unwrap();
    let error = tls.reload().unwrap_err().to_string();
    assert!(error.contains("key.pem"), "{error}");
    std::fs::write(&key_file, "not a key").unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(
        served_serial(server.addr, &ca).await,
        [2],
        "the old certificate stays"
    );
    server.stop().await;
}

#[test]
fn the_binary_serves_tls_reloads_on_sighup_and_the_cli_names_tls_failures() {
    let dir = dir("binary");
    let ca = Ca::new("test CA");
    let (cert, key) = ca.sign("server", &["localhost"], 1);
    let cert_file = write(&dir, "cert.pem", &cert);
    let key_file = write(&dir, "key.pem", &key);
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let mut served = serve(&[
        "--tls-cert",
        cert_file.to_str().unwrap(),
        "--tls-key",
        key_file.to_str().unwrap(),
    ]);
    let addr: std::net::SocketAddr = served.addr.parse().unwrap();
    let url = format!("https://{addr}");
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_errmap"))
            .args(args)
            .env_remove("ERRMAP_TOKEN")
            .output()
            .unwrap()
    };
    let out = cli(&[
        "lookup",
        "21",
        "--server",
        &url,
        "--ca",
        ca_file.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = write(&dir, "other.pem", &Ca::new("another CA").pem());
    let out = cli(&[
        "lookup",
        "21",
        "--server",
        &url,
        "--ca",
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    // Without --ca, the system's roots do not know the test CA either.
    let out = cli(&["lookup", "21", "--server", &url]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not signed by a trusted CA"), "{err}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(served_serial(addr, &ca)), [1]);
    let (cert, key) = ca.sign("server", &["localhost"], 2);
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &served.pid().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rt.block_on(served_serial(addr, &ca)) != [2] {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    served.stop();
}

#[test]
fn the_cli_shows_a_client_certificate_to_a_mutual_tls_server() {
    let dir = dir("cli-mtls");
    let ca = Ca::new("test CA");
    let clients = Ca::new("clients CA");
    let (cert, key) = ca.sign("server", &["localhost"], 1);
    let (client_cert, client_key) = clients.sign("cli", &["cli.internal"], 4);
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let client_cert = write(&dir, "client.pem", &client_cert);
    let client_key = write(&dir, "client.key", &client_key);
    let mut served = serve(&[
        "--tls-cert",
        write(&dir, "cert.pem", &cert).to_str().unwrap(),
        "--tls-key",
        write(&dir, "key.pem", &key).to_str().unwrap(),
        "--tls-client-ca",
        write(&dir, "clients.pem", &clients.pem()).to_str().unwrap(),
    ]);
    let url = format!("https://{}", served.addr);
    let cli = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_errmap"))
            .args([
                "lookup",
                "21",
                "--server",
                &url,
                "--ca",
                ca_file.to_str().unwrap(),
            ])
            .args(extra)
            .env_remove("ERRMAP_TOKEN")
            .output()
            .unwrap()
    };
    let out = cli(&[]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client certificate"), "{err}");
    let out = cli(&[
        "--cert",
        client_cert.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    served.stop();
}

#[test]
fn the_cli_names_a_certificate_for_another_host() {
    let dir = dir("cli-name");
    let ca = Ca::new("test CA");
    // Valid for another name only, not for 127.0.0.1.
    let (cert, key) = ca.sign_for("server", &["elsewhere.example"], 1, false);
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let mut served = serve(&[
        "--tls-cert",
        write(&dir, "cert.pem", &cert).to_str().unwrap(),
        "--tls-key",
        write(&dir, "key.pem", &key).to_str().unwrap(),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_errmap"))
        .args([
            "lookup",
            "21",
            "--server",
            &format!("https://{}", served.addr),
        ])
        .args(["--ca", ca_file.to_str().unwrap()])
        .env_remove("ERRMAP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not valid for the host name"), "{err}");
    served.stop();
}

/// Issue 27: a Connect call over TLS (HTTP/1.1 by ALPN), answered as on
/// plaintext: the miss is Connect's 404 with its catalog details.
#[tokio::test]
async fn a_connect_call_over_tls_gets_connects_error() {
    let dir = dir("connect");
    let ca = Ca::new("test CA");
    let mut config = ServerConfig::default();
    config.tls = Some(server_tls(&dir, &ca));
    let server = TestServer::start(config).await;
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("/errmap.v1.ErrorCatalog/GetError")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("connect-protocol-version", "1")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"code": 48}"#,
        )))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), send.send_request(request))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["details"][0]["type"], "google.rpc.ErrorInfo");
    server.stop().await;
}

/// Issue 28: with mutual TLS on the gRPC port, probes that speak no TLS
/// (Kubernetes' gRPC probes) ask `--health-addr`, a plaintext port that
/// serves health alone. At SIGTERM it says NOT_SERVING at once, while the
/// gRPC port still takes calls for `--drain-delay`; then the process exits 0.
#[test]
fn probes_ask_a_plaintext_health_port_that_turns_not_serving_at_sigterm() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let dir = dir("health-port");
    let ca = Ca::new("test CA");
    let clients = Ca::new("clients CA");
    let (client_cert, client_key) = clients.sign("probe", &["probe.internal"], 5);
    // Writes cert.pem and key.pem.
    server_tls(&dir, &ca);
    let mut served = serve(&[
        "--tls-cert",
        dir.join("cert.pem").to_str().unwrap(),
        "--tls-key",
        dir.join("key.pem").to_str().unwrap(),
        "--tls-client-ca",
        write(&dir, "clients.pem", &clients.pem()).to_str().unwrap(),
        "--health-addr",
        "127.0.0.1:0",
        "--drain-delay",
        "2s",
    ]);
    let health_addr = served.next_stdout_line();
    assert!(health_addr.starts_with("127.0.0.1:"), "{health_addr}");
    let addr: std::net::SocketAddr = served.addr.parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let plaintext = Channel::from_shared(format!("http://{health_addr}"))
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let mut probe = HealthClient::new(plaintext.clone());
        let check = |service: &str| HealthCheckRequest {
            service: service.to_owned(),
        };
        for service in ["", "errmap.v1.ErrorCatalog"] {
            let status = probe
                .check(check(service))
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        // Health alone: the lookup is not served here (43), in plaintext
        // or otherwise.
        let lookup = call_lookup(plaintext).await.unwrap_err();
        assert_eq!(lookup.code(), tonic::Code::Unimplemented);
        assert_eq!(
            lookup.error_code(),
            Some(ErrorCode::ApiMethodNotFound),
            "{lookup:?}"
        );
        // The gRPC port wants a client certificate.
        let client_cert = write(&dir, "probe.pem", &client_cert);
        let client_key = write(&dir, "probe.key", &client_key);
        let identity = (
            std::fs::read_to_string(&client_cert).unwrap(),
            std::fs::read_to_string(&client_key).unwrap(),
        );
        let secure = tls_channel(addr, &ca.pem(), Some((&identity.0, &identity.1)))
            .await
            .unwrap();
        call_lookup(secure.clone()).await.unwrap();

        served.sigterm();
        let until = std::time::Instant::now() + Duration::from_secs(2);
        let mut status = ServingStatus::Serving as i32;
        while status != ServingStatus::NotServing as i32 && std::time::Instant::now() < until {
            status = probe
                .check(check("errmap.v1.ErrorCatalog"))
                .await
                .unwrap()
                .into_inner()
                .status;
        }
        assert_eq!(
            status,
            ServingStatus::NotServing as i32,
            "readiness after SIGTERM"
        );
        // Within the drain delay, the gRPC port still answers.
        call_lookup(secure).await.unwrap();
    });
    assert_eq!(served.wait_exit(Duration::from_secs(10)), Some(0));
}

/// A GetError for code 21 on `channel`.
async fn call_lookup(channel: Channel) -> Result<errmap::pb::GetErrorResponse, tonic::Status> {
    errmap::pb::error_catalog_client::ErrorCatalogClient::new(channel)
        .get_error(errmap::pb::GetErrorRequest {
            key: Some(errmap::pb::get_error_request::Key::Code(21)),
            domain: None,
        })
        .await
        .map(tonic::Response::into_inner)
}
