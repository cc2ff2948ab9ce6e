//! Real Tomcat 10.1 instances (Debian's `tomcat10`) running the app in tests/apps/tomcat.
//! Each instance is its own CATALINA_BASE in a temp dir (its port, its `jvmRoute`), a child
//! JVM that the test owns and kills; its sessions live in Tomcat's memory only. Needs
//! `tomcat10` and a JDK (`javac`).

use super::free_port;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Where Debian's `tomcat10` package puts Tomcat.
pub const CATALINA_HOME: &str = "/usr/share/tomcat10";

fn app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apps/tomcat")
}

/// The `jvmRoute` of instance `name`: not its name, so that unstick needs `jvm_routes`.
pub fn jvm_route(name: &str) -> String {
    format!("jvm-{name}")
}

/// The servlet compiled against Tomcat's own servlet-api.jar, once per source version: kept
/// in the target dir under a hash of the source, so test runs share it.
fn compiled_classes() -> &'static Path {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let source = app_dir().join("SessionServlet.java");
        let text = std::fs::read(&source).expect("servlet source");
        let hash = hex::encode(&Sha256::digest(&text)[..6]);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tomcat-app-{hash}"));
        if dir.join("app/SessionServlet.class").exists() {
            return dir;
        }
        // Compiled aside and renamed into place: test binaries running at once never see
        // half a directory.
        let building = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let output = Command::new("javac")
            .args(["--release", "17", "-d"])
            .arg(building.path())
            .arg("-cp")
            .arg(format!("{CATALINA_HOME}/lib/servlet-api.jar"))
            .arg(&source)
            .output()
            .expect("javac must be installed (a JDK)");
        assert!(
            output.status.success(),
            "javac failed (the tests need `apt-get install tomcat10` and a JDK):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        if std::fs::rename(building.path(), &dir).is_err() {
            // Another test binary put it there first.
            assert!(dir.join("app/SessionServlet.class").exists());
        }
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Lays out a CATALINA_BASE: conf/server.xml and the app as webapps/ROOT.
fn make_base(base: &Path) {
    let app = app_dir();
    let root = base.join("webapps/ROOT");
    for dir in ["conf", "temp"] {
        std::fs::create_dir_all(base.join(dir)).expect("mkdir");
    }
    std::fs::create_dir_all(root.join("META-INF")).expect("mkdir");
    std::fs::copy(app.join("server.xml"), base.join("conf/server.xml")).expect("server.xml");
    std::fs::copy(app.join("context.xml"), root.join("META-INF/context.xml")).expect("context");
    copy_dir(compiled_classes(), &root.join("WEB-INF/classes"));
    std::fs::copy(app.join("web.xml"), root.join("WEB-INF/web.xml")).expect("web.xml");
}

pub struct TomcatApp {
    pub address: SocketAddr,
    child: Child,
    /// The CATALINA_BASE, which also holds the JVM's output (removed with it).
    _base: tempfile::TempDir,
}

impl TomcatApp {
    /// Starts instance `name` (shown in its answers; `jvmRoute` [`jvm_route`]) on `address`
    /// or a free port, and waits until it answers.
    pub async fn start(name: &str, address: Option<SocketAddr>) -> TomcatApp {
        let address = address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let base = tempfile::tempdir().expect("temp dir");
        make_base(base.path());
        let log_path = base.path().join("catalina.out");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new("java")
            // Small and quick to start: a test instance serves a few hundred requests.
            .args(["-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
            .arg("-Djava.security.egd=file:/dev/./urandom")
            .arg(format!("-Dcatalina.base={}", base.path().display()))
            .arg(format!("-Dcatalina.home={CATALINA_HOME}"))
            .arg(format!(
                "-Djava.io.tmpdir={}",
                base.path().join("temp").display()
            ))
            // Read by conf/server.xml, and by the servlet for its answers.
            .arg(format!("-Dhttp.port={}", address.port()))
            .arg(format!("-Djvm.route={}", jvm_route(name)))
            .arg(format!("-Dapp.instance={name}"))
            .arg("-classpath")
            .arg(format!(
                "{CATALINA_HOME}/bin/bootstrap.jar:{CATALINA_HOME}/bin/tomcat-juli.jar"
            ))
            .args(["org.apache.catalina.startup.Bootstrap", "start"])
            .current_dir(base.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("java must be installed (tomcat10 needs a JRE)");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        // The connector opens its port once the app is deployed (bindOnInit="false"); a
        // restart may find the old socket lingering for a moment.
        for _ in 0..600 {
            if let Ok(response) = http.get(format!("http://{address}/me")).send().await {
                if response.status() == 200 {
                    return TomcatApp {
                        address,
                        child,
                        _base: base,
                    };
                }
            }
            if child.try_wait().expect("try_wait").is_some() {
                panic!(
                    "Tomcat instance {name} exited:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "Tomcat instance {name} did not answer on {address}:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
}

impl Drop for TomcatApp {
    fn drop(&mut self) {
        // Killed, not stopped: nothing of its sessions may survive (and none is saved, see
        // context.xml).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
