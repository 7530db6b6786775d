//! The same calls over both transports, plaintext and TLS: gRPC and QUIC must behave alike.
//! Certificates are generated here, at test time, with rcgen.

use super::double::FakeControl;
use super::*;
use crate::grpc::{
    ClientSecurity, ServerSecurity, TransportKind, bind_control_with, control_client_with,
};
use crate::tls::{ClientTls, ServerTls};
use floret_core::{Control, ControlError, Fleet, FleetError, Payload, RegisterNode};
use std::path::{Path, PathBuf};

const BOTH: [TransportKind; 2] = [TransportKind::Grpc, TransportKind::Quic];

/// A CA and a server certificate for localhost and 127.0.0.1, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["supernode-1".into()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), client.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
        // A server certificate of this CA that expired in 2021.
        let expired_key = rcgen::KeyPair::generate().unwrap();
        let mut expired = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let expired = expired.signed_by(&expired_key, &issuer).unwrap();
        std::fs::write(dir.path().join("expired.pem"), expired.pem()).unwrap();
        std::fs::write(dir.path().join("expired.key"), expired_key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self) -> ServerSecurity {
        ServerSecurity::Tls(
            ServerTls::from_files(
                &self.path("server.pem"),
                &self.path("server.key"),
                Some(&self.path("ca.crt")),
            )
            .unwrap(),
        )
    }

    fn client(&self) -> ClientSecurity {
        ClientSecurity::Tls(ClientTls::from_root_certificates(&self.path("ca.crt")).unwrap())
    }
}

fn server_options(security: ServerSecurity) -> ServerOptions {
    ServerOptions {
        security,
        quic: true,
        ..ServerOptions::default()
    }
}

fn client_options(transport: TransportKind, security: ClientSecurity) -> ClientOptions {
    ClientOptions {
        transport,
        security,
        connect_timeout: Duration::from_secs(2),
        ..impatient()
    }
}

async fn register(client: &FleetClient) -> Result<u64, FleetError> {
    client
        .register_node(RegisterNode {
            heartbeat_interval: 30.0,
            ..RegisterNode::default()
        })
        .await
        .map(|r| r.node_id)
}

/// Register, push delivery, a 20 MB model both ways, and deactivate: over `transport`.
async fn fleet_session(addr: SocketAddr, fleet: &double::FakeFleet, options: ClientOptions) {
    let client = client(addr, options);
    let node = register(&client).await.unwrap();
    let mut rx = client.subscribe(node).await.unwrap();
    let instruction = model_message(node, &model(TWENTY_MB));
    fleet.queue(node, instruction.clone());
    let received = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("pushed promptly")
        .expect("stream open");
    assert_eq!(received, instruction);
    assert_eq!(client.transfer_stats().chunks_received, TWENTY_MB_CHUNKS);
    let reply = instruction.reply(Payload::Content(model(TWENTY_MB)));
    client
        .push_messages(node, vec![reply.clone()])
        .await
        .unwrap();
    assert!(fleet.wait_pushed(1).await.contains(&(node, reply)));
    client.heartbeat(node, 30.0).await.unwrap();
    client.deactivate_node(node).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_session_works_alike_over_grpc_and_quic_in_plaintext_mode() {
    let (fleet, server) = fleet_server(server_options(ServerSecurity::Insecure)).await;
    assert!(server.serves_quic());
    for transport in BOTH {
        fleet_session(
            server.local_addr(),
            &fleet,
            client_options(transport, ClientSecurity::Insecure),
        )
        .await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_session_works_alike_over_grpc_and_quic_with_tls() {
    let pki = Pki::new();
    let (fleet, server) = fleet_server(server_options(pki.server())).await;
    for transport in BOTH {
        fleet_session(
            server.local_addr(),
            &fleet,
            client_options(transport, pki.client()),
        )
        .await;
    }
    server.shutdown().await;
}

async fn control_server(security: ServerSecurity) -> (Arc<FakeControl>, Server) {
    let control = Arc::new(FakeControl::default());
    let server = bind_control_with(localhost(), control.clone(), server_options(security))
        .await
        .unwrap();
    (control, server)
}

#[tokio::test]
async fn control_calls_and_event_streams_work_over_both_transports_with_tls() {
    let pki = Pki::new();
    let (control, server) = control_server(pki.server()).await;
    for transport in BOTH {
        let client = control_client_with(
            &server.local_addr().to_string(),
            client_options(transport, pki.client()),
        )
        .await
        .unwrap();
        let run_id = client.start_run(control::start_request()).await.unwrap();
        let mut follow = client.stream_events(run_id, true).await.unwrap();
        control.emit(
            run_id,
            floret_core::RunEvent::Log(format!("over {transport}")),
        );
        assert_eq!(
            follow.recv().await,
            Some(floret_core::RunEvent::Log(format!("over {transport}")))
        );
        control.finish(run_id);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), follow.recv()).await,
            Ok(None)
        );
        assert_eq!(client.get_run(99).await, Err(ControlError::UnknownRun(99)));
    }
    server.shutdown().await;
}

