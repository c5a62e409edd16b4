//! The `lorafuse` binary's contract: `info`, and `bench kernels --json` with every kernel named in
//! the issue, each with a time, throughput and a ratio to the measured peak.

use std::process::Command;

fn lorafuse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).output().expect("run lorafuse")
}

#[test]
fn info_names_the_adapter() {
    let out = lorafuse(&["info"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("adapter:") && s.contains("max binding:"), "{s}");
}

#[test]
fn bench_kernels_json_reports_every_kernel() {
    let out = lorafuse(&["bench", "kernels", "--json", "--quick", "--budget-ms", "1", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert!(v["adapter"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["backend"].as_str().is_some());
    let peak = v["peak_gflops"].as_f64().unwrap();
    assert!(peak > 0.0);
    let kernels = v["kernels"].as_array().unwrap();
    let mut names: Vec<&str> = kernels.iter().map(|k| k["name"].as_str().unwrap()).collect();
    names.dedup();
    let mut want = vec!["matmul_f32", "conv3x3", "attention", "cross_attention", "group_norm", "lora_linear"];
    if names.contains(&"matmul_f16") {
        want.push("matmul_f16");
    }
    for w in &want {
        assert!(names.contains(w), "{w} missing from {names:?}");
    }
    for k in kernels {
        let ms = k["ms"].as_f64().unwrap();
        let gflops = k["gflops"].as_f64().unwrap();
        let ratio = k["ratio_to_peak"].as_f64().unwrap();
        assert!(ms > 0.0 && gflops > 0.0 && k["gbps"].as_f64().unwrap() > 0.0, "{k}");
        assert!((ratio - gflops / peak).abs() < 1e-9 * ratio.max(1.0), "{k}");
        assert!(k["shape"].as_str().is_some_and(|s| !s.is_empty()));
    }
}

#[test]
fn bad_arguments_fail_cleanly() {
    let out = lorafuse(&["bench", "kernels", "--budget-ms=-3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("budget") && !err.contains("panicked"), "{err}");
    let out = lorafuse(&["--adapter", "no-such-gpu-0x7f", "info"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-gpu-0x7f") && !err.contains("panicked"), "{err}");
}
