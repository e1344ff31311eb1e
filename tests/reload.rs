//! Live reload of `errmap serve --catalog`, with the binary: SIGHUP, a file
//! written in place, a file swapped by rename and a Kubernetes ConfigMap's
//! `..data` symlink swap each serve a new code within 5 s; a broken file
//! keeps the running catalogs; a reload that breaks clients is applied with
//! a warning, or refused with `--refuse-breaking-reload`; a hundred reloads
//! of a large catalog do not grow the server's memory.

mod common;

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::binary::{serve, serve_with, Served};
use errmap::pb::{error_catalog_client::ErrorCatalogClient, GetErrorRequest};

const DOMAIN: &str = "team.example.com";

/// A team catalog (`team.v1.TeamError`) with codes 1 and 2, `extra` more
/// values in proto syntax, and code 1's gRPC code `grpc`, compiled by
/// protox into an encoded descriptor set (imports included).
fn team_set(extra: &str, grpc: &str) -> Vec<u8> {
    let dir = tempdir("src");
    std::fs::create_dir_all(dir.join("team/v1")).unwrap();
    let text = format!(
        r#"syntax = "proto3";
package team.v1;
import "errmap/v1/options.proto";
enum TeamError {{
  option (errmap.v1.domain) = "{DOMAIN}";
  TEAM_ERROR_UNSPECIFIED = 0;
  TEAM_ERROR_FIRST = 1 [(errmap.v1.error) = {{grpc_code: "{grpc}" http_status: 404 category: "team" message: "First."}}];
  TEAM_ERROR_SECOND = 2 [(errmap.v1.error) = {{grpc_code: "NOT_FOUND" http_status: 404 category: "team" message: "Second {{thing}}." }}];
{extra}
}}
"#
    );
    std::fs::write(dir.join("team/v1/team.proto"), text).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut compiler = protox::Compiler::new([dir.clone(), root.join("proto")]).unwrap();
    compiler.include_imports(true);
    compiler.open_file("team/v1/team.proto").unwrap();
    let set = compiler.encode_file_descriptor_set();
    std::fs::remove_dir_all(dir).unwrap();
    set
}

/// One more value numbered `n`.
fn value(n: i32) -> String {
    format!(
        r#"  TEAM_ERROR_EXTRA_{n} = {n} [(errmap.v1.error) = {{grpc_code: "NOT_FOUND" http_status: 404 category: "team" message: "Extra {n}."}}];"#
    )
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "errmap-reload-{}-{name}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `bytes` to `path` by a rename over it, as deploy tools do.
fn swap_in(path: &Path, bytes: &[u8]) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

async fn connect(url: String) -> ErrorCatalogClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    ErrorCatalogClient::new(channel)
}

async fn client(served: &Served) -> ErrorCatalogClient<tonic::transport::Channel> {
    connect(served.url()).await
}

/// Whether the server answers `code` in the team's domain with `name`.
async fn answers(client: &mut ErrorCatalogClient<tonic::transport::Channel>, code: i32) -> bool {
    client
        .get_error(GetErrorRequest {
            key: Some(errmap::pb::get_error_request::Key::Code(code)),
            domain: Some(DOMAIN.into()),
        })
        .await
        .is_ok_and(|r| r.into_inner().error.is_some_and(|e| e.number == Some(code)))
}

/// Waits at most 5 s for the server to answer `code`; how long it took.
async fn served_within_5s(
    client: &mut ErrorCatalogClient<tonic::transport::Channel>,
    code: i32,
) -> Duration {
    let started = Instant::now();
    while !answers(client, code).await {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "code {code} was not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn stderr_text(served: &Served) -> String {
    String::from_utf8_lossy(&served.stderr()).into_owned()
}

fn sighup(served: &Served) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &served.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP");
}

