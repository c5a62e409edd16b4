//! Loading SD1.x weights: the single-file (LDM) checkpoint read through the diffusers-named
//! builder equals the diffusers folder bit for bit, every checkpoint key is reached, detection
//! gives the fixture's configs, dtype conversion, and the errors for other families and
//! missing keys.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use lorafuse::weights::names::{diffusers_to_ldm, ldm_to_diffusers, skip_reason};
use lorafuse::weights::{detect, Component, Layout, LdmLayout, ModelFiles, SafeTensorsFile};
use serde_json::{json, Value};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny").join(rel)
}

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-weights-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Serialises tensors `(name, dtype, shape, little-endian bytes)` as a safetensors file.
type Entry<'a> = (&'a str, &'a str, Vec<usize>, Vec<u8>);

fn st_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in entries {
        let off = [data.len(), data.len() + bytes.len()];
        header.insert(name.to_string(), json!({ "dtype": dtype, "shape": shape, "data_offsets": off }));
        data.extend_from_slice(bytes);
    }
    let h = serde_json::to_string(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// An f16 tensor of zeros.
fn z(name: &str, shape: &[usize]) -> Entry<'static> {
    let n: usize = shape.iter().product();
    (Box::leak(name.to_string().into_boxed_str()), "F16", shape.to_vec(), vec![0u8; 2 * n])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Each diffusers component file of the fixture folder, opened directly.
fn folder_files() -> Vec<(Component, SafeTensorsFile)> {
    vec![
        (Component::Unet, SafeTensorsFile::open(fixture("model/unet/diffusion_pytorch_model.safetensors")).unwrap()),
        (Component::Vae, SafeTensorsFile::open(fixture("model/vae/diffusion_pytorch_model.safetensors")).unwrap()),
        (Component::TextEncoder, SafeTensorsFile::open(fixture("model/text_encoder/model.safetensors")).unwrap()),
    ]
}

#[test]
fn single_file_equals_folder_bit_for_bit_and_every_key_is_used() {
    let single = ModelFiles::open(fixture("model-fp16.safetensors")).unwrap();
    let folder = ModelFiles::open(fixture("model")).unwrap();
    assert_eq!(single.layout(), Layout::SingleFile);
    assert_eq!(folder.layout(), Layout::DiffusersFolder);

    let mut compared = 0usize;
    let mut reshaped = 0usize;
    for (c, file) in folder_files() {
        for (name, info) in file.tensors() {
            let want = &info.shape;
            let a = single.builder(c).get_f16(name, want).unwrap();
            let b = folder.builder(c).get_f16(name, want).unwrap();
            assert_eq!(a.len(), b.len(), "{name}");
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{c:?} {name}: f16 bits differ");
            let a32 = single.builder(c).get(name, want).unwrap();
            assert_eq!(&a32.shape, want);
            assert!(a32.data.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_f32().to_bits()), "{name}: f32 differs");
            if single.builder(c).shape(name).as_ref() != Some(want) {
                reshaped += 1;
            }
            compared += 1;
        }
    }
    // 684 UNet + 244 VAE + 84 text-encoder tensors; the 8 VAE mid-attention q/k/v/out weights are
    // 1×1 convs in the LDM file and linears in the folder.
    assert_eq!(compared, 1012);
    assert_eq!(reshaped, 8);
    // Every key of both layouts was read. The fixture has none of the expected-unused keys
    // (no position_ids buffer, no EMA, no schedule buffers), so the skip list is empty too.
    assert_eq!(single.unused_keys(), Vec::<String>::new());
    assert_eq!(folder.unused_keys(), Vec::<String>::new());
    assert!(single.skipped_keys().is_empty());
    assert_eq!(single.keys().len(), 1012);
}

