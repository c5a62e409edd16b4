//! What a user sees and keeps around a run: progress as plain lines when stderr is not a
//! terminal (one per phase and per step, never silence), and the on-disk pipeline cache (used
//! again, ignored when corrupt, off with --no-cache, never changing a pixel).

use std::path::{Path, PathBuf};
use std::process::Command;

fn lorafuse(args: &[&str]) -> std::process::Output {
    let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    Command::new(env!("CARGO_BIN_EXE_lorafuse"))
        .args(args)
        .env("XDG_RUNTIME_DIR", xdg)
        .env_remove("LORAFUSE_CACHE_DIR")
        .output()
        .expect("run lorafuse")
}

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/model-fp16.safetensors").display().to_string()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-cli-progress-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn generate(out: &Path, extra: &[&str]) -> std::process::Output {
    let m = model();
    let o = out.display().to_string();
    let mut args = vec!["generate", "-m", &m, "-p", "a cat", "--steps", "3", "-W", "64", "-H", "64", "--seed", "5"];
    args.extend_from_slice(&["--batch", "2", "-o", &o]);
    args.extend_from_slice(extra);
    let r = lorafuse(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    r
}

#[test]
fn progress_is_plain_lines_when_stderr_is_not_a_terminal() {
    let d = tmpdir("lines");
    let cache = d.join("cache").display().to_string();
    let r = generate(&d.join("p.png"), &["--cache-dir", &cache]);
    let err = String::from_utf8_lossy(&r.stderr);
    let all: Vec<&str> = err.lines().collect();
    // A CPU adapter compiles the UNet graph's kernels ahead of sampling and says so: the first and
    // the last "compiling kernels n/N" line at least, right after the precision line.
    let compiling: Vec<&str> = all.iter().copied().filter(|l| l.starts_with("compiling kernels ")).collect();
    let count = |l: &str| l.split_whitespace().nth(2).unwrap().to_string();
    assert!(compiling.len() >= 2, "{err}");
    let total = count(compiling[0]).split('/').nth(1).unwrap().to_string();
    assert_eq!(count(compiling[0]), format!("1/{total}"), "{err}");
    assert_eq!(count(compiling.last().unwrap()), format!("{total}/{total}"), "{err}");
    assert!(all[2].starts_with("compiling kernels 1/"), "{err}");
    let lines: Vec<&str> = all.iter().copied().filter(|l| !l.starts_with("compiling kernels ")).collect();
    let mut expected = vec!["seed: 5".to_string(), "precision: f16 (auto: the adapter has SHADER_F16".to_string()];
    for image in 1..=2 {
        expected.push(format!("image {image}/2 ("));
        for step in 1..=3 {
            expected.push(format!("image {image}/2: {step}/3 steps ("));
        }
        expected.push("decoding (".to_string());
    }
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.starts_with(want.as_str()), "{line:?} should start with {want:?} in\n{err}");
    }
    // every progress line carries the elapsed time, non-decreasing
    let times: Vec<f64> = lines[2..]
        .iter()
        .map(|l| l.rsplit_once('(').unwrap().1.trim_end_matches(" s)").parse::<f64>().expect(l))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // -q: no progress, only the seed (so a random-seed image can be made again)
    let q = generate(&d.join("q.png"), &["-q", "--cache-dir", &cache]);
    assert_eq!(String::from_utf8_lossy(&q.stderr), "seed: 5\n");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn pipeline_cache_is_reused_survives_corruption_and_changes_no_pixel() {
    let d = tmpdir("cache");
    let cache = d.join("cache");
    let c = cache.display().to_string();
    generate(&d.join("a.png"), &["-q", "--cache-dir", &c]);
    let files: Vec<PathBuf> = match std::fs::read_dir(&cache) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    // Vulkan adapters (lavapipe in CI) offer pipeline caches: one file per adapter class.
    let info = lorafuse(&["info"]);
    if String::from_utf8_lossy(&info.stdout).contains("Vulkan") {
        assert_eq!(files.len(), 1, "one cache file: {files:?}");
        assert!(files.iter().all(|f| !f.display().to_string().contains(".tmp")), "{files:?}");
        // a corrupt file is dropped, the run still works, and the file is written anew
        std::fs::write(&files[0], b"not a pipeline cache").unwrap();
    }
    generate(&d.join("b.png"), &["-q", "--cache-dir", &c]);
    for f in &files {
        assert_ne!(std::fs::read(f).unwrap(), b"not a pipeline cache", "rewritten: {}", f.display());
    }
    assert_eq!(std::fs::read(d.join("a-0.png")).unwrap(), std::fs::read(d.join("b-0.png")).unwrap());
    assert_eq!(std::fs::read(d.join("a-1.png")).unwrap(), std::fs::read(d.join("b-1.png")).unwrap());
    // --no-cache keeps nothing on disk
    let none = d.join("none");
    let n = none.display().to_string();
    generate(&d.join("n.png"), &["-q", "--no-cache", "--cache-dir", &n]);
    assert!(!none.exists(), "--no-cache wrote {}", none.display());
    let _ = std::fs::remove_dir_all(&d);
}
