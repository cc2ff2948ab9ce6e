//! The whole migration, walked with a real stack: users logged in on a sticky pair of
//! instances -> unstick adopts them (`legacy`) -> `overlap` -> rollback to `legacy` ->
//! `overlap` -> rolling restart of every instance -> scale 2 -> 4 -> `redis` -> every instance
//! restarted -> the old store emptied. After every step: nobody logged out, nobody sees another user, a logout sticks,
//! a fresh login works at once.
//!
//! A stack's app answers `POST /login` (form `user`), `POST /logout` and `GET /me` with
//! `{"user", "instance"}`, trusting unstick's `X-Auth-User` when it has no login of its own.

use super::{Browser, Mode, ProxyConfig, ProxyProcess, RedisServer, RunningProxy};
use std::future::Future;
use std::net::SocketAddr;

/// One running app instance; dropping it stops it (its in-memory sessions are gone).
pub struct Instance {
    pub name: String,
    pub address: SocketAddr,
    pub process: Box<dyn Send>,
}

/// What unstick did with the app's cookie changes over the whole walk, from its logs.
pub struct Walked {
    /// New ids the app issued without a login, bound to the session they replaced.
    pub rebound: usize,
    /// Cookies the app cleared without a logout, kept.
    pub clear_kept: usize,
    /// New ids the app issued with a login of the same user (the session went on).
    pub rotated: usize,
}

/// What the walk needs to know of a stack.
pub trait Stack {
    /// The app's session cookie.
    const COOKIE: &'static str;

    /// Whether a balancer's cookie (`SERVERID`) kept users sticky before unstick; `false`
    /// when the session cookie itself names the instance (Tomcat's `jvmRoute`).
    const LB_COOKIE: bool = true;

    /// Starts instance `name`, on `address` when it is a restart.
    fn start(&self, name: &str, address: Option<SocketAddr>) -> impl Future<Output = Instance>;

    /// The stack's unstick settings: `id_format`, capture, old stores. Mode, instances and the
    /// upstream's `lb_cookie` are the walk's, set before each call (before every start and
    /// reload).
    fn configure(&self, config: &mut ProxyConfig);

    /// The migration's last step: the old store is emptied (a session table, session files).
    fn clean_up(&self) -> impl Future<Output = ()> {
        async {}
    }
}

/// A user of the walk: name, browser (following every cookie the app sets).
struct User {
    name: String,
    browser: Browser,
}

struct Walk<'a, S: Stack> {
    stack: &'a S,
    redis: RedisServer,
    config: ProxyConfig,
    proxy: Option<ProxyProcess>,
    instances: Vec<Instance>,
    users: Vec<User>,
    logins: usize,
    /// Cookies of users who logged out: they must stay logged out.
    logged_out: Vec<Browser>,
}

/// Walks the migration; panics naming the step and the user at the first broken promise.
pub async fn walk_migration<S: Stack>(stack: &S) -> Walked {
    let redis = RedisServer::start().await;
    let a = stack.start("a", None).await;
    let b = stack.start("b", None).await;
    // Before unstick: a sticky balancer pinned each user to an instance with its own cookie.
    let mut users = Vec::new();
    for i in 0..6 {
        // Not alternating: a balancer's round robin must not line up with the users by luck.
        let instance = if i < 3 { &a } else { &b };
        let mut browser = Browser::for_cookie(S::COOKIE);
        browser
            .login_directly(instance.address, &format!("user{i}"))
            .await;
        browser.sticky = S::LB_COOKIE.then(|| format!("SERVERID={}", instance.name));
        users.push(User {
            name: format!("user{i}"),
            browser,
        });
    }
    let mut config = ProxyConfig::new(&redis.url(), &[]);
    config.session.cookie = S::COOKIE.into();
    let mut walk = Walk {
        stack,
        redis,
        config,
        proxy: None,
        instances: vec![a, b],
        users,
        logins: 0,
        logged_out: Vec::new(),
    };

    walk.set_mode(Mode::Legacy).await;
    walk.check("adopted in legacy").await;
    walk.set_mode(Mode::Overlap).await;
    walk.check("overlap").await;
    walk.set_mode(Mode::Legacy).await;
    walk.check("rolled back to legacy").await;
    walk.set_mode(Mode::Overlap).await;
    walk.check("overlap again").await;
    for i in 0..walk.instances.len() {
        walk.restart(i).await;
        let step = format!("overlap, instance {} restarted", walk.instances[i].name);
        walk.check(&step).await;
    }
    for name in ["c", "d"] {
        let instance = walk.stack.start(name, None).await;
        walk.instances.push(instance);
    }
    walk.apply().await;
    walk.check("scaled to 4").await;
    walk.set_mode(Mode::Redis).await;
    walk.check("redis").await;
    for i in 0..walk.instances.len() {
        walk.restart(i).await;
    }
    walk.check("redis, every instance restarted").await;
    walk.stack.clean_up().await;
    walk.check("old store cleaned up").await;
    assert!(walk.redis.keys("test:s:*").await.len() >= walk.users.len());
    let proxy = walk.proxy.as_ref().expect("unstick runs");
    Walked {
        rebound: proxy.count_logs("it takes the session over"),
        clear_kept: proxy.count_logs("cleared its cookie without a logout"),
        rotated: proxy.count_logs("session id rotated by the app"),
    }
}

