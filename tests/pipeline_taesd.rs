//! TAESD as the pipeline loads it (`pipeline::fast_decode`): which family a file says it is for
//! (its name, its folders, a diffusers config, its metadata) and the refusals that follow,
//! 16-channel decoders, folders, the encoder found beside a decoder, the decode of host latents
//! against the taesd-tiny diffusers golden, and the random full-width TAESD writer's layout.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_close, ctx, write_f32_safetensors};
use lorafuse::bench::random_model::taesd_decoder_tensors;
use lorafuse::models::vae::TaesdLayout;
use lorafuse::pipeline::fast_decode::{decode_latents_host, kind_evidence, load_taesd, load_taesd_encoder, TaesdKind};
use lorafuse::weights::detect::Family;
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::{DType, HostTensor};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/taesd-tiny");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIX).join(name)
}

/// A fresh folder whose own name says nothing about a family.
fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-tiny-ae-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy(src: &Path, dst: &Path) -> PathBuf {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, dst).unwrap();
    dst.to_path_buf()
}

fn decoder_err(path: &Path, family: Family) -> String {
    match load_taesd(ctx(), path, family, DType::F32) {
        Ok(_) => panic!("{} loaded for {}", path.display(), family.name()),
        Err(e) => e.to_string(),
    }
}

fn golden(name: &str) -> HostTensor {
    let g = SafeTensorsFile::open(fixture("golden.safetensors")).unwrap();
    HostTensor::new(&g.info(name).unwrap().shape.clone(), g.read_f32(name).unwrap()).unwrap()
}

#[test]
fn names_say_the_family() {
    for (name, want) in [
        ("taesd_decoder.safetensors", Some(TaesdKind::Taesd)),
        ("taesdxl_decoder.safetensors", Some(TaesdKind::Taesdxl)),
        ("taesd_xl_decoder", Some(TaesdKind::Taesdxl)),
        ("TAESD-XL", Some(TaesdKind::Taesdxl)),
        ("models--madebyollin--taesdxl", Some(TaesdKind::Taesdxl)),
        ("madebyollin/taesd", Some(TaesdKind::Taesd)),
        ("taesd3_decoder.safetensors", Some(TaesdKind::Taesd3)),
        ("taef1_decoder.safetensors", Some(TaesdKind::Taef1)),
        ("decoder.safetensors", None),
        // Letters "xl" inside a word are not a family.
        ("pixlab_decoder", None),
        ("diffusion_pytorch_model.safetensors", None),
    ] {
        assert_eq!(TaesdKind::from_name(name), want, "{name}");
    }
}

