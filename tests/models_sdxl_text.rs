//! SDXL's two text encoders against the sdxl-tiny goldens (diffusers 0.42 `encode_prompt`,
//! float32): the concatenated penultimate hidden states and encoder 2's pooled projection, from
//! the single file (OpenCLIP layout: fused `in_proj`, transposed `text_projection`) and from the
//! diffusers folder; f16 storage; A1111 emphasis and multi-chunk prompts per encoder.

mod common;

use common::{assert_close, ctx, rel_l2};
use lorafuse::models::clip::prompt::parse_prompt;
use lorafuse::models::clip::sdxl::{encode_prompt_sdxl, pad_for_encoder2, PAD2};
use lorafuse::models::clip::text_model::ClipTextModel;
use lorafuse::models::clip::tokenizer::{Tokenizer, EOS};
use lorafuse::nn::{AdaptableWeights, Loader};
use lorafuse::weights::detect::detect;
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::weights::ModelFiles;
use lorafuse::DType;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sdxl-tiny");
/// Fixture README: text ≤ 1e-4 relative L2.
const TOL_TE: f64 = 1e-4;
/// f16 weights and activations, as the SD1 text encoder test allows.
const TOL_TE_F16: f64 = 1e-2;

fn sources() -> [String; 2] {
    [format!("{FIX}/model-fp16.safetensors"), format!("{FIX}/model")]
}

fn load(path: &str, dtype: DType) -> (ClipTextModel, ClipTextModel) {
    let files = ModelFiles::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let cfg = detect(&files).unwrap_or_else(|e| panic!("detect {path}: {e}"));
    let a = AdaptableWeights::default();
    let te1 = ClipTextModel::load(&Loader::new(ctx(), files.text_encoder(), &a, dtype), &cfg.clip).unwrap();
    let cfg2 = cfg.clip2.expect("SDXL has a second text encoder");
    let te2 = ClipTextModel::load(&Loader::new(ctx(), files.text_encoder_2(), &a, dtype), &cfg2).unwrap();
    assert!(te2.text_projection.is_some() && te1.text_projection.is_none());
    assert!(
        files.unused_keys().iter().all(|k| !k.contains("embedders") && !k.starts_with("text_encoder")),
        "{:?}",
        files.unused_keys()
    );
    (te1, te2)
}

fn run_prompts() -> (String, String) {
    let text = std::fs::read_to_string(format!("{FIX}/runs.json")).unwrap();
    let runs: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = &runs["run_euler"];
    (r["prompt"].as_str().unwrap().to_string(), r["negative_prompt"].as_str().unwrap().to_string())
}

#[test]
fn goldens_from_single_file_and_folder() {
    let g = SafeTensorsFile::open(format!("{FIX}/golden.safetensors")).unwrap();
    let tok = Tokenizer::embedded().unwrap();
    let (prompt, negative) = run_prompts();
    for src in sources() {
        let (te1, te2) = load(&src, DType::F32);
        for (text, key) in [(&prompt, "prompt"), (&negative, "negative")] {
            let parsed = parse_prompt(tok, text).unwrap();
            let out = encode_prompt_sdxl(ctx(), &te1, &te2, &parsed).unwrap();
            assert_eq!(out.context.shape, vec![1, 77, 128]);
            let ctx_want = g.read_f32(&format!("te_{key}_embeds")).unwrap();
            // Measured on lavapipe: 3.2e-7 to 3.9e-7 for context and pooled, both layouts.
            assert_close(&format!("{src} te_{key}_embeds"), &out.context.to_vec(ctx()).unwrap(), &ctx_want, TOL_TE);
            let pooled_want =
                g.read_f32(&format!("te_{}pooled", if key == "prompt" { "" } else { "negative_" })).unwrap();
            assert_close(&format!("{src} pooled {key}"), &out.pooled, &pooled_want, TOL_TE);
        }
    }
}

