//! Real clients that nobody here wrote, against a real `lorafuse serve`: webuiapi (PyPI's
//! AUTOMATIC1111 client), and headless Chromium and Firefox (two engines: Blink and Gecko) each
//! loading the web page and using it. `.ci/run` installs all three; a machine without them fails
//! here rather than skipping, so the check cannot pass unseen.

mod serve_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serve_common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv `.ci/run` makes (`LORAFUSE_CI_PYTHON` overrides it).
fn python() -> PathBuf {
    std::env::var_os("LORAFUSE_CI_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv-ci/bin/python"))
}

#[test]
fn webuiapi_drives_txt2img_hires_img2img_and_inpainting() {
    let py = python();
    assert!(py.exists(), "{} is missing: run .ci/run (or make the venv with webuiapi) first", py.display());
    let s = Server::start("webuiapi", "");
    let (host, port) = s.addr.rsplit_once(':').unwrap();
    let out = Command::new(&py)
        .arg(repo().join("tests/clients/webuiapi_a1111.py"))
        .args([host, port])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", py.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "webuiapi client failed:\n{stdout}\n{stderr}\nserver log:\n{}", s.stderr());
    assert!(stdout.contains("ok:"), "{stdout}");
    println!("{stdout}");
}

/// A browser binary: the environment variable when set, else Debian's package name.
fn browser(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

/// Runs `tests/clients/<script>` on `browser` against a fresh server and checks the screenshot it
/// leaves in `serve-artifacts/<shot>`.
fn drive_web_page(name: &str, browser: &Path, package: &str, script: &str, shot: &str) {
    let py = python();
    assert!(py.exists(), "{} is missing: run .ci/run first", py.display());
    let found = Command::new(browser).arg("--version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "{} is missing: run .ci/run (apt-get install {package}) first",
        browser.display()
    );
    let s = Server::start(name, "");
    // The screenshot is the test's artifact: kept under target/ for a person to look at.
    let artifacts =
        PathBuf::from(option_env!("CARGO_TARGET_DIR").unwrap_or(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
            .join("serve-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(shot);
    let _ = std::fs::remove_file(&shot);
    let out = Command::new(&py)
        .arg(repo().join("tests/clients").join(script))
        .arg(browser)
        .arg(format!("http://{}/", s.addr))
        .arg(&shot)
        .arg(s.dir.join(format!("{name}-profile")))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} test failed:\n{stdout}\n{stderr}\nserver log:\n{}", s.stderr());
    assert!(stdout.contains(" ok:"), "{stdout}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    println!("{stdout}screenshot: {}", shot.display());
}

#[test]
fn chromium_picks_a_lora_generates_and_compares_on_the_web_page() {
    let chromium = browser("LORAFUSE_CHROMIUM", "chromium");
    drive_web_page("chromium", &chromium, "chromium", "chromium_page.py", "web-page.png");
}

#[test]
fn firefox_picks_a_lora_generates_and_compares_on_the_web_page() {
    let firefox = browser("LORAFUSE_FIREFOX", "firefox-esr");
    drive_web_page("firefox", &firefox, "firefox-esr", "firefox_page.py", "web-page-firefox.png");
}