#[test]
fn mapping_reaches_every_ldm_key_and_round_trips() {
    let single = ModelFiles::open(fixture("model-fp16.safetensors")).unwrap();
    let layout = single.ldm_layout().unwrap().clone();
    assert_eq!(
        layout,
        LdmLayout {
            unet_layers_per_block: 2,
            unet_up_attention: vec![false, true, true, true],
            vae_levels: 4,
            text_legacy: false,
            sdxl_text: false,
        }
    );
    let mut reached = BTreeSet::new();
    for (c, file) in folder_files() {
        for name in file.names() {
            let key = diffusers_to_ldm(c, name, &layout).unwrap_or_else(|| panic!("{name} has no LDM key"));
            assert_eq!(single.builder(c).key(name).as_deref(), Some(key.as_str()));
            assert_eq!(ldm_to_diffusers(&key, &layout), Some((c, name.to_string())), "round trip of {key}");
            assert!(reached.insert(key), "{name}: two names map to one key");
        }
    }
    let all: BTreeSet<String> = single.keys().into_iter().collect();
    assert_eq!(reached, all);
}

#[test]
fn mapping_matches_the_spec_tables() {
    let lay = LdmLayout {
        unet_layers_per_block: 2,
        unet_up_attention: vec![false, true, true, true],
        vae_levels: 4,
        text_legacy: false,
        sdxl_text: false,
    };
    // formats.md §1.2–1.4, SD1 indices (LDM keys without their component prefix).
    let unet = [
        ("time_embedding.linear_2.bias", "time_embed.2.bias"),
        ("down_blocks.0.resnets.1.time_emb_proj.weight", "input_blocks.2.0.emb_layers.1.weight"),
        ("down_blocks.1.downsamplers.0.conv.weight", "input_blocks.6.0.op.weight"),
        ("down_blocks.3.resnets.1.conv2.weight", "input_blocks.11.0.out_layers.3.weight"),
        ("down_blocks.2.attentions.1.proj_in.weight", "input_blocks.8.1.proj_in.weight"),
        ("mid_block.resnets.1.norm1.bias", "middle_block.2.in_layers.0.bias"),
        (
            "mid_block.attentions.0.transformer_blocks.0.ff.net.2.bias",
            "middle_block.1.transformer_blocks.0.ff.net.2.bias",
        ),
        ("up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"),
        ("up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"),
        ("up_blocks.3.resnets.2.conv_shortcut.weight", "output_blocks.11.0.skip_connection.weight"),
        ("up_blocks.3.attentions.2.norm.weight", "output_blocks.11.1.norm.weight"),
        ("conv_norm_out.weight", "out.0.weight"),
    ];
    let vae = [
        ("decoder.up_blocks.0.resnets.2.conv1.weight", "decoder.up.3.block.2.conv1.weight"),
        ("decoder.up_blocks.2.upsamplers.0.conv.bias", "decoder.up.1.upsample.conv.bias"),
        ("encoder.down_blocks.2.resnets.0.conv_shortcut.weight", "encoder.down.2.block.0.nin_shortcut.weight"),
        ("encoder.down_blocks.0.downsamplers.0.conv.weight", "encoder.down.0.downsample.conv.weight"),
        ("decoder.mid_block.attentions.0.to_out.0.weight", "decoder.mid.attn_1.proj_out.weight"),
        ("encoder.mid_block.attentions.0.group_norm.bias", "encoder.mid.attn_1.norm.bias"),
        ("encoder.mid_block.resnets.1.norm2.weight", "encoder.mid.block_2.norm2.weight"),
        ("decoder.conv_norm_out.bias", "decoder.norm_out.bias"),
    ];
    let te = [("text_model.final_layer_norm.weight", "text_model.final_layer_norm.weight")];
    let all =
        [(Component::Unet, "model.diffusion_model.", &unet[..]), (Component::Vae, "first_stage_model.", &vae[..])];
    for (c, prefix, cases) in
        all.into_iter().chain([(Component::TextEncoder, "cond_stage_model.transformer.", &te[..])])
    {
        for &(d, l) in cases {
            let l = format!("{prefix}{l}");
            assert_eq!(diffusers_to_ldm(c, d, &lay).as_deref(), Some(l.as_str()), "{d}");
            assert_eq!(ldm_to_diffusers(&l, &lay), Some((c, d.to_string())), "{l}");
        }
    }
    // Old diffusers VAE names resolve to the same LDM tensors; names outside the layout do not.
    assert_eq!(
        diffusers_to_ldm(Component::Vae, "decoder.mid_block.attentions.0.query.weight", &lay).as_deref(),
        Some("first_stage_model.decoder.mid.attn_1.q.weight")
    );
    assert_eq!(diffusers_to_ldm(Component::Unet, "down_blocks.0.resnets.2.conv1.weight", &lay), None);
    assert_eq!(diffusers_to_ldm(Component::Unet, "down_blocks.0.resnets.0.conv9.weight", &lay), None);
    assert_eq!(diffusers_to_ldm(Component::TextEncoder, "text_projection.weight", &lay), None);
    assert_eq!(ldm_to_diffusers("model_ema.diffusion_modelinput_blocks00weight", &lay), None);
}

