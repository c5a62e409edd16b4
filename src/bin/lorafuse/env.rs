//! The process environment the GPU stack expects, set up by the binary before anything else runs.
//!
//! Mesa's Vulkan drivers open a Wayland connection while enumerating surfaces, and libwayland
//! prints "XDG_RUNTIME_DIR is invalid or not set in the environment." (once per driver probe)
//! when the variable is missing, as under `sudo`, cron, containers or a bare SSH session. The
//! lines are harmless but look like errors on every command. Pointing the variable at a private
//! directory makes libwayland fail to find a display silently. This lives in the binary, not the
//! library: a library must not change its host program's environment.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// When XDG_RUNTIME_DIR is unset or not an absolute path to a directory, sets it to a private
/// (mode 0700, owned by this user) `lorafuse-runtime-UID` folder in the temp dir. Leaves the
/// environment alone when that folder cannot be made safe. Must run at the start of `main`,
/// before any thread exists (`set_var` is not thread-safe).
pub fn quiet_vulkan_loader() {
    let usable = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).is_some_and(|p| p.is_absolute() && p.is_dir());
    if usable {
        return;
    }
    if let Some(dir) = private_runtime_dir() {
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
}

fn private_runtime_dir() -> Option<PathBuf> {
    // `/proc/self` belongs to the process's effective user: the uid without a libc call
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let dir = std::env::temp_dir().join(format!("lorafuse-runtime-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    is_private(&dir, uid).then_some(dir)
}

/// A real directory (not a symlink someone planted) owned by `uid` that only `uid` can use.
fn is_private(dir: &Path, uid: u32) -> bool {
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o777 == 0o700)
}
