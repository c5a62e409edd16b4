//! Every kernel in shaders/ parses and validates with naga in both storage dtypes (no GPU needed),
//! and has the launcher, reference and test that the project's conventions require.

use std::path::Path;

use lorafuse::gpu::pipelines::{specialize, KernelSource};
use lorafuse::DType;

fn kernels() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn validate(name: &str, text: &str) {
    let module = naga::front::wgsl::parse_str(text).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(text)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
}

#[test]
fn every_shader_validates_in_f32_and_f16() {
    for (name, text) in kernels() {
        let src =
            KernelSource { name: Box::leak(name.clone().into_boxed_str()), source: Box::leak(text.into_boxed_str()) };
        validate(&name, &specialize(&src, DType::F32).unwrap());
        if src.source.contains("alias ST = f32;") {
            validate(&format!("{name} (f16)"), &specialize(&src, DType::F16).unwrap());
        }
    }
}

#[test]
fn every_shader_has_launcher_reference_and_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read_dir = |d: &str| -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(root.join(d)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "rs") {
                all.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
        all
    };
    let launchers = read_dir("src/kernels");
    let tests = read_dir("tests");
    for (name, _) in kernels() {
        assert!(
            launchers.contains(&format!("wgsl!(\"{name}\")")),
            "shaders/{name}.wgsl has no launcher in src/kernels"
        );
        assert!(tests.contains(&name), "shaders/{name}.wgsl is named by no test under tests/");
        assert!(
            root.join(format!("src/reference/{name}.rs")).exists(),
            "shaders/{name}.wgsl has no CPU reference src/reference/{name}.rs"
        );
    }
}
