//! `unstick demo` works on a machine with no Redis: one command, two instances, logins that
//! hold on both, and a page that shows unstick's side of each request.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{json_of, Browser};

/// The word after `label` on the banner line that has it.
fn after(banner: &str, label: &str) -> Option<String> {
    let rest = banner.lines().find_map(|line| line.split(label).nth(1))?;
    rest.split_whitespace().next().map(String::from)
}

/// The instance named by "Served by instance <b>X</b>" on a page.
fn served_by(page: &str) -> String {
    let rest = page
        .split("Served by instance <b>")
        .nth(1)
        .unwrap_or_else(|| panic!("no instance named: {page}"));
    rest.split('<').next().unwrap().to_string()
}

#[tokio::test]
async fn the_demo_runs_without_redis_and_explains_unsticks_side_of_each_request() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_unstick"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("REDIS_URL")
        .env_remove("UNSTICK_DEMO_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    // Read to the end, not only to the banner: a closed pipe would fail the demo's next write
    // to stdout. The banner is one write, so its lines arrive together.
    let (banner_tx, banner_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C to stop") {
                let _ = banner_tx.send(std::mem::take(&mut banner));
            }
        }
    });
    let banner =
        tokio::task::spawn_blocking(move || banner_rx.recv_timeout(Duration::from_secs(20)))
            .await
            .unwrap()
            .expect("the demo printed its banner");
    let base = after(&banner, "unstick, round robin:").expect("address line");
    let dashboard = after(&banner, "dashboard:").expect("dashboard line");
    let token = after(&banner, "token:").expect("admin token");
    assert!(
        dashboard.starts_with("http://127.0.0.1:") && dashboard.ends_with("/dashboard"),
        "{banner}"
    );
    assert!(banner.contains("process memory"), "{banner}");

    // Before logging in: the page names unstick and the instance that answered.
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<span class=brand>unstick</span>"), "{page}");
    assert!(["a", "b"].contains(&served_by(&page).as_str()), "{page}");
    assert!(page.contains("Not logged in"), "{page}");
    assert!(
        page.contains(&dashboard),
        "the page links the dashboard: {page}"
    );

    let login = http
        .post(format!("{base}/login"))
        .form(&[("user", "alice")])
        .send()
        .await
        .unwrap();
    let cookie = support::cookie_set_by(&login);
    let login: serde_json::Value = login.json().await.unwrap();
    let took_login = login["instance"].as_str().unwrap().to_string();
    let other = if took_login == "a" { "b" } else { "a" };
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

    // The page from each instance says how that instance knew alice.
    let mut pages: HashMap<String, String> = HashMap::new();
    for _ in 0..8 {
        let page = browser
            .get(&format!("{base}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Logged in as <b>alice</b>"), "{page}");
        pages.insert(served_by(&page), page);
    }
    let own = &pages[&took_login];
    assert!(
        own.contains("knew you itself: your session is in its own memory"),
        "{own}"
    );
    let helped = &pages[other];
    assert!(
        helped.contains(&format!(
            "Instance <b>{other}</b> has no session for your cookie in its memory. It got your \
             identity from unstick's <code>x-auth-user</code> header"
        )),
        "{helped}"
    );
    assert!(
        helped.contains("<code>x-auth-user: alice</code>"),
        "{helped}"
    );
    assert!(
        helped.contains("unstick's store: <b>process memory of the demo"),
        "{helped}"
    );
    assert!(
        helped.contains("In production that is <b>Redis</b>"),
        "{helped}"
    );
    // Opened directly, the instance that did not take the login shows a logged-out page, and
    // the page through unstick says so beforehand, naming the instance that holds the login.
    assert!(
        helped.contains(&format!(
            "<b>logged out</b>: {other} alone does not know you, {took_login} holds your login"
        )),
        "{helped}"
    );
    let direct_url = helped
        .split(&format!("'>open {other} directly"))
        .next()
        .and_then(|head| head.rsplit("href='").next())
        .unwrap()
        .to_string();
    let direct = browser
        .get(&direct_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served_by(&direct), other);
    assert!(
        direct.contains("You opened this instance <b>directly</b>"),
        "{direct}"
    );
    assert!(direct.contains("Not logged in"), "{direct}");
    assert!(
        direct.contains(&format!(
            "Your login is in instance <b>{took_login}</b>'s memory"
        )),
        "{direct}"
    );

    // The session shown by its hash is the one the admin listener lists, with the token only.
    let admin = dashboard.trim_end_matches("/dashboard");
    let sessions = http
        .get(format!("{admin}/sessions?user=alice"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(sessions.status(), 200);
    let sessions: serde_json::Value = sessions.json().await.unwrap();
    let hash = sessions["sessions"][0]["id_hash"].as_str().unwrap();
    assert!(
        helped.contains(&format!("<code>{}…</code>", &hash[..10])),
        "{helped}"
    );
    let refused = http
        .get(format!("{admin}/sessions?user=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    support::signal(demo.id(), "INT");
    let status = tokio::task::spawn_blocking(move || demo.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "demo exit: {status}");
}