#[tokio::test]
async fn each_way_a_file_changes_serves_a_new_code_within_5s() {
    // The file the server reads is a symlink to a file in a directory it
    // does not watch: only SIGHUP makes it read the new bytes.
    let hidden = tempdir("hidden");
    let watched = tempdir("watched");
    std::fs::write(hidden.join("team.binpb"), team_set("", "NOT_FOUND")).unwrap();
    symlink(hidden.join("team.binpb"), watched.join("via-link.binpb")).unwrap();
    // A plain file, written in place and swapped by rename.
    std::fs::write(watched.join("plain.binpb"), team_set("", "NOT_FOUND")).unwrap();
    // A ConfigMap volume: team.binpb -> ..data/team.binpb, ..data -> a
    // timestamped directory that the kubelet swaps by renaming ..data_tmp.
    let cm = tempdir("configmap");
    std::fs::create_dir(cm.join("..2026_12_07_v1")).unwrap();
    std::fs::write(
        cm.join("..2026_12_07_v1/team.binpb"),
        team_set("", "NOT_FOUND"),
    )
    .unwrap();
    symlink("..2026_12_07_v1", cm.join("..data")).unwrap();
    symlink("..data/team.binpb", cm.join("team.binpb")).unwrap();

    // Three servers, one per layout, each on its own file.
    let link_path = watched.join("via-link.binpb");
    let plain_path = watched.join("plain.binpb");
    let cm_path = cm.join("team.binpb");
    let mut by_link = serve_with(&[], &["--catalog", link_path.to_str().unwrap()], "info");
    let mut plain = serve_with(&[], &["--catalog", plain_path.to_str().unwrap()], "info");
    let mut configmap = serve_with(&[], &["--catalog", cm_path.to_str().unwrap()], "info");
    let mut link_client = client(&by_link).await;
    let mut plain_client = client(&plain).await;
    let mut cm_client = client(&configmap).await;
    for c in [&mut link_client, &mut plain_client, &mut cm_client] {
        assert!(answers(c, 1).await);
        assert!(!answers(c, 10).await);
    }

    // SIGHUP.
    std::fs::write(hidden.join("team.binpb"), team_set(&value(10), "NOT_FOUND")).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !answers(&mut link_client, 10).await,
        "nothing but SIGHUP tells this server"
    );
    sighup(&by_link);
    let took = served_within_5s(&mut link_client, 10).await;
    eprintln!("SIGHUP: served in {took:?}");
    assert!(stderr_text(&by_link).contains("trigger=\"SIGHUP\""));

    // A write in place.
    std::fs::write(&plain_path, team_set(&value(11), "NOT_FOUND")).unwrap();
    let took = served_within_5s(&mut plain_client, 11).await;
    eprintln!("write in place: served in {took:?}");
    // A rename over the file.
    swap_in(&plain_path, &team_set(&value(12), "NOT_FOUND"));
    let took = served_within_5s(&mut plain_client, 12).await;
    eprintln!("rename: served in {took:?}");
    assert!(!answers(&mut plain_client, 11).await, "the old set is gone");

    // The kubelet's ..data swap.
    std::fs::create_dir(cm.join("..2026_12_07_v2")).unwrap();
    std::fs::write(
        cm.join("..2026_12_07_v2/team.binpb"),
        team_set(&value(13), "NOT_FOUND"),
    )
    .unwrap();
    symlink("..2026_12_07_v2", cm.join("..data_tmp")).unwrap();
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
    std::fs::remove_dir_all(cm.join("..2026_12_07_v1")).unwrap();
    let took = served_within_5s(&mut cm_client, 13).await;
    eprintln!("..data swap: served in {took:?}");

    for (served, text) in [(&by_link, "link"), (&plain, "plain"), (&configmap, "cm")] {
        let log = stderr_text(served);
        assert!(log.contains("catalogs reloaded"), "{text}: {log}");
        assert!(!log.contains("not reloaded"), "{text}: {log}");
    }
    by_link.stop();
    plain.stop();
    configmap.stop();
    for dir in [hidden, watched, cm] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[tokio::test]
