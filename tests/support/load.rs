//! A concurrent session load for fault tests: logged-in users request `GET /me` in loops with
//! their cookies, and every answer is classified. The promise under any fault: a request that
//! carries a session is answered as its own user or with "retry later", never as anonymous or
//! as somebody else.

use super::RunningProxy;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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

    /// The promise over a whole load: no anonymous pass-through, no other user's identity,
    /// nothing but the user's own answer or "retry later". `logs`: the proxy's, for a failure.
    pub fn assert_fail_closed(&self, logs: &str) {
        assert_eq!(self.anonymous, 0, "anonymous pass-throughs: {self:?}");
        assert_eq!(self.wrong_user, 0, "wrong identities: {self:?}");
        assert!(
            self.other.is_empty(),
            "answers other than 200/503+Retry-After: {self:?}\nlogs:\n{logs}"
        );
        assert!(self.own_user > 0, "{self:?}");
    }
}

pub struct SessionLoad {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Outcomes>>,
}

impl SessionLoad {
    /// Starts `loops` loops over the `(user, cookie)` pairs: each cycles through its share of
    /// the users (with more loops than users, several loops share a user).
    pub fn start(
        proxy: &impl RunningProxy,
        users: &[(String, String)],
        loops: usize,
    ) -> SessionLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let url = proxy.url("/me");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let count = users.len().max(loops);
        let workers = (0..loops)
            .map(|t| {
                let mine: Vec<(String, String)> = (t..count)
                    .step_by(loops)
                    .map(|i| users[i % users.len()].clone())
                    .collect();
                let (stop, url, http) = (stop.clone(), url.clone(), http.clone());
                tokio::spawn(async move {
                    let mut outcomes = Outcomes::default();
                    while !stop.load(Ordering::Relaxed) {
                        for (user, cookie) in &mine {
                            me_as(&http, &url, user, cookie, &mut outcomes).await;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    outcomes
                })
            })
            .collect();
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

/// One `GET <url>` as `user` with `cookie`, classified into `outcomes`.
pub async fn me_as(
    http: &reqwest::Client,
    url: &str,
    user: &str,
    cookie: &str,
    outcomes: &mut Outcomes,
) {
    let response = match http.get(url).header("cookie", cookie).send().await {
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

/// Polls every user's `/me` until all are answered as themselves (bounded by `within`);
/// returns when that was.
pub async fn every_user_served(
    proxy: &impl RunningProxy,
    users: &[(String, String)],
    within: Duration,
) -> Option<Instant> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = proxy.url("/me");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut round = Outcomes::default();
        for (user, cookie) in users {
            me_as(&http, &url, user, cookie, &mut round).await;
        }
        if round.own_user == users.len() as u64 {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
