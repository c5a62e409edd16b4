//! CLIP text model against the sd15-tiny goldens (diffusers/transformers, float32), loaded from the
//! single-file checkpoint and from the diffusers folder; clip skip, batching, f16, A1111 emphasis,
//! multi-chunk prompts.

mod common;

use common::{assert_close, ctx, rel_l2};
use lorafuse::models::clip::prompt::{parse_prompt, ParsedPrompt};
use lorafuse::models::clip::text_model::{apply_emphasis_original, ClipTextModel};
use lorafuse::models::clip::tokenizer::Tokenizer;
use lorafuse::nn::{AdaptableWeights, Loader};
use lorafuse::weights::detect::detect;
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::weights::ModelFiles;
use lorafuse::{DType, Recorder};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sd15-tiny");
/// Fixture README: a correct float32 text encoder is within 1e-4 relative L2.
const TOL_TE: f64 = 1e-4;
/// fp16 weights and activations: measured ≤ 8.3e-4 on lavapipe (about 10× the f32 bound); 1e-2
/// leaves room for other GPUs' f16 arithmetic.
const TOL_TE_F16: f64 = 1e-2;

fn sources() -> [String; 2] {
    [format!("{FIX}/model-fp16.safetensors"), format!("{FIX}/model")]
}

fn load(path: &str, dtype: DType) -> ClipTextModel {
    let files = ModelFiles::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let cfg = detect(&files).unwrap_or_else(|e| panic!("detect {path}: {e}")).clip;
    let l = Loader::new(ctx(), files.text_encoder(), &AdaptableWeights::default(), dtype);
    ClipTextModel::load(&l, &cfg).unwrap_or_else(|e| panic!("load {path}: {e}"))
}

fn golden() -> SafeTensorsFile {
    SafeTensorsFile::open(format!("{FIX}/golden.safetensors")).expect("golden.safetensors")
}

/// `te_ids_i` is stored as I64 (torch's id dtype).
fn golden_ids(g: &SafeTensorsFile, i: usize) -> Vec<u32> {
    let name = format!("te_ids_{i}");
    assert_eq!(g.info(&name).unwrap().dtype.name(), "I64", "{name} dtype");
    let bytes = g.bytes(&name).unwrap();
    bytes.chunks_exact(8).map(|b| u32::try_from(i64::from_le_bytes(b.try_into().unwrap())).unwrap()).collect()
}

fn prompts() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{FIX}/tokenizer_cases.json")).expect("tokenizer_cases.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse cases");
    json.as_array().unwrap().iter().map(|c| c["prompt"].as_str().unwrap().to_string()).collect()
}

/// Run one forward pass and read it back.
fn run(m: &ClipTextModel, ids: &[u32], clip_skip: usize) -> (Vec<usize>, Vec<f32>) {
    let mut rec = Recorder::new();
    let z = m.forward(ctx(), &mut rec, ids, clip_skip).expect("forward");
    rec.submit(ctx()).unwrap();
    (z.shape.clone(), z.to_vec(ctx()).unwrap())
}

#[test]
fn goldens_from_single_file_and_folder() {
    let g = golden();
    let tok = Tokenizer::embedded().unwrap();
    let prompts = prompts();
    for src in sources() {
        let m = load(&src, DType::F32);
        let c = m.cfg.hidden_size;
        for (i, prompt) in prompts.iter().enumerate().take(3) {
            let ids = golden_ids(&g, i);
            assert_eq!(ids.len(), 77);
            assert_eq!(tok.encode_77(prompt).to_vec(), ids, "tokenizer vs te_ids_{i} ({prompt:?})");
            for (skip, key) in [(1, "te_last"), (2, "te_clipskip2")] {
                let want = g.read_f32(&format!("{key}_{i}")).unwrap();
                let (shape, got) = run(&m, &ids, skip);
                assert_eq!(shape, vec![1, 77, c]);
                // Measured on lavapipe: ≤ 3.7e-7 for every prompt, both clip skips, both layouts.
                assert_close(&format!("{src} {key}_{i}"), &got, &want, TOL_TE);
                // The whole A1111 path (prompt syntax, one chunk, emphasis all 1.0) agrees too.
                let parsed = parse_prompt(tok, prompt).unwrap();
                assert_eq!(parsed.chunks.len(), 1);
                let enc = m.encode_prompt(ctx(), &parsed, skip).unwrap();
                assert_eq!(enc.shape, vec![1, 77, c]);
                assert_close(&format!("{src} encode_prompt {key}_{i}"), &enc.to_vec(ctx()).unwrap(), &want, TOL_TE);
            }
        }
    }
}