async fn a_broken_file_keeps_the_running_catalogs_and_says_why() {
    let dir = tempdir("broken");
    let path = dir.join("team.binpb");
    std::fs::write(&path, team_set(&value(10), "NOT_FOUND")).unwrap();
    let mut served = serve_with(&[], &["--catalog", path.to_str().unwrap()], "info");
    let mut c = client(&served).await;
    assert!(answers(&mut c, 10).await);

    // Not a descriptor set at all, then a catalog that breaks a rule.
    for (bytes, says) in [
        (
            b"not protobuf at all".to_vec(),
            "not a valid FileDescriptorSet",
        ),
        (
            team_set(
                r#"  TEAM_ERROR_BAD = 20 [(errmap.v1.error) = {grpc_code: "NOT_FOUND" http_status: 404 category: "team" message: "Bad {amount."}];"#,
                "NOT_FOUND",
            ),
            "TeamError.TEAM_ERROR_BAD: the message template is broken",
        ),
    ] {
        swap_in(&path, &bytes);
        let started = Instant::now();
        while !stderr_text(&served).contains(says) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no warning {says:?}: {}",
                stderr_text(&served)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answers(&mut c, 1).await, "the running set still answers");
        assert!(answers(&mut c, 10).await, "the running set still answers");
        assert!(!answers(&mut c, 20).await);
    }
    assert!(stderr_text(&served).contains("the running catalogs stay"));
    // Fixed, it loads.
    swap_in(&path, &team_set(&value(21), "NOT_FOUND"));
    served_within_5s(&mut c, 21).await;
    served.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_breaking_reload_is_applied_with_a_warning_or_refused_on_request() {
    let dir = tempdir("breaking");
    let (warned, refused) = (dir.join("warned.binpb"), dir.join("refused.binpb"));
    for path in [&warned, &refused] {
        std::fs::write(path, team_set("", "NOT_FOUND")).unwrap();
    }
    let mut applying = serve_with(&[], &["--catalog", warned.to_str().unwrap()], "info");
    let mut refusing = serve_with(
        &[],
        &[
            "--catalog",
            refused.to_str().unwrap(),
            "--refuse-breaking-reload",
        ],
        "info",
    );
    let grpc_code_of_1 = |served: &Served| {
        let url = served.url();
        async move {
            let mut c = connect(url).await;
            c.get_error(GetErrorRequest {
                key: Some(errmap::pb::get_error_request::Key::Code(1)),
                domain: Some(DOMAIN.into()),
            })
            .await
            .unwrap()
            .into_inner()
            .error
            .unwrap()
            .grpc_code_name
        }
    };
    // Code 1 moves from NOT_FOUND to INVALID_ARGUMENT: it breaks clients
    // that branch on the gRPC code.
    let breaking = team_set("", "INVALID_ARGUMENT");
    swap_in(&warned, &breaking);
    swap_in(&refused, &breaking);
    let started = Instant::now();
    while grpc_code_of_1(&applying).await != "INVALID_ARGUMENT" {
        assert!(started.elapsed() < Duration::from_secs(5), "not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = stderr_text(&applying);
    assert!(log.contains("the change breaks clients"), "{log}");
    assert!(
        log.contains("team.v1.TeamError.TEAM_ERROR_FIRST (1): breaking: gRPC code NOT_FOUND became INVALID_ARGUMENT"),
        "{log}"
    );
    let started = Instant::now();
    while !stderr_text(&refusing).contains("--refuse-breaking-reload") {
        assert!(started.elapsed() < Duration::from_secs(5), "not refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        grpc_code_of_1(&refusing).await,
        "NOT_FOUND",
        "the old set stays"
    );
    // A compatible change is applied by both.
    swap_in(&refused, &team_set(&value(30), "NOT_FOUND"));
    let mut c = client(&refusing).await;
    served_within_5s(&mut c, 30).await;
    applying.stop();
    refusing.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A catalog of `n` codes, each with a long message in three locales;
/// `version` changes one message so that each set differs.
fn large_set(n: i32, version: usize) -> Vec<u8> {
    let mut extra = String::new();
    for i in 0..n {
        let code = 1000 + i;
        let filler = "x".repeat(200);
        let first = if i == 0 {
            format!("Version {version}.")
        } else {
            format!("Code {code} {filler}.")
        };
        extra.push_str(&format!(
            "  TEAM_ERROR_BULK_{code} = {code} [(errmap.v1.error) = {{grpc_code: \"NOT_FOUND\" http_status: 404 category: \"bulk\" message: \"{first}\"}}];\n"
        ));
    }
    team_set(&extra, "NOT_FOUND")
}

#[tokio::test]
async fn a_hundred_reloads_of_a_large_catalog_do_not_grow_memory() {
    const CODES: i32 = 1_000;
    // Two versions, served in turn: each reload builds the whole set anew.
    // The file is reached through a symlink to a directory the server does
    // not watch, so that SIGHUP alone paces the reloads.
    let versions = [large_set(CODES, 1), large_set(CODES, 2)];
    let hidden = tempdir("memory-hidden");
    let watched = tempdir("memory");
    let path = watched.join("team.binpb");
    std::fs::write(hidden.join("team.binpb"), &versions[1]).unwrap();
    symlink(hidden.join("team.binpb"), &path).unwrap();
    let mut served = serve(&["--catalog", path.to_str().unwrap()]);
    let mut c = client(&served).await;
    let mut version_of_first = async || {
        c.get_error(GetErrorRequest {
            key: Some(errmap::pb::get_error_request::Key::Code(1000)),
            domain: Some(DOMAIN.into()),
        })
        .await
        .map(|r| r.into_inner().error.unwrap().message)
        .unwrap_or_default()
    };
    let mut rss_after_warmup = 0;
    let started_all = Instant::now();
    for reload in 0..110 {
        let version = reload % 2;
        std::fs::write(hidden.join("team.binpb"), &versions[version]).unwrap();
        sighup(&served);
        let started = Instant::now();
        let expected = format!("Version {}.", version + 1);
        while version_of_first().await != expected {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "reload {reload} not served within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if reload == 9 {
            rss_after_warmup = served.rss_kib();
        }
    }
    let rss = served.rss_kib();
    let grown = rss.saturating_sub(rss_after_warmup);
    eprintln!(
        "100 reloads of {CODES} codes in {:?}: RSS {rss_after_warmup} KiB -> {rss} KiB (+{grown} KiB)",
        started_all.elapsed()
    );
    assert!(
        grown < 8 * 1024,
        "RSS grew {grown} KiB over 100 reloads ({rss_after_warmup} -> {rss} KiB)"
    );
    served.stop();
    std::fs::remove_dir_all(hidden).unwrap();
    std::fs::remove_dir_all(watched).unwrap();
}