fn config_json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

#[test]
fn detection_gives_the_fixture_configs_for_both_layouts() {
    let a = detect(&ModelFiles::open(fixture("model-fp16.safetensors")).unwrap()).unwrap();
    let b = detect(&ModelFiles::open(fixture("model")).unwrap()).unwrap();
    assert_eq!(a, b);

    let u = config_json("model/unet/config.json");
    assert_eq!(a.unet.block_out_channels, usizes(&u["block_out_channels"]));
    assert_eq!(a.unet.layers_per_block as u64, u["layers_per_block"].as_u64().unwrap());
    assert_eq!(a.unet.cross_attention_dim as u64, u["cross_attention_dim"].as_u64().unwrap());
    assert_eq!(a.unet.in_channels as u64, u["in_channels"].as_u64().unwrap());
    assert_eq!(a.unet.out_channels as u64, u["out_channels"].as_u64().unwrap());
    assert_eq!(a.unet.heads, vec![u["attention_head_dim"].as_u64().unwrap() as usize; a.unet.block_out_channels.len()]);
    assert_eq!(a.unet.norm_num_groups as u64, u["norm_num_groups"].as_u64().unwrap());
    assert_eq!(a.unet.use_linear_projection, u["use_linear_projection"].as_bool().unwrap());
    let depth = u["transformer_layers_per_block"].as_u64().unwrap() as usize;
    let per_level = |flags: &[bool]| flags.iter().map(|&f| if f { depth } else { 0 }).collect::<Vec<_>>();
    assert_eq!(a.unet.down_transformer_depth, per_level(&a.unet.down_cross_attention));
    assert_eq!(a.unet.up_transformer_depth, per_level(&a.unet.up_cross_attention));
    assert_eq!(a.unet.mid_transformer_depth, depth);
    assert_eq!(a.unet.addition, None);
    assert_eq!(a.family, lorafuse::weights::detect::Family::Sd1);
    assert_eq!(a.clip2, None);
    let cross = |v: &Value| {
        v.as_array().unwrap().iter().map(|t| t.as_str().unwrap().starts_with("CrossAttn")).collect::<Vec<_>>()
    };
    assert_eq!(a.unet.down_cross_attention, cross(&u["down_block_types"]));
    assert_eq!(a.unet.up_cross_attention, cross(&u["up_block_types"]));
    assert!(a.unet.mid_cross_attention);
    assert_eq!(a.unet.time_embed_dim, 4 * a.unet.block_out_channels[0]);

    let v = config_json("model/vae/config.json");
    assert_eq!(a.vae.block_out_channels, usizes(&v["block_out_channels"]));
    assert_eq!(a.vae.layers_per_block as u64, v["layers_per_block"].as_u64().unwrap());
    assert_eq!(a.vae.latent_channels as u64, v["latent_channels"].as_u64().unwrap());
    assert_eq!(a.vae.in_channels as u64, v["in_channels"].as_u64().unwrap());
    assert_eq!(a.vae.out_channels as u64, v["out_channels"].as_u64().unwrap());
    assert_eq!(a.vae.mid_attention, v["mid_block_add_attention"].as_bool().unwrap());
    assert_eq!(a.vae.scaling_factor as f64, v["scaling_factor"].as_f64().unwrap() as f32 as f64);

    let t = config_json("model/text_encoder/config.json");
    for (got, field) in [
        (a.clip.hidden_size, "hidden_size"),
        (a.clip.intermediate_size, "intermediate_size"),
        (a.clip.num_hidden_layers, "num_hidden_layers"),
        (a.clip.num_attention_heads, "num_attention_heads"),
        (a.clip.vocab_size, "vocab_size"),
        (a.clip.max_position_embeddings, "max_position_embeddings"),
    ] {
        assert_eq!(got as u64, t[field].as_u64().unwrap(), "{field}");
    }
    assert_eq!(a.clip.hidden_act, t["hidden_act"].as_str().unwrap());
    assert!(!a.v_prediction);
}

