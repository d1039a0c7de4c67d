//! Production behaviour of the webhook binary: certificate rotation (including the `..data` link
//! swap of a mounted Secret), client-certificate verification, SIGTERM draining and metrics.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use support::*;

fn example_state() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples/cluster")
}

fn start(cert: &Path, key: &Path, extra: &[&str]) -> (Webhook, tempfile::TempDir) {
    let unused = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command
        .args(["webhook", "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .arg("--cluster-state")
        .arg(example_state())
        .args(extra);
    let holder = tempfile::tempdir().unwrap();
    (Webhook::spawn(command, unused.path().join("ca.crt"), unused), holder)
}

fn roots(ca_files: &[&Path]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for file in ca_files {
        for certificate in CertificateDer::pem_file_iter(file).unwrap() {
            roots.add(certificate.unwrap()).unwrap();
        }
    }
    roots
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Opens a new TLS connection and returns the leaf certificate the server sent.
fn served_leaf(address: std::net::SocketAddr, ca_files: &[&Path]) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca_files))
        .with_no_client_auth();
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).unwrap();
    }
    connection.peer_certificates().unwrap()[0].to_vec()
}

fn leaf_of(cert_file: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(cert_file).unwrap().next().unwrap().unwrap().to_vec()
}

/// Builds a client that trusts several CAs, so that it accepts the serving certificate before and after a rotation.
fn client_trusting(ca_files: &[&Path]) -> reqwest::Client {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca_files))
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(config).no_proxy().build().unwrap()
}

fn vm_review() -> Value {
    review(
        "vm.cluster.gke.io",
        "VirtualMachine",
        "CREATE",
        serde_json::json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {}}),
        Value::Null,
    )
}

/// Sends reviews in a loop until `stop`, counting successes and failures.
fn spawn_load(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let body = serde_json::to_vec(&vm_review()).unwrap();
        let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
        while !stop.load(Ordering::SeqCst) {
            let result = client.post(&url).header("Content-Type", "application/json").body(body.clone()).send().await;
            match result {
                Ok(response) if response.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                _ => failed.fetch_add(1, Ordering::SeqCst),
            };
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok.into_inner(), failed.into_inner())
    })
}

