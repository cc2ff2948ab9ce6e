//! Build details for `unstick --version`: the git commit (when built from a git checkout, or
//! from `UNSTICK_GIT_COMMIT`), the target, the Cargo profile and the compiler. Every value
//! falls back to `unknown`: a build without git (a Docker build, a source tarball) still works.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=UNSTICK_GIT_COMMIT");

    let commit = std::env::var("UNSTICK_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().to_string())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    let opt_level = std::env::var("OPT_LEVEL").unwrap_or_else(|_| "?".to_string());
    let rustc = std::env::var("RUSTC")
        .ok()
        .and_then(|rustc| output(Command::new(rustc).arg("--version")))
        .unwrap_or_else(|| "unknown".to_string());

    println!("cargo:rustc-env=UNSTICK_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=UNSTICK_BUILD_TARGET={target}");
    println!(
        "cargo:rustc-env=UNSTICK_BUILD_PROFILE={} (opt-level {opt_level})",
        profile()
    );
    println!("cargo:rustc-env=UNSTICK_BUILD_RUSTC={rustc}");
}

/// The Cargo profile's name. `PROFILE` says only `debug` or `release` (a custom profile such as
/// `dist` reports `release`), so the name is read from the output directory,
/// `target/[<triple>/]<profile>/build/<crate>/out`, when it has that shape.
fn profile() -> String {
    let from_out_dir = std::env::var_os("OUT_DIR").and_then(|out| {
        let out = PathBuf::from(out);
        let build = out
            .ancestors()
            .find(|p| p.file_name() == Some("build".as_ref()))?;
        let name = build.parent()?.file_name()?.to_str()?.to_string();
        Some(name)
    });
    from_out_dir
        .or_else(|| std::env::var("PROFILE").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The short hash of HEAD; `None` without git, or when the sources are not the root of their
/// own checkout (a source tarball unpacked inside some other repository).
fn git_commit() -> Option<String> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(&manifest_dir).args(args));
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != manifest_dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it points to (a commit).
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        rerun_if_exists(&manifest_dir.join(head));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(reference) = git(&["rev-parse", "--git-path", &branch]) {
            rerun_if_exists(&manifest_dir.join(reference));
        }
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        rerun_if_exists(&manifest_dir.join(packed));
    }
    Some(commit)
}

/// A path that does not exist would make Cargo rerun this script on every build.
fn rerun_if_exists(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The trimmed stdout of a command that ran and succeeded.
fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
