//! The library's modules form layers, and imports only go down: a module may name another
//! top-level module of the crate only when that one sits in a lower layer. This keeps the
//! architecture of ARCHITECTURE.md true as code moves (a loop such as weights -> nn -> weights
//! fails here, naming the file).

use std::collections::BTreeMap;
use std::path::Path;

/// Layer of each top-level module, bottom up. Modules of one layer never import each other.
const LAYERS: &[(&str, u32)] = &[
    ("error", 0),
    ("named_enum", 1),
    ("gpu", 2),
    ("schedulers", 2),
    ("tensor", 3),
    ("weights", 4),
    ("kernels", 4),
    ("reference", 5),
    ("nn", 6),
    ("models", 7),
    ("lora", 8),
    ("pipeline", 9),
    ("grid", 10),
    ("bench", 10),
    ("serve", 11),
];

/// Names the crate root re-exports, and the module each comes from.
const ROOT_EXPORTS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("Result", "error"),
    ("Context", "gpu"),
    ("ContextOptions", "gpu"),
    ("Recorder", "gpu"),
    ("DType", "gpu"),
    ("GpuTensor", "tensor"),
    ("HostTensor", "tensor"),
];

/// Macros exported at the crate root (imported as `use crate::{wgsl, …}`): not modules.
const ROOT_MACROS: &[&str] = &["wgsl"];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level modules a source file names through `crate::` paths (plain and in braces).
fn crate_imports(src: &str) -> Vec<String> {
    let code: String = src.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i + "crate::".len();
        at = start;
        if bytes.get(start) == Some(&b'{') {
            // Top-level items of a brace group: split at depth-1 commas.
            let (mut depth, mut item) = (0, String::new());
            for &c in &bytes[start..] {
                match c {
                    b'{' => {
                        depth += 1;
                        if depth == 1 {
                            continue;
                        }
                    }
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            out.push(item.clone());
                            break;
                        }
                    }
                    b',' if depth == 1 => {
                        out.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 {
                    item.push(c as char);
                }
            }
        } else {
            out.push(code[start..].to_string());
        }
    }
    out.iter()
        .filter_map(|s| {
            let s = s.trim_start();
            let name: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // `crate::wgsl!(…)`: a macro exported at the root, not a module.
            let is_macro = s[name.len()..].starts_with('!');
            let root_macro = ROOT_MACROS.contains(&name.as_str());
            (!name.is_empty() && name != "self" && !is_macro && !root_macro).then_some(name)
        })
        .map(|s| ROOT_EXPORTS.iter().find(|(n, _)| *n == s).map(|(_, m)| m.to_string()).unwrap_or(s))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_only_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = BTreeMap::new();
    let mut seen = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "bin" || top == "lib" {
            continue;
        }
        let from = layer(&top).unwrap_or_else(|| panic!("src/{top} has no layer in tests/layers.rs"));
        for to in crate_imports(&std::fs::read_to_string(f).unwrap()) {
            if to == top {
                continue;
            }
            seen += 1;
            let l = layer(&to).unwrap_or_else(|| panic!("{}: crate::{to} is no known module", rel.display()));
            if l >= from {
                bad.entry(format!("{top} -> {to}")).or_insert_with(Vec::new).push(rel.display().to_string());
            }
        }
    }
    assert!(seen > 100, "found only {seen} cross-module imports: is the scanner broken?");
    assert!(bad.is_empty(), "imports that do not go down the layers: {bad:#?}");
}

#[test]
fn scanner_sees_nested_and_root_imports() {
    let got = crate_imports(
        "use crate::{kernels::{a, b}, nn::X, Context};\nlet x = crate::lora::f(); crate::wgsl!(\"a\"); // crate::grid",
    );
    assert_eq!(got, vec!["kernels", "nn", "gpu", "lora"]);
}
