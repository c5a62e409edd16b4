//! TAESD (diffusers `AutoencoderTiny`) against the taesd-tiny goldens (diffusers 0.35.2, float32,
//! real architecture at width 16), loaded from both published layouts: decode and encode in f32
//! and f16, an odd non-square latent (9×13) in a batch of 2, one image of the batch alone, and
//! files that are not a TAESD half.

mod common;

use common::{assert_close, ctx, rel_l2};
use lorafuse::models::vae::{TaesdDecoder, TaesdEncoder, TaesdLayout};
use lorafuse::nn::{AdaptableWeights, Loader};
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::weights::{Component, VarBuilder};
use lorafuse::{DType, GpuTensor, Recorder};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/taesd-tiny");
/// The brief's f32 bound for a 30-conv network against torch.
const TOL_F32: f64 = 1e-4;
/// f16 weights and activations: the VAE's f16 bound (10× the f16 kernel bound).
const TOL_F16: f64 = 2e-3 * 10.0;

fn diffusers_file() -> String {
    format!("{FIX}/diffusers/diffusion_pytorch_model.safetensors")
}

fn loader(path: &str, dtype: DType) -> Loader<'static> {
    let vb = VarBuilder::open_file(path, Component::Vae).unwrap_or_else(|e| panic!("open {path}: {e}"));
    Loader::new(ctx(), vb, &AdaptableWeights::default(), dtype)
}

/// (file, layout) pairs for each half: the diffusers file holds both.
fn decoders() -> [(String, TaesdLayout); 2] {
    [(diffusers_file(), TaesdLayout::Diffusers), (format!("{FIX}/taesd_decoder.safetensors"), TaesdLayout::Standalone)]
}

fn encoders() -> [(String, TaesdLayout); 2] {
    [(diffusers_file(), TaesdLayout::Diffusers), (format!("{FIX}/taesd_encoder.safetensors"), TaesdLayout::Standalone)]
}

fn golden(name: &str) -> (Vec<usize>, Vec<f32>) {
    let g = SafeTensorsFile::open(format!("{FIX}/golden.safetensors")).expect("golden.safetensors");
    (g.info(name).unwrap_or_else(|| panic!("golden {name}")).shape.clone(), g.read_f32(name).unwrap())
}

fn run_decoder(d: &TaesdDecoder, shape: &[usize], z: &[f32], dtype: DType) -> (Vec<usize>, Vec<f32>) {
    let zt = GpuTensor::from_slice(ctx(), shape, z, dtype).unwrap();
    let mut rec = Recorder::new();
    let y = d.forward(ctx(), &mut rec, &zt).expect("decode");
    rec.submit(ctx()).unwrap();
    (y.shape.clone(), y.to_vec(ctx()).unwrap())
}

fn run_encoder(e: &TaesdEncoder, shape: &[usize], x: &[f32], dtype: DType) -> (Vec<usize>, Vec<f32>) {
    let xt = GpuTensor::from_slice(ctx(), shape, x, dtype).unwrap();
    let mut rec = Recorder::new();
    let y = e.forward(ctx(), &mut rec, &xt).expect("encode");
    rec.submit(ctx()).unwrap();
    (y.shape.clone(), y.to_vec(ctx()).unwrap())
}

#[test]
fn decode_matches_diffusers_from_both_layouts() {
    let (zs, z) = golden("latents");
    let (ds, want) = golden("decoded");
    assert_eq!(zs, [2, 4, 9, 13]);
    for (path, layout) in decoders() {
        for (dtype, tol) in [(DType::F32, TOL_F32), (DType::F16, TOL_F16)] {
            let d = TaesdDecoder::load(&loader(&path, dtype)).unwrap_or_else(|e| panic!("load {path}: {e}"));
            assert_eq!((d.layout, d.latent_channels, d.out_channels), (layout, 4, 3));
            let (shape, got) = run_decoder(&d, &zs, &z, dtype);
            assert_eq!(shape, ds);
            println!("decode {layout:?} {dtype:?}: rel L2 {:.3e}", rel_l2(&got, &want));
            assert_close(&format!("{path}: decode {dtype:?}"), &got, &want, tol);
        }
    }
}

#[test]
fn encode_matches_diffusers_from_both_layouts() {
    let (xs, x) = golden("image");
    let (es, want) = golden("encoded");
    assert_eq!(xs, [2, 3, 70, 102]);
    for (path, layout) in encoders() {
        for (dtype, tol) in [(DType::F32, TOL_F32), (DType::F16, TOL_F16)] {
            let e = TaesdEncoder::load(&loader(&path, dtype)).unwrap_or_else(|e| panic!("load {path}: {e}"));
            assert_eq!((e.layout, e.in_channels, e.latent_channels), (layout, 3, 4));
            let (shape, got) = run_encoder(&e, &xs, &x, dtype);
            assert_eq!(shape, es);
            println!("encode {layout:?} {dtype:?}: rel L2 {:.3e}", rel_l2(&got, &want));
            assert_close(&format!("{path}: encode {dtype:?}"), &got, &want, tol);
        }
    }
}

