//! The safetensors parser against hostile input: seeded random truncations and header
//! corruptions of a real LoRA file and of a small hand-written file must each return Ok or Err,
//! never panic (truncations always Err); and every kind of lying header gets its exact one-line
//! error. Seed: printed; `LORAFUSE_TEST_SEED=<n>` replays a run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use lorafuse::weights::safetensors::{parse_header, SafeTensorsFile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn seed() -> u64 {
    let s = std::env::var("LORAFUSE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("seed {s} (LORAFUSE_TEST_SEED={s} replays)");
    s
}

/// Serialises `(name, dtype, shape, bytes)` entries with optional metadata.
fn st_bytes(entries: &[(&str, &str, Vec<usize>, Vec<u8>)], meta: Option<serde_json::Value>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if let Some(m) = meta {
        header.insert("__metadata__".into(), m);
    }
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in entries {
        let off = [data.len(), data.len() + bytes.len()];
        header.insert(name.to_string(), json!({ "dtype": dtype, "shape": shape, "data_offsets": off }));
        data.extend_from_slice(bytes);
    }
    raw(&serde_json::to_string(&header).unwrap(), &data)
}

/// A file from a literal header and data section.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Small file with every interesting shape: 0-dim, empty, odd offsets, ints, bf16, f64, fp8.
fn tiny_file() -> Vec<u8> {
    let f: Vec<u8> = (0..12).flat_map(|i| (i as f32 * 0.5 - 2.0).to_le_bytes()).collect();
    st_bytes(
        &[
            ("alpha", "F16", vec![], vec![0x00, 0x3c]),
            ("odd.bytes", "U8", vec![3], vec![1, 2, 3]),
            ("w.weight", "F32", vec![3, 4], f),
            ("empty", "F32", vec![0, 5], vec![]),
            ("b.bf16", "BF16", vec![2, 1, 1], vec![0x80, 0x3f, 0x00, 0xc0]),
            ("ids", "I64", vec![2], [0i64, 76].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("d", "F64", vec![1], 1.5f64.to_le_bytes().to_vec()),
            ("q", "F8_E4M3", vec![2], vec![0x38, 0xb8]),
        ],
        Some(json!({ "format": "pt", "note": "tiny" })),
    )
}

/// Parses `bytes` and, if the header is accepted, reads every tensor both ways. Returns whether
/// parsing succeeded; panics propagate to the caller's `catch_unwind`.
fn exercise(bytes: Vec<u8>) -> bool {
    match SafeTensorsFile::from_bytes("fuzz.safetensors", bytes) {
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n') && m.contains("fuzz.safetensors: "), "not a one-line error naming the file: {m}");
            false
        }
        Ok(f) => {
            let names: Vec<String> = f.names().map(str::to_string).collect();
            for n in &names {
                let info = f.info(n).unwrap().clone();
                assert_eq!(f.bytes(n).unwrap().len(), info.numel() * info.dtype.size());
                if let Ok(v) = f.read_f32(n) {
                    assert_eq!(v.len(), info.numel());
                }
                if let Ok(v) = f.read_f16(n) {
                    assert_eq!(v.len(), info.numel());
                }
            }
            true
        }
    }
}

/// Runs `cases` mutations of `base` through `exercise`, failing on any panic.
fn fuzz(label: &str, base: &[u8], seed: u64, cases: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let header_end = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
    let (mut ok, mut err) = (0usize, 0usize);
    for case in 0..cases {
        let mut b = base.to_vec();
        let kind = case % 5;
        match kind {
            // Truncation anywhere: always an error (the tensors tile the data section).
            0 => b.truncate(rng.random_range(0..base.len())),
            // Random bytes inside the header (or its length field).
            1 => {
                for _ in 0..rng.random_range(1..=8) {
                    let i = rng.random_range(0..header_end);
                    b[i] = rng.random();
                }
            }
            // Digit swaps: JSON stays valid, but shapes and offsets lie.
            2 => {
                let digits: Vec<usize> = (8..header_end).filter(|&i| b[i].is_ascii_digit()).collect();
                for _ in 0..rng.random_range(1..=3) {
                    let i = digits[rng.random_range(0..digits.len())];
                    b[i] = b'0' + rng.random_range(0..10u8);
                }
            }
            // A byte inserted or removed in the header (length field unchanged).
            3 => {
                let i = rng.random_range(8..header_end);
                if rng.random() {
                    b.insert(i, rng.random());
                } else {
                    b.remove(i);
                }
            }
            // Both: a lying header on a truncated file.
            _ => {
                let i = rng.random_range(8..header_end);
                b[i] = rng.random();
                b.truncate(rng.random_range(0..base.len()));
            }
        }
        let truncated = kind == 0;
        let r = catch_unwind(AssertUnwindSafe(|| exercise(b)));
        match r {
            Err(_) => panic!("{label}: case {case} (kind {kind}) panicked; seed {seed}"),
            Ok(true) => {
                assert!(!truncated, "{label}: case {case}: truncated file accepted; seed {seed}");
                ok += 1;
            }
            Ok(false) => err += 1,
        }
    }
    println!("{label}: {cases} cases, {ok} Ok, {err} Err");
}