#[test]
fn folder_accepts_fp16_variants_and_shard_indexes() {
    let d = scratch("variants");
    for c in ["unet", "vae", "text_encoder"] {
        std::fs::create_dir_all(d.join(c)).unwrap();
        std::fs::copy(fixture(&format!("model/{c}/config.json")), d.join(c).join("config.json")).unwrap();
    }
    std::fs::copy(
        fixture("model/unet/diffusion_pytorch_model.safetensors"),
        d.join("unet/diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    std::fs::copy(fixture("model/text_encoder/model.safetensors"), d.join("text_encoder/model.fp16.safetensors"))
        .unwrap();
    // The VAE as a two-shard index: encoder tensors in one file, the rest in another.
    let vae = SafeTensorsFile::open(fixture("model/vae/diffusion_pytorch_model.safetensors")).unwrap();
    let mut shards: [Vec<Entry>; 2] = [Vec::new(), Vec::new()];
    let mut map = serde_json::Map::new();
    for (name, info) in vae.tensors() {
        let s = usize::from(!name.starts_with("encoder."));
        shards[s].push((name, "F16", info.shape.clone(), vae.bytes(name).unwrap().to_vec()));
        map.insert(name.to_string(), json!(format!("shard-{s}.safetensors")));
    }
    for (s, entries) in shards.iter().enumerate() {
        write(&d.join("vae"), &format!("shard-{s}.safetensors"), &st_bytes(entries));
    }
    let index = json!({ "metadata": {}, "weight_map": map }).to_string();
    write(&d.join("vae"), "diffusion_pytorch_model.safetensors.index.json", index.as_bytes());

    let files = ModelFiles::open(&d).unwrap();
    let want = detect(&ModelFiles::open(fixture("model")).unwrap()).unwrap();
    assert_eq!(detect(&files).unwrap(), want);
    let w = files.vae().get_f16("decoder.conv_in.weight", &[64, 4, 3, 3]).unwrap();
    let r =
        ModelFiles::open(fixture("model")).unwrap().vae().get_f16("decoder.conv_in.weight", &[64, 4, 3, 3]).unwrap();
    assert_eq!(w, r);

    // A shard index pointing outside its folder is refused.
    write(
        &d.join("vae"),
        "diffusion_pytorch_model.safetensors.index.json",
        br#"{"weight_map":{"a":"../x.safetensors"}}"#,
    );
    let e = ModelFiles::open(&d).err().unwrap().to_string();
    assert!(e.contains("is not a plain file name"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bf16_f32_f64_convert_and_integers_are_refused() {
    let vals: Vec<f32> = (0..37).map(|i| ((i as f32) * 0.731 - 11.3).sin() * 3.7e3 / (i as f32 + 1.0)).collect();
    let bf: Vec<bf16> = vals.iter().map(|&v| bf16::from_f32(v)).collect();
    let bf_bytes: Vec<u8> = bf.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f64_bytes: Vec<u8> = vals.iter().flat_map(|&v| (v as f64 * 1.000001).to_le_bytes()).collect();
    let ids: Vec<u8> = (0..77i64).flat_map(|v| v.to_le_bytes()).collect();
    // Written by the reference `safetensors` crate, so our parser is checked against its output.
    let views = [
        ("b", safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![37], &bf_bytes).unwrap()),
        ("f", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 37], &f32_bytes).unwrap()),
        ("d", safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![37], &f64_bytes).unwrap()),
        ("ids", safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1, 77], &ids).unwrap()),
    ];
    let bytes = safetensors::serialize(views, None).unwrap();
    let d = scratch("dtypes");
    let path = write(&d, "mixed.safetensors", &bytes);
    let f = SafeTensorsFile::open(&path).unwrap();

    let b32 = f.read_f32("b").unwrap();
    assert!(b32.iter().zip(&bf).all(|(x, y)| x.to_bits() == y.to_f32().to_bits()));
    let b16 = f.read_f16("b").unwrap();
    assert!(b16.iter().zip(&bf).all(|(x, y)| *x == f16::from_f32(y.to_f32())));
    assert_eq!(f.read_f32("f").unwrap(), vals);
    let f16s = f.read_f16("f").unwrap();
    assert!(f16s.iter().zip(&vals).all(|(x, &y)| *x == f16::from_f32(y)));
    let d32 = f.read_f32("d").unwrap();
    assert!(d32.iter().zip(&vals).all(|(x, &y)| *x == (y as f64 * 1.000001) as f32));

    let e = f.read_f32("ids").unwrap_err().to_string();
    assert_eq!(e, format!("safetensors: dtype error: {}: tensor 'ids' is I64, not a float weight", path.display()));
    let e = f.read_f16("nope").unwrap_err().to_string();
    assert_eq!(e, format!("safetensors: invalid argument: {}: no tensor 'nope'", path.display()));

    // Through the builder: a bf16 LDM VAE attention conv read as an f32 / f16 linear.
    let q = &bf_bytes[..2 * 36];
    let ldm = write(
        &d,
        "bf16-ldm.safetensors",
        &st_bytes(&[("first_stage_model.decoder.mid.attn_1.q.weight", "BF16", vec![6, 6, 1, 1], q.to_vec())]),
    );
    let vb = ModelFiles::open(&ldm).unwrap().vae().pp("decoder.mid_block.attentions.0");
    let t = vb.get("to_q.weight", &[6, 6]).unwrap();
    assert_eq!(t.shape, vec![6, 6]);
    assert!(t.data.iter().zip(&bf).all(|(x, y)| x.to_bits() == y.to_f32().to_bits()));
    let h = vb.get_f16("to_q.weight", &[6, 6]).unwrap();
    assert!(h.iter().zip(&bf).all(|(x, y)| *x == f16::from_f32(y.to_f32())));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn builder_reshapes_one_by_one_convs_and_checks_shapes() {
    let files = ModelFiles::open(fixture("model-fp16.safetensors")).unwrap();
    let attn = files.vae().pp("encoder").pp("mid_block").pp("attentions").pp(0);
    let lin = attn.get("to_q.weight", &[64, 64]).unwrap();
    let conv = attn.get("to_q.weight", &[64, 64, 1, 1]).unwrap();
    assert_eq!(lin.data, conv.data);
    assert_eq!(attn.shape("to_q.weight"), Some(vec![64, 64, 1, 1]));
    // SD1 UNet proj_in is a 1×1 conv: a linear request works too.
    assert_eq!(
        files.unet().pp("down_blocks.0.attentions.0").get("proj_in.weight", &[32, 32]).unwrap().shape,
        vec![32, 32]
    );

    let e = attn.get("to_q.weight", &[64, 32]).unwrap_err().to_string();
    let path = fixture("model-fp16.safetensors");
    assert_eq!(
        e,
        format!(
            "weights: shape mismatch: {}: vae weight 'encoder.mid_block.attentions.0.to_q.weight' (at \
             'first_stage_model.encoder.mid.attn_1.q.weight') has shape [64, 64, 1, 1], the model expects [64, 32]",
            path.display()
        )
    );
}