async fn wait_until_served(address: std::net::SocketAddr, ca_files: &[&Path], leaf: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_leaf(address, ca_files) != leaf {
        assert!(Instant::now() < deadline, "the new certificate was not served within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lays out certificates as a mounted Secret: `..data` links to a timestamped folder.
fn secret_layout(mount: &Path, generation: &str, source: &Path) {
    let folder = mount.join(format!("..{generation}"));
    std::fs::create_dir_all(&folder).unwrap();
    for name in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(source.join(name), folder.join(name)).unwrap();
    }
    let temporary = mount.join("..data_tmp");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(format!("..{generation}"), &temporary).unwrap();
    // rename(2) replaces the old link atomically, as the kubelet does.
    std::fs::rename(&temporary, mount.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = mount.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

#[tokio::test]
async fn rotation_through_data_link_swap_under_load() {
    let (first, second, mount) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_certs(first.path());
    make_certs(second.path());
    secret_layout(mount.path(), "2026_12_01", first.path());
    let (webhook, _holder) = start(&mount.path().join("tls.crt"), &mount.path().join("tls.key"), &[]);
    let cas = [first.path().join("ca.crt"), second.path().join("ca.crt")];
    let ca_files: Vec<&Path> = cas.iter().map(PathBuf::as_path).collect();
    assert_eq!(served_leaf(webhook.listen, &ca_files), leaf_of(&first.path().join("tls.crt")));

    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(client_trusting(&ca_files), webhook.url("/validate"), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    secret_layout(mount.path(), "2026_12_02", second.path());
    wait_until_served(webhook.listen, &ca_files, &leaf_of(&second.path().join("tls.crt"))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 10, "only {ok} requests succeeded");
    assert_eq!(failed, 0, "{failed} requests failed during the rotation");

    let metrics = client(&first.path().join("ca.crt"), Tls::V13)
        .get(format!("http://{}/metrics", webhook.health))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vmruntime_gate_certificate_reloads_total 1"), "{metrics}");
}

#[tokio::test]
async fn broken_pair_keeps_old_certificate() {
    let (first, second, files) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_certs(first.path());
    make_certs(second.path());
    let (cert, key) = (files.path().join("tls.crt"), files.path().join("tls.key"));
    std::fs::copy(first.path().join("tls.crt"), &cert).unwrap();
    std::fs::copy(first.path().join("tls.key"), &key).unwrap();
    let (webhook, _holder) = start(&cert, &key, &["--certificate-poll-interval", "200ms"]);
    let ca_files = [first.path().join("ca.crt"), second.path().join("ca.crt")];
    let ca_files: Vec<&Path> = ca_files.iter().map(PathBuf::as_path).collect();

    // A certificate whose key does not match is refused and the old pair keeps serving.
    std::fs::copy(second.path().join("tls.crt"), &cert).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(served_leaf(webhook.listen, &ca_files), leaf_of(&first.path().join("tls.crt")));
    let logged =
        webhook.logs.lock().unwrap().iter().any(|line| line.contains("Reloading the serving certificate failed"));
    assert!(logged, "no error logged: {}", webhook.log_tail(10));

    // Once the matching key arrives, the new pair is served.
    std::fs::copy(second.path().join("tls.key"), &key).unwrap();
    wait_until_served(webhook.listen, &ca_files, &leaf_of(&second.path().join("tls.crt"))).await;
}

/// Generates a CA and a client certificate signed by it, in PEM.
fn client_identity(folder: &Path) -> (PathBuf, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["kube-apiserver".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let certificate = params.signed_by(&key, &issuer).unwrap();
    let ca_file = folder.join("client-ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (ca_file, vec![certificate.der().clone()], PrivateKeyDer::try_from(key.serialize_der()).unwrap())
}

fn mtls_client(
    ca_file: &Path,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> reqwest::Client {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&[ca_file]));
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder().tls_backend_preconfigured(config).no_proxy().build().unwrap()
}

#[tokio::test]
async fn client_certificates_verified() {
    let (server, trusted, other) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_certs(server.path());
    let (client_ca, chain, key) = client_identity(trusted.path());
    let (_, other_chain, other_key) = client_identity(other.path());
    let (webhook, _holder) = start(
        &server.path().join("tls.crt"),
        &server.path().join("tls.key"),
        &["--client-ca-file", client_ca.to_str().unwrap()],
    );
    let server_ca = server.path().join("ca.crt");
    let body = serde_json::to_vec(&vm_review()).unwrap();
    let send = |client: reqwest::Client| {
        let (url, body) = (webhook.url("/validate"), body.clone());
        async move { client.post(url).header("Content-Type", "application/json").body(body).send().await }
    };

    assert!(send(mtls_client(&server_ca, None)).await.is_err(), "a client without a certificate was accepted");
    assert!(send(mtls_client(&server_ca, Some((other_chain, other_key)))).await.is_err(), "a foreign CA was accepted");
    let response = send(mtls_client(&server_ca, Some((chain, key)))).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let (mut webhook, _holder) = start(&certs.path().join("tls.crt"), &certs.path().join("tls.key"), &[]);
    let ca = certs.path().join("ca.crt");

    // An HTTP/1.1 request whose body arrives in two parts, with SIGTERM in between.
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&[&ca]))
        .with_no_client_auth();
    let connection =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let socket = std::net::TcpStream::connect(webhook.listen).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let body = serde_json::to_vec(&vm_review()).unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..10]).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let status = Command::new("kill").args(["-TERM", &webhook.pid().to_string()]).status().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::net::TcpStream::connect(webhook.listen).is_err(), "new connections are still accepted");

    stream.write_all(&body[10..]).unwrap();
    stream.flush().unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"allowed\":true"), "{response}");

    let exit = webhook.wait(Duration::from_secs(10)).expect("webhook exits after the drain");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn metrics_count_requests() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let (webhook, _holder) = start(&certs.path().join("tls.crt"), &certs.path().join("tls.key"), &[]);
    let https = client(&certs.path().join("ca.crt"), Tls::V13);
    let metrics_url = format!("http://{}/metrics", webhook.health);
    let counter = |text: &str| -> u64 {
        let prefix = "vmruntime_gate_admission_requests_total{endpoint=\"validate\",kind=\"VirtualMachine\",operation=\"CREATE\",result=\"allowed\"} ";
        text.lines().find_map(|line| line.strip_prefix(prefix)).map_or(0, |value| value.trim().parse().unwrap())
    };
    let before = counter(&https.get(&metrics_url).send().await.unwrap().text().await.unwrap());
    for _ in 0..3 {
        admit(&https, &webhook.url("/validate"), &vm_review()).await;
    }
    let text = https.get(&metrics_url).send().await.unwrap().text().await.unwrap();
    assert_eq!(counter(&text), before + 3, "{text}");
    assert!(text.contains("vmruntime_gate_cached_objects{kind=\"VirtualMachine.vm.cluster.gke.io\"} 1"), "{text}");
    assert!(text.contains("vmruntime_gate_admission_latency_seconds_bucket"), "{text}");
}

#[tokio::test]
async fn certificate_chain_served_whole() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let folder = tempfile::tempdir().unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let intermediate_key = KeyPair::generate().unwrap();
    let mut intermediate_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    intermediate_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let intermediate = intermediate_params.signed_by(&intermediate_key, &root_issuer).unwrap();
    let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &intermediate_issuer)
        .unwrap();

    let (cert, key, ca) =
        (folder.path().join("tls.crt"), folder.path().join("tls.key"), folder.path().join("root.crt"));
    std::fs::write(&cert, format!("{}{}", leaf.pem(), intermediate.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&ca, root.pem()).unwrap();
    let (webhook, _holder) = start(&cert, &key, &[]);

    // The client trusts only the root, so the handshake needs the intermediate from the server.
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&[&ca]))
        .with_no_client_auth();
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut socket = std::net::TcpStream::connect(webhook.listen).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).unwrap();
    }
    let chain = connection.peer_certificates().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1].as_ref(), intermediate.der().as_ref());
}