#[test]
fn fuzz_real_lora_file() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/loras/kohya_lora.safetensors");
    let base = std::fs::read(&path).unwrap();
    assert!(exercise(base.clone()), "the untouched file must parse");
    fuzz("kohya_lora", &base, seed(), 1500);
}

#[test]
fn fuzz_tiny_file() {
    let base = tiny_file();
    let f = SafeTensorsFile::from_bytes("tiny", base.clone()).unwrap();
    assert_eq!(f.read_f32("alpha").unwrap(), [1.0]);
    assert_eq!(f.read_f32("b.bf16").unwrap(), [1.0, -2.0]);
    assert_eq!(f.read_f32("q").unwrap(), [1.0, -1.0]);
    assert_eq!(f.read_f32("d").unwrap(), [1.5]);
    assert_eq!(f.read_f32("empty").unwrap(), Vec::<f32>::new());
    assert_eq!(f.metadata().get("note").map(String::as_str), Some("tiny"));
    let s = seed();
    fuzz("tiny", &base, s, 4000);
    // Every possible truncation, exhaustively.
    for n in 0..base.len() {
        let r = catch_unwind(|| parse_header("tiny", &base[..n]).is_ok());
        assert_eq!(r.ok(), Some(false), "truncation to {n} bytes");
    }
}

