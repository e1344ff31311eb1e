//! JWT key sets and their rotation on SIGHUP, and the CLI as a client of a
//! protected server, against the real `errmap serve`.

mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::binary::{serve, Served};
use errmap::{ErrorCode, ErrorStatusExt};
use jsonwebtoken::{
    jwk::{Jwk, JwkSet},
    Algorithm, EncodingKey, Header,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(name),
    )
    .unwrap()
}

/// The RSA (`kid` "rsa-1") or EC (`kid` "ec-1") signing key of the fixtures.
fn signing_key(kid: &str) -> (EncodingKey, Algorithm) {
    if kid.starts_with("rsa") {
        (
            EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap(),
            Algorithm::RS256,
        )
    } else {
        (
            EncodingKey::from_ec_pem(&fixture("ec_private.pem")).unwrap(),
            Algorithm::ES256,
        )
    }
}

/// A JSON Web Key Set with the public keys of `kids`.
fn jwks(kids: &[&str]) -> String {
    let keys = kids
        .iter()
        .map(|kid| {
            let (key, alg) = signing_key(kid);
            let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

fn token(kid: Option<&str>, signer: &str) -> String {
    let (key, alg) = signing_key(signer);
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "t", "aud": "errmap", "exp": now + 600, "iat": now}),
        &key,
    )
    .unwrap()
}

/// GetError(21) with `token`; the catalog code of the refusal, if any.
fn call(served: &Served, token: &str) -> Option<ErrorCode> {
    let url = served.url();
    let token = token.to_owned();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let mut client = common::catalog_client(url).await.unwrap();
            let mut request = tonic::Request::new(errmap::pb::GetErrorRequest {
                key: Some(errmap::pb::get_error_request::Key::Code(21)),
                domain: None,
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            match client.get_error(request).await {
                Ok(_) => None,
                Err(status) => Some(status.error_code().expect("a catalog code")),
            }
        })
}

fn sighup(served: &Served) {
    assert!(Command::new("kill")
        .args(["-HUP", &served.pid().to_string()])
        .status()
        .unwrap()
        .success());
}

/// Waits (at most 10 s) until the server's log holds `line`.
fn wait_for_log(served: &Served, line: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&served.stderr()).contains(line) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {line:?} in the log within 10 s:\n{}",
            String::from_utf8_lossy(&served.stderr())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most 10 s) until `call` gives `want`.
fn eventually(served: &Served, token: &str, want: Option<ErrorCode>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = call(served, token);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_key_set_chooses_the_key_by_kid_and_rotates_on_sighup() {
    let dir = std::env::temp_dir().join(format!("errmap-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, jwks(&["rsa-1"])).unwrap();
    let mut served = serve(&[
        "--auth-jwks-file",
        file.to_str().unwrap(),
        "--auth-audience",
        "errmap",
    ]);
    assert_eq!(call(&served, &token(Some("rsa-1"), "rsa-1")), None);
    // With a single key, a token without kid uses it.
    assert_eq!(call(&served, &token(None, "rsa-1")), None);
    // A kid the set does not have is 10.
    let new = token(Some("ec-1"), "ec-1");
    assert_eq!(call(&served, &new), Some(ErrorCode::AuthInvalidToken));

    // The new key is published, then SIGHUP: the new kid is accepted.
    std::fs::write(&file, jwks(&["rsa-1", "ec-1"])).unwrap();
    sighup(&served);
    eventually(&served, &new, None);
    assert_eq!(call(&served, &token(Some("rsa-1"), "rsa-1")), None);
    // Several keys: a token without kid is refused.
    assert_eq!(
        call(&served, &token(None, "rsa-1")),
        Some(ErrorCode::AuthInvalidToken)
    );
    // A kid whose key does not match the signature is 10 too.
    assert_eq!(
        call(&served, &token(Some("rsa-1"), "ec-1")),
        Some(ErrorCode::AuthInvalidToken)
    );

    // A broken file on SIGHUP keeps the keys the server has: once the log
    // says the reload ran and was refused, the old keys still work.
    std::fs::write(&file, "{ not json").unwrap();
    sighup(&served);
    wait_for_log(&served, "SIGHUP: JWT keys not reloaded; the old keys stay");
    assert_eq!(call(&served, &new), None, "the old keys stay");

    // The old key is retired, then SIGHUP: its tokens are refused.
    std::fs::write(&file, jwks(&["ec-1"])).unwrap();
    sighup(&served);
    eventually(
        &served,
        &token(Some("rsa-1"), "rsa-1"),
        Some(ErrorCode::AuthInvalidToken),
    );
    assert_eq!(call(&served, &new), None);
    served.stop();
}

fn errmap_cli(args: &[&str], token_env: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_errmap"));
    command.args(args).env_remove("ERRMAP_TOKEN");
    if let Some(token) = token_env {
        command.env("ERRMAP_TOKEN", token);
    }
    command.output().unwrap()
}

#[test]
fn the_cli_reaches_a_protected_server_with_a_token() {
    let dir = std::env::temp_dir().join(format!("errmap-cli-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, jwks(&["ec-1"])).unwrap();
    let mut served = serve(&[
        "--auth-jwks-file",
        file.to_str().unwrap(),
        "--auth-audience",
        "errmap",
    ]);
    // No scheme means http://.
    let server = served.addr.clone();
    let good = token(Some("ec-1"), "ec-1");

    let out = errmap_cli(&["lookup", "21", "--server", &server], None);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the server wants a token"), "{err}");

    let out = errmap_cli(
        &["lookup", "21", "--server", &server, "--token", &good],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("21 AUTH_REQUIRED"));

    let out = errmap_cli(&["lookup", "21", "--server", &server], Some(&good));
    assert_eq!(out.status.code(), Some(0), "ERRMAP_TOKEN is read");

    let out = errmap_cli(
        &["lookup", "21", "--server", &server, "--token", "garbage"],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the token (AUTH_INVALID_TOKEN)"),
        "{err}"
    );

    // https without --ca checks the server against the system's roots,
    // which do not know this plaintext server: a TLS failure, never a
    // plaintext call.
    let out = errmap_cli(
        &["lookup", "21", "--server", &format!("https://{server}")],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    served.stop();
}