#[test]
fn batch_equals_single_runs() {
    let g = golden();
    let m = load(&sources()[1], DType::F32);
    let c = m.cfg.hidden_size;
    let ids: Vec<u32> = (0..3).flat_map(|i| golden_ids(&g, i)).collect();
    for skip in [1, 2] {
        let (shape, batch) = run(&m, &ids, skip);
        assert_eq!(shape, vec![3, 77, c]);
        for i in 0..3 {
            let (_, single) = run(&m, &ids[i * 77..(i + 1) * 77], skip);
            let e = rel_l2(&batch[i * 77 * c..(i + 1) * 77 * c], &single);
            eprintln!("batch row {i} clip skip {skip}: relative L2 vs single run {e:.3e}");
            assert!(e <= 1e-6, "batch row {i} differs from its single run: {e:.3e}");
        }
    }
}

#[test]
fn f16_matches_goldens_within_bound() {
    let g = golden();
    if !ctx().caps.shader_f16 {
        // The adapter cannot hold f16 tensors: loading must say so instead of producing garbage.
        let files = ModelFiles::open(&sources()[0]).unwrap();
        let cfg = detect(&files).unwrap().clip;
        let l = Loader::new(ctx(), files.text_encoder(), &AdaptableWeights::default(), DType::F16);
        let err = ClipTextModel::load(&l, &cfg).err().expect("f16 load must fail");
        eprintln!("no SHADER_F16 on this adapter; f16 load fails as expected: {err}");
        return;
    }
    for src in sources() {
        let m = load(&src, DType::F16);
        for i in 0..3 {
            let ids = golden_ids(&g, i);
            for (skip, key) in [(1, "te_last"), (2, "te_clipskip2")] {
                let want = g.read_f32(&format!("{key}_{i}")).unwrap();
                let (_, got) = run(&m, &ids, skip);
                assert_close(&format!("f16 {src} {key}_{i}"), &got, &want, TOL_TE_F16);
            }
        }
    }
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
}

#[test]
fn emphasis_follows_a1111_original() {
    let tok = Tokenizer::embedded().unwrap();
    let m = load(&sources()[0], DType::F32);
    let c = m.cfg.hidden_size;
    let parsed = parse_prompt(tok, "a photo of a (cat:1.5) sitting on a [mat]").unwrap();
    assert_eq!(parsed.chunks.len(), 1);
    let w = parsed.chunks[0].weights;
    assert!(w.contains(&1.5) && w.iter().any(|&x| (x - 1.0 / 1.1).abs() < 1e-6), "weights {w:?}");

    let got = m.encode_prompt(ctx(), &parsed, 1).unwrap();
    assert_eq!(got.shape, vec![1, 77, c]);
    let got = got.to_vec(ctx()).unwrap();

    // The formula on the host, from the unweighted encoding of the same ids.
    let (_, z) = run(&m, &parsed.chunks[0].ids, 1);
    let original = mean(&z);
    let weighted: Vec<f64> = z.iter().enumerate().map(|(j, &v)| v as f64 * w[j / c] as f64).collect();
    let new_mean = weighted.iter().sum::<f64>() / weighted.len() as f64;
    let want: Vec<f32> = weighted.iter().map(|&v| (v * original / new_mean) as f32).collect();
    assert_close("emphasis vs host formula", &got, &want, 1e-6);
    let drift = (mean(&got) - original).abs();
    let scale = z.iter().map(|&v| v.abs() as f64).fold(0.0, f64::max);
    eprintln!("emphasis: mean before {original:.6e}, weighted {new_mean:.6e}, after {:.6e}", mean(&got));
    assert!(drift <= 1e-6 * scale, "mean not preserved: {original} -> {}", mean(&got));
    // The weighting did change the states (it is not a no-op).
    assert!(rel_l2(&got, &z) > 1e-3);

    // Without emphasis, encode_prompt is exactly the forward pass.
    let plain = parse_prompt(tok, "a photo of a cat sitting on a mat").unwrap();
    let (_, z) = run(&m, &plain.chunks[0].ids, 2);
    let got = m.encode_prompt(ctx(), &plain, 2).unwrap().to_vec(ctx()).unwrap();
    assert_eq!(got, z);
}

