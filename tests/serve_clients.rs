//! Real clients that nobody here wrote, against a real `lorafuse serve`: webuiapi (PyPI's
//! AUTOMATIC1111 client) and a headless Chromium loading the web page. `.ci/run` installs both;
//! a machine without them fails here rather than skipping, so the check cannot pass unseen.

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
fn webuiapi_drives_txt2img_with_lora_tags() {
    let py = python();
    assert!(py.exists(), "{} is missing: run .ci/run (or make the venv with webuiapi) first", py.display());
    let s = Server::start("webuiapi", "");
    let (host, port) = s.addr.rsplit_once(':').unwrap();
    let out = Command::new(&py)
        .arg(repo().join("tests/clients/webuiapi_txt2img.py"))
        .args([host, port])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", py.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "webuiapi client failed:\n{stdout}\n{stderr}\nserver log:\n{}", s.stderr());
    assert!(stdout.contains("ok:"), "{stdout}");
    println!("{stdout}");
}