#[test]
fn missing_keys_name_the_diffusers_path_and_the_ldm_key() {
    let path = fixture("model-fp16.safetensors");
    let files = ModelFiles::open(&path).unwrap();
    // Level 3 has no attention: the name maps to a key the file lacks.
    let e = files.unet().pp("down_blocks").pp(3).pp("attentions").pp(0).get("proj_in.weight", &[64, 64, 1, 1]);
    assert_eq!(
        e.unwrap_err().to_string(),
        format!(
            "weights: invalid argument: {}: missing tensor 'model.diffusion_model.input_blocks.10.1.proj_in.weight' \
             (the unet weight 'down_blocks.3.attentions.0.proj_in.weight')",
            path.display()
        )
    );
    // A third resnet in a down level has no LDM index at all.
    let e = files.unet().pp("down_blocks.0.resnets.2").get("conv1.weight", &[32, 32, 3, 3]);
    assert_eq!(
        e.unwrap_err().to_string(),
        format!(
            "weights: invalid argument: {}: unet weight 'down_blocks.0.resnets.2.conv1.weight' has no key in the \
             single-file (LDM) layout",
            path.display()
        )
    );
    let folder = ModelFiles::open(fixture("model")).unwrap();
    let e = folder.text_encoder().pp("text_model").get("missing.weight", &[1]).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "weights: invalid argument: {}: missing text_encoder tensor 'text_model.missing.weight'",
            fixture("model/text_encoder/model.safetensors").display()
        )
    );
}