impl<S: Stack> Walk<'_, S> {
    async fn set_mode(&mut self, mode: Mode) {
        self.config.mode = mode;
        self.apply().await;
    }

    /// Starts unstick with the current config, or reloads it.
    async fn apply(&mut self) {
        self.config.instances = self
            .instances
            .iter()
            .map(|i| (i.name.clone(), i.address))
            .collect();
        self.config.upstream.lb_cookie = S::LB_COOKIE.then(|| {
            (
                "SERVERID".into(),
                vec![("a".into(), "a".into()), ("b".into(), "b".into())],
            )
        });
        self.stack.configure(&mut self.config);
        match &self.proxy {
            Some(proxy) => proxy.reload(&self.config).await,
            None => {
                // Housekeeping is logged at debug: the walk counts it.
                let env = [("RUST_LOG", "info,unstick::session::capture=debug")];
                let proxy = ProxyProcess::start_with_env(&self.config.to_toml(), &env).await;
                self.proxy = Some(proxy);
            }
        }
    }

    /// Stops instance `i` and starts it again on its address: its own sessions are gone.
    async fn restart(&mut self, i: usize) {
        let name = self.instances[i].name.clone();
        let address = self.instances[i].address;
        let old = std::mem::replace(&mut self.instances[i], placeholder(&name, address));
        drop(old);
        self.instances[i] = self.stack.start(&name, Some(address)).await;
    }

    /// The promises after a step.
    async fn check(&mut self, step: &str) {
        let proxy = self.proxy.as_ref().expect("unstick runs");
        for _ in 0..3 {
            for user in &mut self.users {
                let (status, seen, instance) = user.browser.refresh(proxy).await;
                assert_eq!(
                    (status, seen.as_deref()),
                    (200, Some(user.name.as_str())),
                    "{step}: {} was logged out or mixed up (answered by {instance:?}); logs:\n{}",
                    user.name,
                    proxy.logs()
                );
            }
        }
        // A fresh login works at once.
        self.logins += 1;
        let name = format!("new{}", self.logins);
        let mut browser = Browser::for_cookie(S::COOKIE);
        browser.login(proxy, &name).await;
        let (status, seen, _) = browser.refresh(proxy).await;
        assert_eq!(
            (status, seen.as_deref()),
            (200, Some(name.as_str())),
            "{step}: a fresh login did not hold; logs:\n{}",
            proxy.logs()
        );
        self.users.push(User { name, browser });
        // A logout sticks: the oldest user logs out; that cookie, and every earlier one, stays
        // logged out.
        let mut leaving = self.users.remove(0);
        let replay = Browser {
            cookie: leaving.browser.cookie.clone(),
            sticky: leaving.browser.sticky.clone(),
            ..Browser::for_cookie(S::COOKIE)
        };
        assert_eq!(leaving.browser.logout(proxy).await, 200, "{step}: logout");
        self.logged_out.push(replay);
        for replay in &self.logged_out {
            for _ in 0..2 {
                let (status, seen, instance) = replay.me(proxy).await;
                assert_eq!(
                    (status, seen.as_deref()),
                    (200, None),
                    "{step}: a logged-out session came back (answered by {instance:?})"
                );
            }
        }
    }
}

/// Stands in for an instance while it restarts.
fn placeholder(name: &str, address: SocketAddr) -> Instance {
    Instance {
        name: name.to_string(),
        address,
        process: Box::new(()),
    }
}