#[test]
fn a_file_for_the_other_family_is_refused() {
    let d = tmpdir("family");
    let dec = fixture("taesd_decoder.safetensors");

    // The published names: TAESDXL's file for an SD1 model, TAESD's for an SDXL model.
    let xl = copy(&dec, &d.join("taesdxl_decoder.safetensors"));
    let e = decoder_err(&xl, Family::Sd1);
    assert!(e.contains("TAESDXL decoder for an SD1.x model") && e.contains("taesdxl_decoder"), "{e}");
    assert!(load_taesd(ctx(), &xl, Family::Sdxl, DType::F32).is_ok());
    let sd = copy(&dec, &d.join("taesd_decoder.safetensors"));
    let e = decoder_err(&sd, Family::Sdxl);
    assert!(e.contains("TAESD decoder for an SDXL model"), "{e}");
    assert!(load_taesd(ctx(), &sd, Family::Sd1, DType::F32).is_ok());
    let underscored = copy(&dec, &d.join("taesd_xl.safetensors"));
    assert!(decoder_err(&underscored, Family::Sd1).contains("TAESDXL"));

    // A name that says nothing: accepted for either family (the shapes are the same).
    let plain = copy(&dec, &d.join("decoder.safetensors"));
    for f in [Family::Sd1, Family::Sdxl] {
        load_taesd(ctx(), &plain, f, DType::F32).unwrap_or_else(|e| panic!("{}: {e}", f.name()));
    }

    // A diffusers folder named for SDXL, given as the folder or as its weight file.
    let diffusers = fixture("diffusers/diffusion_pytorch_model.safetensors");
    let folder = d.join("taesdxl");
    copy(&diffusers, &folder.join("diffusion_pytorch_model.safetensors"));
    copy(&fixture("diffusers/config.json"), &folder.join("config.json"));
    assert!(decoder_err(&folder, Family::Sd1).contains("TAESDXL decoder"));
    assert!(decoder_err(&folder.join("diffusion_pytorch_model.safetensors"), Family::Sd1).contains("TAESDXL"));
    let dl = load_taesd(ctx(), &folder, Family::Sdxl, DType::F32).unwrap();
    assert_eq!(dl.layout, TaesdLayout::Diffusers);

    // The Hugging Face cache: the repository's name is three folders up.
    let cache = d.join("models--madebyollin--taesdxl/snapshots/0123abcd");
    copy(&diffusers, &cache.join("diffusion_pytorch_model.safetensors"));
    assert!(decoder_err(&cache, Family::Sd1).contains("TAESDXL"));

    // A neutral folder whose config names the repository.
    let named = d.join("tiny-ae");
    copy(&diffusers, &named.join("diffusion_pytorch_model.safetensors"));
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("diffusers/config.json")).unwrap()).unwrap();
    cfg["_name_or_path"] = "madebyollin/taesdxl".into();
    std::fs::write(named.join("config.json"), cfg.to_string()).unwrap();
    let e = decoder_err(&named, Family::Sd1);
    assert!(e.contains("_name_or_path"), "{e}");
    load_taesd(ctx(), &named, Family::Sdxl, DType::F32).unwrap();

    // Metadata beats a neutral name.
    let st = SafeTensorsFile::open(&dec).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
        st.tensors().map(|(n, i)| (n.to_string(), i.shape.clone(), st.read_f32(n).unwrap())).collect();
    let meta_file = d.join("weights.safetensors");
    let meta = [("modelspec.title".to_string(), "TAESDXL decoder".to_string())].into_iter().collect();
    write_f32_safetensors(&meta_file, &tensors, meta);
    let ev = kind_evidence(&meta_file, &SafeTensorsFile::open(&meta_file).unwrap()).unwrap();
    assert_eq!(ev.kind, TaesdKind::Taesdxl);
    assert!(decoder_err(&meta_file, Family::Sd1).contains("metadata"));

    // A TAESD3-named file is refused for both families by its name.
    let sd3 = copy(&dec, &d.join("taesd3_decoder.safetensors"));
    assert!(decoder_err(&sd3, Family::Sdxl).contains("TAESD3 decoder for an SDXL model"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn sixteen_latent_channels_are_refused() {
    let d = tmpdir("channels");
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = taesd_decoder_tensors(8, 16)
        .unwrap()
        .into_iter()
        .map(|s| {
            let n = s.numel();
            (s.key, s.shape, vec![0.01; n])
        })
        .collect();
    let f = d.join("decoder.safetensors");
    write_f32_safetensors(&f, &tensors, Default::default());
    let e = decoder_err(&f, Family::Sd1);
    assert!(e.contains("16 latent channels") && e.contains("SD1.x"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn folders_and_the_encoder_beside_the_decoder() {
    let d = tmpdir("folders");
    // A folder of the two standalone halves.
    let halves = d.join("halves");
    copy(&fixture("taesd_decoder.safetensors"), &halves.join("taesd_decoder.safetensors"));
    copy(&fixture("taesd_encoder.safetensors"), &halves.join("taesd_encoder.safetensors"));
    let dec = load_taesd(ctx(), &halves, Family::Sd1, DType::F32).unwrap();
    assert_eq!((dec.layout, dec.latent_channels), (TaesdLayout::Standalone, 4));
    let enc = load_taesd_encoder(ctx(), &halves, Family::Sd1, DType::F32).unwrap();
    assert_eq!((enc.layout, enc.latent_channels), (TaesdLayout::Standalone, 4));
    // The encoder asked for with the decoder's file finds its sibling.
    let enc = load_taesd_encoder(ctx(), &halves.join("taesd_decoder.safetensors"), Family::Sd1, DType::F32).unwrap();
    assert_eq!(enc.in_channels, 3);
    // And the family check holds for the encoder too.
    let e = load_taesd_encoder(ctx(), &halves, Family::Sdxl, DType::F32).err().expect("TAESD encoder for SDXL");
    assert!(e.to_string().contains("TAESD encoder for an SDXL model"), "{e}");
    // The diffusers fixture folder holds both halves in one file.
    load_taesd_encoder(ctx(), &fixture("diffusers"), Family::Sd1, DType::F32).unwrap();

    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = decoder_err(&empty, Family::Sd1);
    assert!(e.contains("no TAESD decoder in this folder"), "{e}");
    let e = decoder_err(&d.join("missing.safetensors"), Family::Sd1);
    assert!(e.contains("does not exist"), "{e}");
    // A full VAE or anything else: the model's own reason, with the file.
    let e = decoder_err(&fixture("taesd_encoder.safetensors"), Family::Sd1);
    assert!(e.contains("not a TAESD decoder"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn decode_matches_the_diffusers_golden() {
    let z = golden("latents");
    // diffusers' AutoencoderTiny.decode in [-1, 1], then its image postprocessing.
    let want = lorafuse::models::vae::postprocess(&golden("decoded").data);
    for path in [fixture("taesd_decoder.safetensors"), fixture("diffusers")] {
        let dec = load_taesd(ctx(), &path, Family::Sd1, DType::F32).unwrap();
        let images = decode_latents_host(ctx(), &dec, &z).unwrap();
        assert_eq!(images.len(), 2);
        let got: Vec<f32> = images.iter().flat_map(|i| i.data.iter().copied()).collect();
        assert_eq!(images[0].shape, [3, 72, 104]);
        assert_close(&format!("{}: decode", path.display()), &got, &want, 1e-4);
        // One image's [C, h, w] alone.
        let per = z.data.len() / 2;
        let one = HostTensor::new(&z.shape[1..], z.data[per..].to_vec()).unwrap();
        let single = decode_latents_host(ctx(), &dec, &one).unwrap();
        assert_close("image 1 alone", &single[0].data, &want[want.len() / 2..], 1e-4);
        // Three channels are not this decoder's latents.
        let bad = HostTensor::new(&[1, 3, 9, 13], vec![0.0; 3 * 9 * 13]).unwrap();
        assert!(decode_latents_host(ctx(), &dec, &bad).is_err());
    }
}

#[test]
fn random_taesd_writer_has_the_published_layout() {
    // The fixture is madebyollin's standalone decoder at width 16: same keys, same shapes.
    let st = SafeTensorsFile::open(fixture("taesd_decoder.safetensors")).unwrap();
    let mut want: Vec<(String, Vec<usize>)> = st.tensors().map(|(n, i)| (n.to_string(), i.shape.clone())).collect();
    let mut got: Vec<(String, Vec<usize>)> =
        taesd_decoder_tensors(16, 4).unwrap().into_iter().map(|s| (s.key, s.shape)).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // Written at full width, it loads and decodes to finite pixels.
    let d = tmpdir("writer");
    let f = d.join("taesd_decoder.safetensors");
    lorafuse::bench::random_model::write_taesd_decoder(&f, 64, 1, lorafuse::weights::StDType::F16).unwrap();
    let dec = load_taesd(ctx(), &f, Family::Sd1, DType::F32).unwrap();
    let z = HostTensor::new(&[1, 4, 4, 4], (0..64).map(|i| (i as f32 * 0.37).sin()).collect()).unwrap();
    let img = decode_latents_host(ctx(), &dec, &z).unwrap();
    assert_eq!(img[0].shape, [3, 32, 32]);
    assert!(img[0].data.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    std::fs::remove_dir_all(&d).ok();
}