#[test]
fn expected_extra_keys_are_skipped_with_reasons_and_others_reported() {
    let d = scratch("extras");
    let bytes = st_bytes(&[
        z("model.diffusion_model.input_blocks.0.0.weight", &[8, 4, 3, 3]),
        z("model_ema.diffusion_modelinput_blocks00weight", &[8, 4, 3, 3]),
        z("model_ema.num_updates", &[]),
        z("alphas_cumprod", &[1000]),
        z("cond_stage_model.transformer.text_model.embeddings.position_ids", &[1, 77]),
        z("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", &[10, 8]),
        z("some.unknown.key", &[2]),
    ]);
    let files = ModelFiles::open(write(&d, "extras.safetensors", &bytes)).unwrap();
    files.text_encoder().get("text_model.embeddings.token_embedding.weight", &[10, 8]).unwrap();
    let skipped: Vec<String> = files.skipped_keys().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        skipped,
        [
            "alphas_cumprod",
            "cond_stage_model.transformer.text_model.embeddings.position_ids",
            "model_ema.diffusion_modelinput_blocks00weight",
            "model_ema.num_updates"
        ]
    );
    assert_eq!(files.unused_keys(), ["model.diffusion_model.input_blocks.0.0.weight", "some.unknown.key"]);
    assert!(skip_reason("cond_stage_model.transformer.text_model.embeddings.position_ids")
        .unwrap()
        .contains("position_ids"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn legacy_text_encoder_names_resolve() {
    let d = scratch("legacy");
    let bytes = st_bytes(&[
        z("cond_stage_model.transformer.embeddings.token_embedding.weight", &[10, 8]),
        z("cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight", &[16, 8]),
    ]);
    let files = ModelFiles::open(write(&d, "legacy.safetensors", &bytes)).unwrap();
    assert!(files.ldm_layout().unwrap().text_legacy);
    let te = files.text_encoder().pp("text_model");
    assert_eq!(te.get("encoder.layers.0.mlp.fc1.weight", &[16, 8]).unwrap().shape, vec![16, 8]);
    assert_eq!(
        te.key("embeddings.token_embedding.weight").unwrap(),
        "cond_stage_model.transformer.embeddings.token_embedding.weight"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

fn detect_err(dir: &Path, name: &str, entries: &[Entry]) -> String {
    let p = write(dir, name, &st_bytes(entries));
    detect(&ModelFiles::open(&p).unwrap()).unwrap_err().to_string()
}

#[test]
fn other_families_and_non_checkpoints_are_named() {
    let d = scratch("families");
    let p = |n: &str| d.join(n).display().to_string();
    let unet_in = z("model.diffusion_model.input_blocks.0.0.weight", &[8, 4, 3, 3]);

    let e = detect_err(
        &d,
        "sd2.safetensors",
        &[unet_in.clone(), z("cond_stage_model.model.token_embedding.weight", &[10, 16])],
    );
    assert_eq!(
        e,
        format!(
            "detect: invalid argument: {}: not supported yet: SD2.x (OpenCLIP text encoder, found \
             'cond_stage_model.model.token_embedding.weight')",
            p("sd2.safetensors")
        )
    );
    let e = detect_err(
        &d,
        "sd2-unet.safetensors",
        &[
            unet_in.clone(),
            z("model.diffusion_model.input_blocks.1.1.proj_in.weight", &[8, 8]),
            z("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", &[8, 1024]),
        ],
    );
    assert_eq!(
        e,
        format!(
            "detect: invalid argument: {}: not supported yet: SD2.x (linear proj_in with 1024-wide context)",
            p("sd2-unet.safetensors")
        )
    );
    // SDXL itself loads (tests/pipeline_sdxl.rs); incomplete SDXL files and the refiner are named.
    let e = detect_err(
        &d,
        "sdxl.safetensors",
        &[unet_in.clone(), z("conditioner.embedders.1.model.ln_final.weight", &[16])],
    );
    assert_eq!(
        e,
        format!(
            "detect: invalid argument: {}: SDXL checkpoint without its CLIP ViT-L text encoder \
             (conditioner.embedders.0.transformer.* keys)",
            p("sdxl.safetensors")
        )
    );
    let e = detect_err(
        &d,
        "sdxl-no-label-emb.safetensors",
        &[
            unet_in.clone(),
            z("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", &[16]),
            z("conditioner.embedders.1.model.ln_final.weight", &[16]),
            z("first_stage_model.decoder.conv_in.weight", &[8, 4, 3, 3]),
        ],
    );
    assert!(
        e.ends_with(
            "SDXL checkpoint whose UNet has no model.diffusion_model.label_emb.* (the pooled-text and size embedding)"
        ),
        "{e}"
    );
    let e = detect_err(
        &d,
        "refiner.safetensors",
        &[
            unet_in.clone(),
            z("conditioner.embedders.0.model.ln_final.weight", &[16]),
            z("model.diffusion_model.label_emb.0.0.weight", &[32, 2560]),
        ],
    );
    assert!(e.contains("not supported yet: the SDXL refiner"), "{e}");
    let e = detect_err(
        &d,
        "sdxl-unet.safetensors",
        &[unet_in.clone(), z("model.diffusion_model.label_emb.0.0.weight", &[32, 2816])],
    );
    assert!(
        e.ends_with("not supported yet: a UNet with class/size conditioning but no SDXL text encoders (found 'model.diffusion_model.label_emb.0.0.weight')"),
        "{e}"
    );

    let e = detect_err(&d, "random.safetensors", &[z("foo", &[2]), z("bar.baz", &[3, 1])]);
    assert_eq!(
        e,
        format!(
            "detect: invalid argument: {}: not a Stable Diffusion checkpoint: none of its 2 tensors is under \
             model.diffusion_model.* (first: 'bar.baz', 'foo')",
            p("random.safetensors")
        )
    );
    let e = detect_err(&d, "empty.safetensors", &[]);
    assert!(e.ends_with("empty.safetensors: contains no tensors, not a checkpoint"), "{e}");
    let e =
        detect_err(&d, "no-vae.safetensors", &[unet_in.clone(), z("cond_stage_model.transformer.text_model.x", &[1])]);
    assert!(e.ends_with("checkpoint has a UNet but no VAE (first_stage_model.* keys)"), "{e}");

    // Real adapter files and single diffusers component files.
    let kohya = fixture("loras/kohya_lora.safetensors");
    let e = detect(&ModelFiles::open(&kohya).unwrap()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "detect: invalid argument: {}: looks like a LoRA file (lora_unet_* / lora_te* keys such as \
             'lora_te_text_model_encoder_layers_0_mlp_fc1.alpha'), not a checkpoint",
            kohya.display()
        )
    );
    let e = detect(&ModelFiles::open(fixture("loras/peft_lora.safetensors")).unwrap()).unwrap_err().to_string();
    assert!(e.contains("looks like a LoRA / LyCORIS file (keys such as 'text_encoder.text_model."), "{e}");
    for (rel, says) in [
        ("loras/lycoris_loha.safetensors", "looks like a LoRA file"),
        ("model/unet/diffusion_pytorch_model.safetensors", "looks like a diffusers UNet weights file"),
        ("model/vae/diffusion_pytorch_model.safetensors", "looks like a standalone VAE file"),
        ("model/text_encoder/model.safetensors", "looks like a standalone CLIP text encoder"),
    ] {
        let e = detect(&ModelFiles::open(fixture(rel)).unwrap()).unwrap_err().to_string();
        assert!(e.contains(says), "{rel}: {e}");
    }

    // A folder with text_encoder_2/ is SDXL, so its UNet must have SDXL's added conditioning.
    let sdxl = d.join("sdxl-folder");
    for c in ["unet", "vae", "text_encoder", "text_encoder_2"] {
        std::fs::create_dir_all(sdxl.join(c)).unwrap();
    }
    for (c, f) in [
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
        ("text_encoder_2", "model"),
    ] {
        let from = if c == "text_encoder_2" { "text_encoder" } else { c };
        std::fs::copy(fixture(&format!("model/{from}/{f}.safetensors")), sdxl.join(c).join(format!("{f}.safetensors")))
            .unwrap();
    }
    let e = detect(&ModelFiles::open(&sdxl).unwrap()).unwrap_err().to_string();
    assert!(e.ends_with("SDXL folder (text_encoder_2/) whose UNet has no add_embedding.* weights"), "{e}");
    // A folder missing a component says which.
    std::fs::remove_dir_all(sdxl.join("vae")).unwrap();
    let e = ModelFiles::open(&sdxl).err().unwrap().to_string();
    assert!(e.ends_with("no vae/ folder (expected a diffusers Stable Diffusion folder)"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn hostile_block_indices_are_ignored_by_the_layout() {
    let d = scratch("hostile");
    let bytes = st_bytes(&[
        z("model.diffusion_model.output_blocks.18446744073709551615.1.norm.weight", &[1]),
        z("model.diffusion_model.input_blocks.9999999999.0.op.weight", &[1]),
        z("first_stage_model.decoder.up.18446744073709551615.block.0.conv1.weight", &[1]),
    ]);
    let files = ModelFiles::open(write(&d, "hostile.safetensors", &bytes)).unwrap();
    let lay = files.ldm_layout().unwrap();
    assert_eq!((lay.unet_layers_per_block, lay.unet_up_attention.len(), lay.vae_levels), (2, 0, 0));
    let e = detect(&files).unwrap_err().to_string();
    assert!(e.contains("no CLIP text encoder"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Synthetic mode (benchmarks at full size): values of the requested shape, deterministic per
/// name, different between names; structure queries still answer from the file.
#[test]
fn synthetic_builder_serves_requested_shapes() {
    let files = lorafuse::weights::ModelFiles::open(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/model-fp16.safetensors"),
    )
    .unwrap();
    let vb = files.unet().synthetic(7);
    let a = vb.get("conv_in.weight", &[320, 4, 3, 3]).unwrap();
    assert_eq!(a.shape, vec![320, 4, 3, 3]);
    assert_eq!(a, vb.get("conv_in.weight", &[320, 4, 3, 3]).unwrap());
    let b = vb.get("conv_out.weight", &[4, 320, 3, 3]).unwrap();
    assert_ne!(a.data[..16], b.data[..16]);
    let bound = 1.0 / (4.0f32 * 9.0).sqrt();
    assert!(a.data.iter().all(|x| x.abs() <= bound));
    assert!(vb.contains("conv_in.weight") && !vb.contains("no_such.weight"));
    assert_eq!(files.unet().synthetic(8).get_f16("conv_in.bias", &[320]).unwrap().len(), 320);
}