/// The error a `flwr` command would print when connecting with `security`.
async fn connect_error(
    server: &Server,
    transport: TransportKind,
    security: ClientSecurity,
) -> String {
    match control_client_with(
        &server.local_addr().to_string(),
        client_options(transport, security),
    )
    .await
    {
        Ok(_) => panic!("connected over {transport}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_wrong_ca_is_refused_with_a_clear_error_over_both_transports() {
    let (pki, other) = (Pki::new(), Pki::new());
    let (_control, server) = control_server(pki.server()).await;
    for transport in BOTH {
        let e = connect_error(&server, transport, other.client()).await;
        assert!(
            e.contains("not signed by the CA in the root certificates"),
            "{transport}: {e}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn no_silent_downgrade_between_plaintext_and_tls() {
    let pki = Pki::new();
    // A plaintext gRPC client cannot talk to a TLS server...
    let (_control, tls_server) = control_server(pki.server()).await;
    let client = control_client_with(
        &tls_server.local_addr().to_string(),
        client_options(TransportKind::Grpc, ClientSecurity::Insecure),
    )
    .await;
    if let Ok(client) = client {
        assert!(matches!(
            client.get_run(1).await,
            Err(ControlError::Unavailable(_))
        ));
    }
    // ...a TLS client refuses a plaintext one...
    let (_control, plain_server) = control_server(ServerSecurity::Insecure).await;
    let e = connect_error(&plain_server, TransportKind::Grpc, pki.client()).await;
    assert!(e.contains("did not answer with TLS"), "{e}");
    // ...and over QUIC a verifying client refuses the ephemeral certificate of an
    // --insecure server.
    let e = connect_error(&plain_server, TransportKind::Quic, pki.client()).await;
    assert!(e.contains("not signed by the CA"), "{e}");
    tls_server.shutdown().await;
    plain_server.shutdown().await;
}

#[tokio::test]
async fn bad_certificate_files_are_named_with_the_fix() {
    let pki = Pki::new();
    let other = Pki::new();
    let missing = Path::new("/nonexistent/server.pem");
    let e = ServerTls::from_files(missing, &pki.path("server.key"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/server.pem") && e.contains("cannot read"),
        "{e}"
    );
    // A key given as the certificate.
    let e = ServerTls::from_files(&pki.path("server.key"), &pki.path("server.key"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no PEM certificate"), "{e}");
    // The key of another certificate.
    let e = ServerTls::from_files(&pki.path("server.pem"), &other.path("server.key"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not belong to the certificate"), "{e}");
    // A certificate of another CA.
    let e = ServerTls::from_files(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        Some(&other.path("ca.crt")),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not signed by this CA"), "{e}");
    // An expired certificate.
    let e = ServerTls::from_files(
        &pki.path("expired.pem"),
        &pki.path("expired.key"),
        Some(&pki.path("ca.crt")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("it has expired") && e.contains("expired.pem"),
        "{e}"
    );
    // Root certificates that are not PEM.
    std::fs::write(pki.path("garbage.crt"), "not a certificate").unwrap();
    let e = ClientTls::from_root_certificates(&pki.path("garbage.crt"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no PEM certificate"), "{e}");
}

#[tokio::test]
async fn quic_finds_no_server_where_only_tcp_listens() {
    let (_fleet, server) = fleet_server(ServerOptions::default()).await;
    assert!(!server.serves_quic());
    let client = client(
        server.local_addr(),
        ClientOptions {
            transport: TransportKind::Quic,
            connect_timeout: Duration::from_millis(500),
            transfer_patience: Duration::from_secs(1),
            ..impatient()
        },
    );
    match register(&client).await {
        Err(FleetError::Unavailable(m)) => assert!(m.contains("no QUIC answer"), "{m}"),
        other => panic!("{other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_of_the_ca() {
    let pki = Pki::new();
    let ServerSecurity::Tls(tls) = pki.server() else {
        unreachable!()
    };
    let mutual = tls
        .require_client_certificates(&pki.path("ca.crt"))
        .unwrap();
    let (fleet, server) = fleet_server(server_options(ServerSecurity::Tls(mutual))).await;
    for transport in BOTH {
        // Without a client certificate: refused, and the error says what is missing.
        let anonymous = client(server.local_addr(), client_options(transport, pki.client()));
        match register(&anonymous).await {
            Err(FleetError::Unavailable(m)) => {
                // QUIC always reports the handshake alert; over TCP the alert may lose the
                // race with the connection's close, seen as a closed or broken stream.
                let tcp_closed = m.contains("connection closed") || m.contains("broken pipe");
                assert!(
                    m.contains("requires a client certificate")
                        || (transport == TransportKind::Grpc && tcp_closed),
                    "{transport}: {m}"
                );
            }
            other => panic!("{transport}: {other:?}"),
        }
        // With one: a whole session.
        let ClientSecurity::Tls(roots) = pki.client() else {
            unreachable!()
        };
        let identified = roots
            .with_client_certificate(&pki.path("client.pem"), &pki.path("client.key"))
            .unwrap();
        fleet_session(
            server.local_addr(),
            &fleet,
            client_options(transport, ClientSecurity::Tls(identified)),
        )
        .await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_appio_apis_work_over_quic_too() {
    use super::appio_double::{FakeServerAppIo, TOKEN, echo, run_context};
    use crate::grpc::{bind_serverappio_with, serverappio_client_with};
    use floret_core::{AppOutcome, ServerAppIo};
    let appio = Arc::new(FakeServerAppIo::new(run_context(), vec![3], echo));
    let server = bind_serverappio_with(
        localhost(),
        appio.clone(),
        server_options(ServerSecurity::Insecure),
    )
    .await
    .unwrap();
    let client = serverappio_client_with(
        &server.local_addr().to_string(),
        client_options(TransportKind::Quic, ClientSecurity::Insecure),
    )
    .unwrap();
    assert_eq!(client.context(TOKEN).await.unwrap(), run_context());
    // A model large enough to travel as chunks, out and back.
    let message = model_message(3, &model(TWENTY_MB));
    let ids = client.send(TOKEN, vec![message]).await.unwrap();
    let replies = client.pull(TOKEN, &ids).await.unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].payload, echo(&appio.sent()[0]));
    client.finish(TOKEN, AppOutcome::Completed).await.unwrap();
    assert_eq!(appio.outcome(), Some(AppOutcome::Completed));
    server.shutdown().await;
}

/// Admits one node key, for any node id.
struct OneKey(bytes::Bytes);

impl floret_core::NodeAuthority for OneKey {
    fn admits(&self, public_key: &[u8]) -> bool {
        public_key == &self.0[..]
    }
    fn owns(&self, _: u64, public_key: &[u8]) -> bool {
        self.admits(public_key)
    }
}

/// How many signatures the SuperLink verified in full (each spends a nonce) for a node
/// that registers and then beats 4 times over `transport`.
async fn signatures_verified(
    transport: TransportKind,
    server: ServerSecurity,
    client_security: ClientSecurity,
) -> usize {
    let key = crate::auth::NodeKeyPair::generate().unwrap();
    let auth = crate::grpc::NodeAuth::new(Arc::new(OneKey(key.public_key().spki_der().clone())));
    let verifier = auth.verifier.clone();
    let options = ServerOptions {
        node_auth: Some(auth),
        ..server_options(server)
    };
    let (_fleet, server) = fleet_server(options).await;
    let c = client(
        server.local_addr(),
        ClientOptions {
            node_key: Some(key),
            ..client_options(transport, client_security)
        },
    );
    let node = register(&c).await.unwrap();
    for _ in 0..4 {
        c.heartbeat(node, 30.0).await.unwrap();
    }
    server.shutdown().await;
    verifier.remembered()
}

/// D3: a P-384 verification costs about a millisecond, so 10,000 heart-beating nodes cost a
/// third of a core if each beat is verified in full. On an encrypted connection the node
/// signs in once; in plaintext (tests only: node auth needs TLS) every call is verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_signs_in_once_per_encrypted_connection_and_every_call_in_plaintext() {
    let pki = Pki::new();
    for transport in BOTH {
        assert_eq!(
            signatures_verified(transport, pki.server(), pki.client()).await,
            1,
            "{transport:?} with TLS"
        );
    }
    assert_eq!(
        signatures_verified(
            TransportKind::Grpc,
            ServerSecurity::Insecure,
            ClientSecurity::Insecure
        )
        .await,
        5,
        "plaintext gRPC"
    );
}