#[test]
fn f16_storage_matches_the_goldens_loosely() {
    let g = SafeTensorsFile::open(format!("{FIX}/golden.safetensors")).unwrap();
    let tok = Tokenizer::embedded().unwrap();
    let (prompt, _) = run_prompts();
    let (te1, te2) = load(&sources()[0], DType::F16);
    let out = encode_prompt_sdxl(ctx(), &te1, &te2, &parse_prompt(tok, &prompt).unwrap()).unwrap();
    let e = rel_l2(&out.context.to_vec(ctx()).unwrap(), &g.read_f32("te_prompt_embeds").unwrap());
    let p = rel_l2(&out.pooled, &g.read_f32("te_pooled").unwrap());
    println!("f16: context rel L2 {e:.2e}, pooled {p:.2e}");
    assert!(e < TOL_TE_F16 && p < TOL_TE_F16, "context {e}, pooled {p}");
}

#[test]
fn encoder2_pads_with_bang_after_the_end_token() {
    let tok = Tokenizer::embedded().unwrap();
    // transformers pads with the bare "!" token (id 0), not "!</w>".
    assert_eq!(tok.token_id("!"), Some(PAD2));
    let parsed = parse_prompt(tok, "a cat").unwrap();
    let ids = parsed.chunks[0].ids;
    let ids2 = pad_for_encoder2(&ids);
    let end = ids.iter().position(|&t| t == EOS).unwrap();
    assert_eq!(ids[..=end], ids2[..=end]);
    assert!(ids2[end + 1..].iter().all(|&t| t == PAD2) && ids[end + 1..].iter().all(|&t| t == EOS));
}

/// Emphasis scales each encoder's states separately (A1111 applies it per embedder, then
/// concatenates); the pooled vector ignores it. Two chunks concatenate along the tokens with the
/// pooled vector from the first.
#[test]
fn emphasis_and_chunks_act_per_encoder() {
    let tok = Tokenizer::embedded().unwrap();
    let (te1, te2) = load(&sources()[1], DType::F32);
    let plain = encode_prompt_sdxl(ctx(), &te1, &te2, &parse_prompt(tok, "a red cat").unwrap()).unwrap();
    let heavy = encode_prompt_sdxl(ctx(), &te1, &te2, &parse_prompt(tok, "a (red:1.5) cat").unwrap()).unwrap();
    assert_eq!(plain.pooled, heavy.pooled, "the pooled vector takes no emphasis");
    let (a, b) = (plain.context.to_vec(ctx()).unwrap(), heavy.context.to_vec(ctx()).unwrap());
    // Per encoder, the weighted chunk keeps the plain chunk's mean (A1111's renormalisation).
    let mean = |v: &[f32], lo: usize, hi: usize| {
        v.chunks(128).map(|r| r[lo..hi].iter().map(|&x| x as f64).sum::<f64>()).sum::<f64>() / (77.0 * (hi - lo) as f64)
    };
    for (lo, hi) in [(0, 64), (64, 128)] {
        let (ma, mb) = (mean(&a, lo, hi), mean(&b, lo, hi));
        assert!((ma - mb).abs() <= 1e-5 * ma.abs().max(1e-3), "encoder columns {lo}..{hi}: mean {ma} vs {mb}");
    }
    assert!(rel_l2(&b, &a) > 1e-3, "emphasis changed nothing");

    let long = vec!["cat"; 100].join(" ");
    let parsed = parse_prompt(tok, &long).unwrap();
    assert_eq!(parsed.chunks.len(), 2);
    let two = encode_prompt_sdxl(ctx(), &te1, &te2, &parsed).unwrap();
    assert_eq!(two.context.shape, vec![1, 154, 128]);
    let mut first = parsed.clone();
    first.chunks.truncate(1);
    let one = encode_prompt_sdxl(ctx(), &te1, &te2, &first).unwrap();
    assert_eq!(two.pooled, one.pooled, "pooled from the first chunk");
    let t = two.context.to_vec(ctx()).unwrap();
    assert_close("first chunk of two", &t[..77 * 128], &one.context.to_vec(ctx()).unwrap(), 1e-6);
}
