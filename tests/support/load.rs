//! A concurrent session load for fault tests: each logged-in user requests `GET /me` in a loop
//! with their cookie, and every answer is classified. The promise under any fault: a request
//! that carries a session is answered as its own user or with "retry later", never as
//! anonymous or as somebody else.

use super::{Browser, ProxyProcess};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How the answers to a load were classified.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    /// 200 with the user's own identity.
    pub own_user: u64,
    /// 503 with a `Retry-After`.
    pub retry_later: u64,
    /// 200 without an identity: a session-carrying request passed as anonymous.
    pub anonymous: u64,
    /// 200 with another user's identity.
    pub wrong_user: u64,
    /// Anything else: status (0 = no answer), with what was expected.
    pub other: Vec<(u16, String)>,
}

impl Outcomes {
    fn add(&mut self, other: Outcomes) {
        self.own_user += other.own_user;
        self.retry_later += other.retry_later;
        self.anonymous += other.anonymous;
        self.wrong_user += other.wrong_user;
        self.other.extend(other.other);
    }

    pub fn total(&self) -> u64 {
        self.own_user
            + self.retry_later
            + self.anonymous
            + self.wrong_user
            + self.other.len() as u64
    }
}

pub struct SessionLoad {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Outcomes>>,
}

impl SessionLoad {
    /// Starts `per_user` loops for each `(user, browser)`.
    pub fn start(
        proxy: &ProxyProcess,
        users: &[(String, Browser)],
        per_user: usize,
    ) -> SessionLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let url = proxy.url("/me");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut workers = Vec::new();
        for (user, browser) in users {
            let cookie = browser.cookie.clone().expect("a logged-in user");
            for _ in 0..per_user {
                let (stop, url, client) = (stop.clone(), url.clone(), client.clone());
                let (user, cookie) = (user.clone(), cookie.clone());
                workers.push(tokio::spawn(async move {
                    let mut outcomes = Outcomes::default();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = client.get(&url).header("cookie", &cookie).send().await;
                        classify(sent, &user, &mut outcomes).await;
                    }
                    outcomes
                }));
            }
        }
        SessionLoad { stop, workers }
    }

    /// Stops every loop and adds up what they saw.
    pub async fn stop(self) -> Outcomes {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Outcomes::default();
        for worker in self.workers {
            total.add(worker.await.expect("load worker"));
        }
        total
    }
}

async fn classify(
    sent: Result<reqwest::Response, reqwest::Error>,
    user: &str,
    outcomes: &mut Outcomes,
) {
    let response = match sent {
        Ok(response) => response,
        Err(_) => {
            outcomes.other.push((0, user.to_string()));
            // A refused connection fails at once: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            return;
        }
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    match status {
        200 => {
            let doc: serde_json::Value = response.json().await.unwrap_or_default();
            match doc["user"].as_str() {
                Some(seen) if seen == user => outcomes.own_user += 1,
                Some(_) => outcomes.wrong_user += 1,
                None => outcomes.anonymous += 1,
            }
        }
        503 if retry_after => outcomes.retry_later += 1,
        _ => outcomes.other.push((status, user.to_string())),
    }
}
