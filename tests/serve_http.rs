//! `lorafuse serve` over real HTTP: each test starts the binary on a free 127.0.0.1 port with the
//! tiny fixture model and LoRAs and talks to it with a plain HTTP/1.1 client (std only, so the
//! bytes on the wire are exactly what a test sends, malformed ones included). A machine without a
//! GPU adapter fails here: the server cannot start.

mod serve_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lorafuse::serve::policy::{Ask, Config, Meter, Tier};
use lorafuse::serve::queue::{FairQueue, PushError};
use serde_json::json;
use serve_common::*;

#[test]
fn policy_config_and_fair_queue() {
    let c = Config::parse("[tiers.pro]\nmax_loras = 8\n[keys]\n\"sk-a\" = \"pro\"\n").unwrap();
    assert_eq!(c.tiers["free"].max_loras, 3);
    assert_eq!(Config::default().tiers["pro"].max_loras, 6);
    assert_eq!(c.tiers["pro"].max_loras, 8);
    // Fields a tier leaves out take `Tier::default()`'s.
    assert_eq!(c.tiers["pro"].max_steps, Tier::free().max_steps);
    assert_eq!(c.caller(Some("Bearer sk-a")).unwrap().tier, "pro");
    assert_eq!(c.caller(None).unwrap().tier, "free");
    assert!(c.caller(Some("Bearer nope")).is_err());
    assert!(c.caller(Some("Basic sk-a")).is_err());
    assert!(Config::parse("[keys]\n\"k\" = \"gold\"\n").is_err(), "a key's tier must exist");
    assert!(Config::parse("[tiers.free]\nmax_lora = 3\n").is_err(), "misspelt limits are errors");

    let free = Config::default().caller(None).unwrap();
    let ask = |loras, side, steps, images| Ask { loras, width: side, height: side, steps, images };
    assert_eq!(free.check(&ask(4, 64, 2, 1)).unwrap_err().limit, "max_loras");
    assert_eq!(free.check(&ask(3, 4096, 2, 1)).unwrap_err().limit, "max_pixels");
    assert_eq!(free.check(&ask(0, 64, 1000, 1)).unwrap_err().limit, "max_steps");
    assert_eq!(free.check(&ask(0, 64, 2, 100)).unwrap_err().limit, "max_batch");
    assert!(free.check(&ask(3, 512, 20, 1)).is_ok());

    let m = Meter::default();
    let mut c = free.clone();
    c.limits.requests_per_minute = 2;
    c.limits.concurrent_jobs = 1;
    assert!(m.admit_rate(&c).is_ok() && m.admit_rate(&c).is_ok());
    assert!(m.admit_rate(&c).unwrap_err() >= 1);
    assert!(m.acquire(&c) && !m.acquire(&c));
    m.release(&c.key);
    assert!(m.acquire(&c));

    // Key a queues three jobs before key b's one: b runs second, not fourth.
    let q = FairQueue::new(4);
    for j in ["a1", "a2", "a3", "b1"] {
        q.push(&j[..1], j).unwrap();
    }
    assert_eq!(q.push("c", "c1"), Err(PushError::Full { capacity: 4 }));
    assert_eq!([q.pop(), q.pop()], [Some("a1"), Some("b1")]);
    q.push("b", "b2").unwrap();
    assert_eq!(q.pop(), Some("a2"));
    assert_eq!(q.close(), vec!["b2", "a3"]);
    assert_eq!(q.pop(), None);
    assert_eq!(q.push("a", "a4"), Err(PushError::Closed));
}