#[test]
fn batch_elements_are_independent() {
    // The second image of the batch alone gives the second half of the batched result.
    let (zs, z) = golden("latents");
    let (_, want_dec) = golden("decoded");
    let d = TaesdDecoder::load(&loader(&diffusers_file(), DType::F32)).unwrap();
    let n = z.len() / 2;
    let (shape, got) = run_decoder(&d, &[1, zs[1], zs[2], zs[3]], &z[n..], DType::F32);
    assert_eq!(shape, [1, 3, 72, 104]);
    assert_close("decode image 1 alone", &got, &want_dec[want_dec.len() / 2..], TOL_F32);

    let (xs, x) = golden("image");
    let (_, want_enc) = golden("encoded");
    let e = TaesdEncoder::load(&loader(&diffusers_file(), DType::F32)).unwrap();
    let n = x.len() / 2;
    let (shape, got) = run_encoder(&e, &[1, xs[1], xs[2], xs[3]], &x[n..], DType::F32);
    assert_eq!(shape, [1, 4, 9, 13]);
    assert_close("encode image 1 alone", &got, &want_enc[want_enc.len() / 2..], TOL_F32);
}

/// Writes `tensors` (name, shape, values) as an f32 safetensors file.
fn write_st(path: &std::path::Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, v) in tensors {
        let start = data.len();
        data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

fn load_err(path: &str) -> (String, String) {
    let vb = match VarBuilder::open_file(path, Component::Vae) {
        Ok(vb) => vb,
        Err(e) => return (e.to_string(), e.to_string()),
    };
    let l = Loader::new(ctx(), vb, &AdaptableWeights::default(), DType::F32);
    let dec = TaesdDecoder::load(&l).map(|_| "loaded".to_string()).unwrap_or_else(|e| e.to_string());
    let enc = TaesdEncoder::load(&l).map(|_| "loaded".to_string()).unwrap_or_else(|e| e.to_string());
    (dec, enc)
}

#[test]
fn wrong_files_fail_with_a_reason() {
    let dir = std::env::temp_dir().join(format!("lorafuse-taesd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // The halves swapped.
    let (d, _) = load_err(&format!("{FIX}/taesd_encoder.safetensors"));
    assert!(d.contains("not a TAESD decoder") && d.contains("standalone TAESD encoder"), "{d}");
    let (_, e) = load_err(&format!("{FIX}/taesd_decoder.safetensors"));
    assert!(e.contains("not a TAESD encoder") && e.contains("standalone TAESD decoder"), "{e}");

    // A full AutoencoderKL file (diffusers names).
    let kl = dir.join("vae.safetensors");
    write_st(&kl, &[("decoder.up_blocks.0.resnets.0.conv1.weight", vec![4, 4, 3, 3], vec![0.0; 144])]);
    let (d, e) = load_err(kl.to_str().unwrap());
    assert!(d.contains("not a TAESD decoder") && d.contains("full AutoencoderKL"), "{d}");
    assert!(e.contains("not a TAESD encoder") && e.contains("full AutoencoderKL"), "{e}");

    // A truncated file: the header promises more bytes than there are.
    let bytes = std::fs::read(format!("{FIX}/taesd_decoder.safetensors")).unwrap();
    let cut = dir.join("truncated.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (d, _) = load_err(cut.to_str().unwrap());
    assert!(!d.contains("loaded"), "{d}");
    println!("truncated: {d}");

    // The right first keys but a layer missing further down names the tensor.
    let partial = dir.join("partial.safetensors");
    write_st(
        &partial,
        &[("1.weight", vec![8, 4, 3, 3], vec![0.0; 288]), ("3.conv.0.weight", vec![8, 8, 3, 3], vec![0.0; 576])],
    );
    let (d, _) = load_err(partial.to_str().unwrap());
    assert!(d.contains("3.conv.0.bias") || d.contains("3.conv.2") || d.contains("missing"), "{d}");
    println!("partial: {d}");

    // Wrong input channels are a shape error, not a kernel failure.
    let dec = TaesdDecoder::load(&loader(&diffusers_file(), DType::F32)).unwrap();
    let x = GpuTensor::zeros(ctx(), &[1, 3, 9, 13], DType::F32).unwrap();
    let e = dec.forward(ctx(), &mut Recorder::new(), &x).err().expect("3-channel latents must fail");
    assert!(e.to_string().contains("taesd.decode"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