/// The tiny model's final LayerNorm makes every chunk's mean ~1e-9, so the model test above checks
/// the mean only against the values' scale; here a chunk with a clear mean checks it tightly.
#[test]
fn emphasis_preserves_a_nonzero_mean() {
    let (t, c) = (77, 16);
    let z0: Vec<f32> = (0..t * c).map(|j| 0.5 + (j as f32 * 0.37).sin()).collect();
    let w: Vec<f32> = (0..t).map(|i| [1.0, 1.5, 0.8, 1.21][i % 4]).collect();
    let mut z = z0.clone();
    apply_emphasis_original(&mut z, &w, c).unwrap();
    let (before, after) = (mean(&z0), mean(&z));
    eprintln!("emphasis on a synthetic chunk: mean {before:.9} -> {after:.9}");
    assert!((after - before).abs() <= 1e-6 * before.abs(), "mean {before} -> {after}");
    let new_mean = z0.iter().enumerate().map(|(j, &v)| v as f64 * w[j / c] as f64).sum::<f64>() / z0.len() as f64;
    let want: Vec<f32> =
        z0.iter().enumerate().map(|(j, &v)| (v as f64 * w[j / c] as f64 * before / new_mean) as f32).collect();
    assert_close("synthetic emphasis", &z, &want, 1e-7);
    let mut same = z0.clone();
    apply_emphasis_original(&mut same, &[1.0; 77], c).unwrap();
    assert_eq!(same, z0);
    assert!(apply_emphasis_original(&mut same, &[1.0; 76], c).is_err());
}

fn long_prompt(tok: &Tokenizer) -> ParsedPrompt {
    // 100 one-token words, no commas: 75 in the first chunk, 25 in the second.
    let text = vec!["cat"; 100].join(" ");
    let p = parse_prompt(tok, &text).unwrap();
    assert_eq!(p.chunks.len(), 2, "token count {}", p.token_count);
    p
}

#[test]
fn long_prompt_concatenates_chunks() {
    let tok = Tokenizer::embedded().unwrap();
    let m = load(&sources()[1], DType::F32);
    let c = m.cfg.hidden_size;
    let p = long_prompt(tok);
    let cond_t = m.encode_prompt(ctx(), &p, 1).unwrap();
    assert_eq!(cond_t.shape, vec![1, 154, c]);
    let cond = cond_t.to_vec(ctx()).unwrap();
    for (k, chunk) in p.chunks.iter().enumerate() {
        let (_, z) = run(&m, &chunk.ids, 1);
        assert_eq!(&cond[k * 77 * c..(k + 1) * 77 * c], &z[..], "chunk {k}");
    }
}

#[test]
fn bad_arguments_are_errors() {
    let g = golden();
    let m = load(&sources()[0], DType::F32);
    let ids = golden_ids(&g, 0);
    let layers = m.layers.len();
    let mut rec = Recorder::new();
    for skip in [0, layers + 1, 100] {
        let e = m.forward(ctx(), &mut rec, &ids, skip).err().unwrap_or_else(|| panic!("clip skip {skip} accepted"));
        eprintln!("clip skip {skip}: {e}");
    }
    assert!(m.forward(ctx(), &mut rec, &ids, layers).is_ok(), "clip skip = layers runs one layer");
    assert!(m.forward(ctx(), &mut rec, &ids[..76], 1).is_err(), "76 ids");
    assert!(m.forward(ctx(), &mut rec, &[], 1).is_err(), "no ids");
    let mut bad = ids.clone();
    bad[3] = m.cfg.vocab_size as u32;
    assert!(m.forward(ctx(), &mut rec, &bad, 1).is_err(), "id outside the vocabulary");
    rec.submit(ctx()).unwrap();
    let tok = Tokenizer::embedded().unwrap();
    let p = parse_prompt(tok, "cat").unwrap();
    assert!(m.encode_prompt(ctx(), &p, 0).is_err());
}