#[test]
fn read_only_routes_speak_a1111() {
    let s = Server::start("routes", "");
    let loras = s.get("/sdapi/v1/loras").json();
    let names: Vec<&str> = loras.as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["kohya_locon", "kohya_lora", "lycoris_loha", "lycoris_lokr", "peft_lora"]);
    let k = &loras[1];
    assert_eq!(k["alias"], "kohya_lora");
    assert!(Path::new(k["path"].as_str().unwrap()).is_file(), "{k}");
    assert_eq!(k["metadata"]["ss_network_dim"], "4");
    assert_eq!(k["metadata"]["ss_base_model_version"], "sd_v1");
    // Only kohya's ss_* keys: the PEFT file's adapter config is not training metadata.
    assert_eq!(loras[4]["metadata"], json!({}));

    let models = s.get("/sdapi/v1/sd-models").json();
    let bytes = std::fs::read(model()).unwrap();
    let sha: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(models[0]["sha256"], sha.as_str());
    assert_eq!(models[0]["hash"], &sha[..10]);
    assert_eq!(models[0]["model_name"], "model-fp16");
    assert_eq!(models[0]["title"], format!("model-fp16.safetensors [{}]", &sha[..10]).as_str());

    let samplers = s.get("/sdapi/v1/samplers").json();
    let names: Vec<&str> = samplers.as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    for n in ["Euler", "Euler a", "DPM++ 2M", "DDIM", "LCM"] {
        assert!(names.contains(&n), "{samplers}");
    }
    let scheds = s.get("/sdapi/v1/schedulers").json();
    let labels: Vec<&str> = scheds.as_array().unwrap().iter().map(|x| x["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["Automatic", "Uniform", "Karras"]);

    let opts = s.get("/sdapi/v1/options").json();
    assert_eq!(opts["sd_model_checkpoint"], models[0]["title"]);
    assert_eq!(opts["CLIP_stop_at_last_layers"], 1);
    let r = s.post("/sdapi/v1/options", None, &json!({"CLIP_stop_at_last_layers": 2}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"], 2);
    s.post("/sdapi/v1/options", None, &json!({"CLIP_stop_at_last_layers": 0}))
        .assert_error(400, "CLIP_stop_at_last_layers");
    s.post("/sdapi/v1/options", None, &json!({"sd_model_checkpoint": "other.safetensors"}))
        .assert_error(400, "only the loaded model");
    let same = json!({"sd_model_checkpoint": models[0]["title"]});
    assert_eq!(s.post("/sdapi/v1/options", None, &same).status, 200);

    let p = s.progress();
    assert_eq!(p["progress"], 0.0);
    assert_eq!(p["state"]["job_count"], 0);
    assert!(p["current_image"].is_null() && p["eta_relative"].is_number(), "{p}");
    let i = s.post("/sdapi/v1/interrupt", None, &json!({}));
    assert_eq!(i.status, 200);
    assert_eq!(i.json()["interrupted"], false);

    let api = s.get("/openapi.json").json();
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    let txt2img = &api["components"]["schemas"]["StableDiffusionTxt2ImgProcessingAPI"]["properties"];
    assert_eq!(txt2img["steps"]["default"], 50, "A1111's API default");
    for path in [
        "/sdapi/v1/txt2img",
        "/sdapi/v1/loras",
        "/sdapi/v1/sd-models",
        "/sdapi/v1/samplers",
        "/sdapi/v1/schedulers",
        "/sdapi/v1/progress",
        "/sdapi/v1/interrupt",
        "/sdapi/v1/options",
        "/metrics",
    ] {
        assert!(api["paths"][path].is_object(), "{path} missing from /openapi.json");
    }
    s.get("/sdapi/v1/nothing").assert_error(404, "no such route");

    // The web page is embedded and uses these same routes; the tier route tells it the limits.
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{:?}", page.headers);
    for needle in
        ["/sdapi/v1/txt2img", "/sdapi/v1/loras", "/sdapi/v1/progress", "/sdapi/v1/interrupt", "/lorafuse/v1/tier"]
    {
        assert!(page.text().contains(needle), "the page does not use {needle}");
    }
    let t = http(&s.addr, "GET", "/lorafuse/v1/tier", Some("k-pro"), None).json();
    assert_eq!((t["tier"].clone(), t["limits"]["max_loras"].clone()), (json!("pro"), json!(6)));
    assert_eq!(s.get("/lorafuse/v1/tier").json()["limits"]["max_loras"], 3);
    http(&s.addr, "GET", "/lorafuse/v1/tier", Some("k-nope"), None).assert_error(401, "unknown API key");
}

/// The same settings through the CLI and through the server give the same infotext and pixels.
#[test]
fn txt2img_infotext_and_pixels_equal_the_cli() {
    let s = Server::start("cli", "");
    let cases = [
        (
            json!({"prompt": "a red fox <lora:kohya_lora:0.7>", "negative_prompt": "blurry", "seed": 11, "steps": 2,
                   "cfg_scale": 5.5, "width": 64, "height": 64, "sampler_name": "Euler a",
                   "override_settings": {"CLIP_stop_at_last_layers": 2}}),
            vec![
                "-p",
                "a red fox <lora:kohya_lora:0.7>",
                "-n",
                "blurry",
                "--seed",
                "11",
                "--cfg",
                "5.5",
                "--sampler",
                "euler_a",
                "--clip-skip",
                "2",
                "--steps",
                "2",
            ],
        ),
        (
            json!({"prompt": "a boat", "seed": 5, "steps": 3, "width": 64, "height": 64,
                   "sampler_name": "DPM++ 2M", "scheduler": "Karras"}),
            vec!["-p", "a boat", "--seed", "5", "--steps", "3", "--sampler", "dpmpp_2m_karras"],
        ),
    ];
    let d = s.dir.clone();
    for (i, (body, cli)) in cases.into_iter().enumerate() {
        let r = s.txt2img(None, body);
        let inf = info(&r);
        let (w, h, server_px, server_params) = decode_png(r.json()["images"][0].as_str().unwrap());
        assert_eq!((w, h), (64, 64));
        assert_eq!(server_params, inf["infotexts"][0].as_str().unwrap());

        let out = d.join(format!("cli-{i}.png"));
        let mut args: Vec<String> = ["-q", "generate", "-m"].map(String::from).to_vec();
        args.push(model().display().to_string());
        args.extend(["--lora-dir".into(), fixtures().join("loras").display().to_string()]);
        args.extend(["-W", "64", "-H", "64"].map(String::from));
        args.extend(cli.iter().map(|a| a.to_string()));
        args.extend(["-o".into(), out.display().to_string()]);
        let o =
            Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(&args).env("XDG_RUNTIME_DIR", xdg()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (cli_px, cli_params) = png_file(&out);
        assert_eq!(server_params, cli_params, "infotext differs from the CLI's");
        assert!(server_px == cli_px, "pixels differ from the CLI's for the same settings");
    }
}

#[test]
fn txt2img_defaults_seeds_batches_and_saving() {
    let s = Server::start("seeds", "");
    // Defaults, field for field as A1111 echoes them.
    let r = s.txt2img(None, small(json!({})));
    let p = r.json()["parameters"].clone();
    for (k, v) in [
        ("negative_prompt", json!("")),
        ("seed", json!(-1)),
        ("subseed", json!(-1)),
        ("sampler_index", json!("Euler")),
        ("batch_size", json!(1)),
        ("n_iter", json!(1)),
        ("cfg_scale", json!(7.0)),
        ("send_images", json!(true)),
        ("save_images", json!(false)),
        ("override_settings", json!({})),
    ] {
        assert_eq!(p[k], v, "parameters.{k}: {p}");
    }
    let inf = info(&r);
    let seed = inf["seed"].as_u64().unwrap();
    assert!(seed < 1 << 32, "a drawn seed is below 2^32 as A1111's");
    assert_eq!(inf["all_seeds"], json!([seed]));
    assert_eq!(inf["sampler_name"], "Euler");
    assert_eq!(inf["cfg_scale"], 7.0);
    assert_eq!(inf["clip_skip"], 1);
    assert_eq!((inf["width"].clone(), inf["height"].clone(), inf["steps"].clone()), (json!(64), json!(64), json!(2)));
    assert_eq!(inf["all_prompts"], json!(["a lighthouse"]));
    let text = inf["infotexts"][0].as_str().unwrap();
    assert!(text.contains(&format!("Seed: {seed},")) && text.contains("Sampler: Euler,"), "{text}");

    // A1111's unset steps (50, its API default) and size (512) reach the policy: a tier
    // allowing less refuses them.
    s.txt2img(Some("k-small"), json!({"width": 64, "height": 64})).assert_error(403, "50 steps");
    s.txt2img(Some("k-small"), json!({"steps": 2})).assert_error(403, "512x512");
    // A1111's disable_extra_networks: tags leave the prompt, no LoRA is applied.
    let r = s.txt2img(
        None,
        small(json!({"prompt": "a cat <lora:kohya_lora:1>", "disable_extra_networks": true, "seed": 2})),
    );
    let text = info(&r)["infotexts"][0].as_str().unwrap().to_string();
    assert!(!text.contains("Lora hashes") && !text.contains("<lora:"), "{text}");

    // batch_size × n_iter images, seeds consecutive from the given one, each PNG with its infotext.
    let r = s.txt2img(None, small(json!({"seed": 7, "batch_size": 2, "n_iter": 2})));
    let inf = info(&r);
    assert_eq!(inf["all_seeds"], json!([7, 8, 9, 10]));
    let images = r.json()["images"].as_array().unwrap().clone();
    assert_eq!(images.len(), 4);
    let mut pixels = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let (_, _, px, params) = decode_png(img.as_str().unwrap());
        assert_eq!(params, inf["infotexts"][i].as_str().unwrap());
        assert!(params.contains(&format!("Seed: {},", 7 + i)), "{params}");
        pixels.push(px);
    }
    assert!(pixels[0] != pixels[1], "different seeds, different images");
    // The same seed alone gives the batch's image of that seed.
    let r = s.txt2img(None, small(json!({"seed": 8})));
    let (_, _, px, _) = decode_png(r.json()["images"][0].as_str().unwrap());
    assert!(px == pixels[1], "seed 8 alone differs from seed 8 in a batch");

    // send_images false: no images, still the info; save_images true: a whole PNG on disk.
    let r = s.txt2img(None, small(json!({"seed": 3, "send_images": false, "save_images": true})));
    assert_eq!(r.json()["images"], json!([]));
    let inf = info(&r);
    let saved: Vec<PathBuf> = std::fs::read_dir(s.dir.join("outputs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(saved[0].extension().is_some_and(|e| e == "png"), "{saved:?}");
    assert_eq!(png_file(&saved[0]).1, inf["infotexts"][0].as_str().unwrap());
    // A subseed is accepted and only logged.
    let r = s.txt2img(None, small(json!({"seed": 3, "subseed": 99, "subseed_strength": 0.5})));
    assert_eq!(info(&r)["all_seeds"], json!([3]));
    assert!(s.stderr().contains("subseed 99"), "{}", s.stderr());
}

#[test]
fn quotas_rate_limits_and_keys() {
    let s = Server::start("quota", "");
    let four = "x <lora:kohya_lora:0.3><lora:kohya_locon:0.3><lora:lycoris_loha:0.3><lora:lycoris_lokr:0.3>";
    let j = s.txt2img(None, small(json!({"prompt": four}))).assert_error(403, "max_loras = 3");
    assert_eq!(j["limit"], "max_loras");
    s.txt2img(None, small(json!({"steps": 101}))).assert_error(403, "max_steps");
    s.txt2img(None, small(json!({"batch_size": 3, "n_iter": 2}))).assert_error(403, "max_batch");
    s.txt2img(None, small(json!({"width": 2048, "height": 2048}))).assert_error(403, "max_pixels");
    s.txt2img(Some("k-unknown"), small(json!({}))).assert_error(401, "unknown API key");
    // The pro tier takes 4 LoRAs (and 7 is over its 6).
    let r = s.txt2img(Some("k-pro"), small(json!({"prompt": four, "seed": 1})));
    let inf = info(&r);
    let text = inf["infotexts"][0].as_str().unwrap();
    for n in ["kohya_lora", "kohya_locon", "lycoris_loha", "lycoris_lokr"] {
        assert!(text.contains(&format!("{n}: ")), "{text}");
    }
    let seven = format!("{four}<lora:peft_lora:0.1><lora:kohya_lora:0.1><lora:kohya_locon:0.1>");
    s.txt2img(Some("k-pro"), small(json!({"prompt": seven}))).assert_error(403, "max_loras = 6");
    // Two requests a minute: the third is refused with a wait, whatever the requests were.
    for _ in 0..2 {
        s.txt2img(Some("k-rate"), small(json!({"steps": 0}))).assert_error(400, "steps");
    }
    let r = s.txt2img(Some("k-rate"), small(json!({})));
    assert_eq!(r.assert_error(429, "requests_per_minute")["limit"], "requests_per_minute");
    assert!(r.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| (1..=60).contains(&v)));
    // Other keys are not affected.
    assert_eq!(s.txt2img(Some("k-pro"), small(json!({"seed": 2}))).status, 200);
    // The request log names keys by a digest, never by the secret.
    assert!(s.stderr().contains("queued") && !s.stderr().contains("k-pro"), "{}", s.stderr());
}

#[test]
fn bad_input_gets_json_4xx_and_the_server_keeps_serving() {
    let s = Server::start("bad", "body_timeout_s = 2");
    let raw = |body: &[u8]| http(&s.addr, "POST", "/sdapi/v1/txt2img", None, Some(body));
    raw(b"{\"prompt\": ").assert_error(422, "EOF");
    raw(b"not json").assert_error(422, "expected");
    raw(b"[1, 2]").assert_error(422, "");
    s.txt2img(None, json!({"steps": "twenty"})).assert_error(422, "invalid type");
    s.txt2img(None, json!({"width": -64})).assert_error(422, "invalid value");
    s.txt2img(None, json!({"width": 1e30})).assert_error(422, "");
    s.txt2img(None, json!({"cfg_scale": "high"})).assert_error(422, "invalid type");
    s.txt2img(None, json!({"override_settings": 3})).assert_error(422, "invalid type");
    // Clients such as webuiapi send null for unset fields: null takes A1111's default.
    let r =
        s.txt2img(None, small(json!({"seed": 6, "sampler_index": null, "override_settings": null, "styles": null})));
    assert_eq!(info(&r)["sampler_name"], "Euler");
    s.txt2img(Some("k-pro"), small(json!({"width": 100000}))).assert_error(403, "max_pixels");
    s.txt2img(Some("k-long"), small(json!({"width": 9000, "height": 8}))).assert_error(400, "8192");
    s.txt2img(Some("k-pro"), small(json!({"steps": 1_000_000_000u64}))).assert_error(403, "max_steps");
    s.txt2img(None, small(json!({"batch_size": 1u64 << 40, "n_iter": 1u64 << 40})))
        .assert_error(400, "batch_size × n_iter");
    s.txt2img(None, small(json!({"batch_size": 0}))).assert_error(400, "at least 1");
    s.txt2img(None, small(json!({"width": 60}))).assert_error(400, "multiples of 8");
    s.txt2img(None, small(json!({"seed": -7}))).assert_error(400, "seed");
    s.txt2img(None, small(json!({"sampler_name": "Heun"}))).assert_error(400, "Heun");
    s.txt2img(None, small(json!({"sampler_name": "Euler", "scheduler": "Karras"}))).assert_error(400, "Karras");
    s.txt2img(None, small(json!({"scheduler": "Exponential"}))).assert_error(400, "exponential");
    s.txt2img(None, small(json!({"override_settings": {"CLIP_stop_at_last_layers": 40}})))
        .assert_error(400, "CLIP_stop_at_last_layers");
    s.txt2img(None, small(json!({"prompt": "<lora:no_such_lora:1>"}))).assert_error(400, "no_such_lora");
    s.txt2img(None, small(json!({"prompt": "<lora:../loras/kohya_lora:1>"})))
        .assert_error(400, "inside the LoRA folder");
    s.txt2img(None, small(json!({"prompt": "<lora:/etc/passwd:1>"}))).assert_error(400, "inside the LoRA folder");
    s.txt2img(None, small(json!({"prompt": "<lora:kohya_lora:heavy>"}))).assert_error(400, "not a finite number");
    let big = json!({"prompt": "a".repeat(1 << 20)});
    let r = s.txt2img(None, big);
    assert_eq!(r.assert_error(413, "max_body_bytes")["error"], "PayloadTooLarge");
    // A body that never finishes arriving (slow-loris) is cut off after body_timeout_s.
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let t0 = Instant::now();
    write!(c, "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"prompt\"").unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    parse_response(&raw).assert_error(408, "body_timeout_s");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    // Wrong method and route: still answers, and the server still generates afterwards.
    assert_eq!(s.get("/sdapi/v1/txt2img").status, 405);
    let r = s.txt2img(None, small(json!({"seed": 1})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(info(&r)["all_seeds"], json!([1]));
}

#[test]
fn queue_full_interrupt_progress_and_concurrency() {
    let s = std::sync::Arc::new(Server::start("queue", "queue_size = 2\nrequest_timeout_s = 300"));
    let long = {
        let s = s.clone();
        std::thread::spawn(move || {
            let t = s.txt2img(Some("k-long"), small(json!({"steps": 1000, "seed": 1})));
            (t, Instant::now())
        })
    };
    let p = s.wait_progress("the long job to sample", |p| p["state"]["sampling_step"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(p["state"]["sampling_steps"], 1000);
    assert_eq!(p["state"]["job_count"], 1);
    let f = p["progress"].as_f64().unwrap();
    assert!(f > 0.0 && f < 0.5, "{p}");
    assert!(p["eta_relative"].as_f64().unwrap() > 0.0, "{p}");
    assert_eq!(p["state"]["interrupted"], false);
    // The long tier runs one job at a time.
    s.txt2img(Some("k-long"), small(json!({}))).assert_error(429, "concurrent_jobs");

    let queued: Vec<_> = (0..2)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || s.txt2img(Some("k-pro"), small(json!({"seed": 20 + i}))))
        })
        .collect();
    s.wait_progress("two queued jobs", |p| p["state"]["job_count"] == 3);
    let full = s.txt2img(Some("k-pro"), small(json!({})));
    assert_eq!(full.assert_error(503, "queue is full")["limit"], "queue_size");
    assert!(full.header("retry-after").is_some(), "{:?}", full.headers);

    // Only the job's own key interrupts it.
    let other = s.post("/sdapi/v1/interrupt", Some("k-pro"), &json!({}));
    assert_eq!(other.json()["interrupted"], false);
    let asked = Instant::now();
    assert_eq!(s.post("/sdapi/v1/interrupt", Some("k-long"), &json!({})).json()["interrupted"], true);
    let (r, answered) = long.join().unwrap();
    let inf = info(&r);
    assert_eq!(inf["interrupted"], true);
    assert_eq!(inf["all_seeds"], json!([1]));
    // As A1111: the image decoded from the latents reached, with its infotext.
    let images = r.json()["images"].as_array().unwrap().clone();
    assert_eq!(images.len(), 1, "{}", r.text());
    let (w, h, _, params) = decode_png(images[0].as_str().unwrap());
    assert_eq!((w, h), (64, 64));
    assert!(params.contains("Steps: 1000,"), "{params}");
    assert_eq!(inf["infotexts"].as_array().unwrap().len(), 1);
    // Between steps: well before the remaining ~1000 steps could have run.
    assert!(answered.duration_since(asked) < Duration::from_secs(20), "{:?}", answered.duration_since(asked));
    for (i, q) in queued.into_iter().enumerate() {
        let r = q.join().unwrap();
        assert_eq!(info(&r)["all_seeds"], json!([20 + i]));
        assert_eq!(r.json()["images"].as_array().unwrap().len(), 1);
    }
    let p = s.progress();
    assert_eq!(p["state"]["job_count"], 0, "{p}");
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_the_running_job_and_rejects_queued_ones() {
    let mut s = Server::start("shutdown", "");
    let addr = s.addr.clone();
    let running = {
        let a = addr.clone();
        std::thread::spawn(move || {
            http(
                &a,
                "POST",
                "/sdapi/v1/txt2img",
                None,
                Some(small(json!({"steps": 100, "seed": 4})).to_string().as_bytes()),
            )
        })
    };
    s.wait_progress("the first job to sample", |p| p["state"]["sampling_step"].as_u64().unwrap_or(0) >= 1);
    let queued = {
        let a = addr.clone();
        std::thread::spawn(move || {
            http(&a, "POST", "/sdapi/v1/txt2img", Some("k-pro"), Some(small(json!({"seed": 5})).to_string().as_bytes()))
        })
    };
    s.wait_progress("a queued job", |p| p["state"]["job_count"] == 2);
    let st = Command::new("kill").args(["-TERM", &s.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    queued.join().unwrap().assert_error(503, "shutting down");
    let r = running.join().unwrap();
    assert_eq!(info(&r)["all_seeds"], json!([4]), "the running job finishes");
    assert_eq!(r.json()["images"].as_array().unwrap().len(), 1);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status:?}: {}", s.stderr());
}

#[test]
fn a_request_past_its_timeout_gets_504_and_its_job_stops() {
    let s = std::sync::Arc::new(Server::start("timeout", "request_timeout_s = 5"));
    // Kernels compiled first, so the timeout falls in the middle of sampling, between steps. On a
    // loaded machine the first compile can outlast the timeout itself: then compile again (the
    // driver keeps what it compiled) until a request fits.
    let mut warm = s.txt2img(None, small(json!({"seed": 2})));
    for _ in 0..10 {
        if warm.status != 504 {
            break;
        }
        warm = s.txt2img(None, small(json!({"seed": 2})));
    }
    assert_eq!(info(&warm)["all_seeds"], json!([2]));
    let t0 = Instant::now();
    let long = {
        let s = s.clone();
        std::thread::spawn(move || s.txt2img(Some("k-long"), small(json!({"steps": 1000, "seed": 1}))))
    };
    s.wait_progress("the long job to sample", |p| {
        p["state"]["sampling_step"].as_u64().unwrap_or(0) >= 1 || long.is_finished()
    });
    let r = long.join().unwrap();
    assert_eq!(r.assert_error(504, "request_timeout_s")["limit"], "request_timeout_s");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    // The cancelled job leaves the GPU within a step or two, not after its 1000 steps (~2 min).
    let t1 = Instant::now();
    while s.progress()["state"]["job_count"] != 0 {
        assert!(t1.elapsed() < Duration::from_secs(20), "the timed-out job still runs: {}", s.progress());
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = s.txt2img(None, small(json!({"seed": 3})));
    assert_eq!(info(&r)["all_seeds"], json!([3]));
}

#[cfg(unix)]
#[test]
fn lora_names_stay_inside_the_lora_folder() {
    let dir = tmpdir("folder");
    let (loras, outside) = (dir.join("loras"), dir.join("outside"));
    std::fs::create_dir_all(loras.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let src = fixtures().join("loras/kohya_lora.safetensors");
    std::fs::copy(&src, loras.join("sub/inner.safetensors")).unwrap();
    std::fs::copy(&src, outside.join("secret.safetensors")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.safetensors"), loras.join("escape.safetensors")).unwrap();
    std::os::unix::fs::symlink(&outside, loras.join("away")).unwrap();
    let s = Server::start_in(dir, "", &loras);
    let listed = s.get("/sdapi/v1/loras").json();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sub/inner"], "symlinks leading out are not listed");
    s.txt2img(None, small(json!({"prompt": "x <lora:escape:1>"}))).assert_error(400, "leads outside");
    s.txt2img(None, small(json!({"prompt": "x <lora:away/secret:1>"}))).assert_error(400, "leads outside");
    s.txt2img(None, small(json!({"prompt": "x <lora:sub/../escape:1>"}))).assert_error(400, "inside the LoRA folder");
    let r = s.txt2img(None, small(json!({"prompt": "x <lora:sub/inner:0.5>", "seed": 1})));
    assert!(info(&r)["infotexts"][0].as_str().unwrap().contains("Lora hashes: \"inner: "), "{}", r.text());
}
