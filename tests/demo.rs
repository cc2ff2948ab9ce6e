//! `unstick demo` works on a machine with no Redis: one command, two instances, logins that
//! hold on both.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{json_of, Browser};

#[tokio::test]
async fn the_demo_runs_without_redis_and_keeps_users_logged_in_on_both_instances() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_unstick"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    // Read to the end, not only to the address line: a closed pipe would fail the demo's
    // next write to stdout.
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("unstick, round robin:").nth(1) {
                let _ = address_tx.send(rest.split_whitespace().next().map(String::from));
            }
        }
    });
    let address =
        tokio::task::spawn_blocking(move || address_rx.recv_timeout(Duration::from_secs(20)));
    let base = address
        .await
        .unwrap()
        .expect("the demo printed its address")
        .expect("address line");

    let http = reqwest::Client::new();
    let login = http
        .post(format!("{base}/login"))
        .form(&[("user", "alice")])
        .send()
        .await
        .unwrap();
    let cookie = support::cookie_set_by(&login);
    let browser = Browser {
        cookie: Some(cookie),
        ..Browser::new()
    };
    let mut instances = std::collections::HashSet::new();
    for _ in 0..6 {
        let doc: serde_json::Value = json_of(browser.get(&format!("{base}/me"))).await;
        assert_eq!(doc["user"], "alice");
        instances.insert(doc["instance"].as_str().unwrap().to_string());
    }
    assert_eq!(instances.len(), 2, "both instances answered: {instances:?}");

    let page = browser
        .get(&format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Logged in as <b>alice</b>"), "{page}");

    support::signal(demo.id(), "INT");
    let status = tokio::task::spawn_blocking(move || demo.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "demo exit: {status}");
}