/// The message of parsing `bytes` labelled `model.safetensors`.
fn err(bytes: &[u8]) -> String {
    match parse_header("model.safetensors", bytes) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

const P: &str = "safetensors: invalid argument: model.safetensors: ";

#[test]
fn each_lying_header_has_its_exact_error() {
    assert_eq!(err(&[1, 2, 3, 4, 5]), format!("{P}file is 5 bytes, too short for a safetensors header (at least 8)"));
    let mut b = 1000u64.to_le_bytes().to_vec();
    b.extend([b' '; 20]);
    assert_eq!(err(&b), format!("{P}header length 1000 is larger than the file (20 bytes follow the length field)"));
    let big = {
        let mut v = vec![0u8; 100_000_010];
        v[..8].copy_from_slice(&100_000_001u64.to_le_bytes());
        v
    };
    assert_eq!(err(&big), format!("{P}header length 100000001 exceeds the limit of 100000000 bytes"));

    let json_err = serde_json::from_str::<serde_json::Value>("{not json").unwrap_err();
    assert_eq!(err(&raw("{not json", &[])), format!("{P}header is not JSON ({json_err})"));
    let mut b = 3u64.to_le_bytes().to_vec();
    b.extend([b'{', 0xff, b'}']);
    let utf8_err = std::str::from_utf8(&b[8..]).unwrap_err();
    assert_eq!(err(&b), format!("{P}header is not UTF-8 ({utf8_err})"));
    assert_eq!(err(&raw("[1, 2]", &[])), format!("{P}header is not a JSON object"));
    assert_eq!(err(&raw(r#"{"__metadata__": 3}"#, &[])), format!("{P}__metadata__ is not a JSON object"));

    let h = |entry: &str| format!(r#"{{"x.weight": {entry}}}"#);
    assert_eq!(
        err(&raw(&h(r#"{"dtype":"F16","shape":[512,1024],"data_offsets":[10,1048586]}"#), &[0; 512])),
        format!("{P}tensor 'x.weight' claims 1048576 bytes at offset 10, but the data section has 512")
    );
    assert_eq!(
        err(&raw(&h(r#"{"dtype":"F32","shape":[3],"data_offsets":[0,8]}"#), &[0; 8])),
        format!("{P}tensor 'x.weight' is F32 [3] = 12 bytes, but its data_offsets [0, 8] span 8")
    );
    assert_eq!(
        err(&raw(&h(r#"{"dtype":"Q7","shape":[3],"data_offsets":[0,8]}"#), &[0; 8])),
        format!("{P}tensor 'x.weight' has unknown dtype 'Q7'")
    );
    assert_eq!(
        err(&raw(&h(r#"{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}"#), &[0; 8])),
        format!("{P}tensor 'x.weight': shape [4294967296, 4294967296, 16] of F32 overflows the address space")
    );
    assert_eq!(
        err(&raw(&h(r#"{"dtype":"F32","shape":[2],"data_offsets":[8,0]}"#), &[0; 8])),
        format!("{P}tensor 'x.weight': data_offsets [8, 0] end before they begin")
    );
    assert_eq!(
        err(&raw(&h(r#"{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}"#), &[0; 8])),
        format!("{P}tensor 'x.weight': \"shape\" must be a list of non-negative integers")
    );
    assert_eq!(
        err(&raw(&h(r#"{"dtype":"F32","shape":[2],"data_offsets":[0]}"#), &[0; 8])),
        format!("{P}tensor 'x.weight': \"data_offsets\" must be [begin, end], non-negative integers")
    );
    assert_eq!(
        err(&raw(&h(r#"{"shape":[2],"data_offsets":[0,8]}"#), &[0; 8])),
        format!("{P}tensor 'x.weight': missing or non-string \"dtype\"")
    );
    assert_eq!(err(&raw(&h("[]"), &[])), format!("{P}tensor 'x.weight': header entry is not a JSON object"));

    let two = |a: &str, b: &str| {
        format!(
            r#"{{"a": {{"dtype":"F32","shape":[2],"data_offsets":{a}}}, "b": {{"dtype":"F32","shape":[2],"data_offsets":{b}}}}}"#
        )
    };
    assert_eq!(err(&raw(&two("[0,8]", "[4,12]"), &[0; 12])), format!("{P}tensors 'a' [0, 8] and 'b' [4, 12] overlap"));
    assert_eq!(err(&raw(&two("[0,8]", "[0,8]"), &[0; 8])), format!("{P}tensors 'a' [0, 8] and 'b' [0, 8] overlap"));
    assert_eq!(
        err(&raw(&two("[0,8]", "[12,20]"), &[0; 20])),
        format!("{P}data offsets are not contiguous: 4 bytes unused before tensor 'b' at offset 12")
    );
    assert_eq!(
        err(&raw(&two("[0,8]", "[8,16]"), &[0; 17])),
        format!("{P}the data section has 17 bytes but the tensors cover 16 (trailing bytes)")
    );
    // Control characters in a name cannot break the one-line message.
    assert_eq!(
        err(&raw(r#"{"a\nb": {"dtype":"X","shape":[],"data_offsets":[0,0]}}"#, &[])),
        format!("{P}tensor 'a\\nb' has unknown dtype 'X'")
    );
}

#[test]
fn open_names_the_path() {
    let dir = std::env::temp_dir().join(format!("lorafuse-stfuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("short.safetensors");
    std::fs::write(&p, [0u8; 3]).unwrap();
    let e = SafeTensorsFile::open(&p).err().unwrap().to_string();
    assert_eq!(
        e,
        format!(
            "safetensors: invalid argument: {}: file is 3 bytes, too short for a safetensors header (at least 8)",
            p.display()
        )
    );
    let missing = dir.join("missing.safetensors");
    let e = SafeTensorsFile::open(&missing).err().unwrap().to_string();
    assert!(e.starts_with(&format!("{}: ", missing.display())), "{e}");
    // A truncated copy of a real file, through the memory-mapped path.
    let real = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/loras/kohya_lora.safetensors"),
    )
    .unwrap();
    let t = dir.join("truncated.safetensors");
    std::fs::write(&t, &real[..real.len() - 1]).unwrap();
    let e = SafeTensorsFile::open(&t).err().unwrap().to_string();
    assert!(e.starts_with(&format!("safetensors: invalid argument: {}: tensor '", t.display())), "{e}");
    assert!(e.ends_with(&format!("but the data section has {}", real.len() - 1 - 8 - 91960)), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
