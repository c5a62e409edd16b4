//! Samplers against diffusers: every case of tests/fixtures/sd15-tiny/scheduler_cases.json
//! (timesteps exact, σ and init_noise_sigma ≤ 1e-6 relative), the timesteps of runs.json, and a
//! synthetic end-to-end loop per sampler comparing the coefficient form against a separate, plain
//! transcription of each diffusers `step()` (≤ 1e-9 relative L2).

use std::path::PathBuf;

use lorafuse::schedulers::{
    sample_host, step_host, step_host_f64, PredictionType, SamplerKind, Schedule, SchedulerConfig, Spacing, StepCoeffs,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// σ tables and init_noise_sigma: diffusers stores float32, we compute from float32-replayed tables.
const TOL_SIGMA: f64 = 1e-6;
/// Coefficient form vs direct transcription, both in f64.
const TOL_E2E: f64 = 1e-9;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny").join(name)
}

fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }
}

fn rel_l2(out: &[f64], reference: &[f64]) -> f64 {
    let num: f64 = out.iter().zip(reference).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f64 = reference.iter().map(|b| b * b).sum();
    (num / den).sqrt()
}

#[test]
fn fixture_config_is_sd15() {
    let cfg = SchedulerConfig::from_diffusers_json(fixture("model/scheduler/scheduler_config.json"))
        .expect("fixture scheduler config parses");
    assert_eq!(cfg, SchedulerConfig::sd15());
}

#[test]
fn scheduler_cases_match_diffusers() {
    let cases = read_json("scheduler_cases.json");
    let cases = cases.as_object().expect("object of cases");
    assert!(cases.len() >= 30, "expected 5 samplers x 2 spacings x 3 step counts, got {}", cases.len());
    let cfg = SchedulerConfig::sd15();
    let mut worst_sigma = 0.0f64;
    let mut worst_init = 0.0f64;
    for (name, case) in cases {
        let parts: Vec<&str> = name.split('/').collect();
        assert_eq!(parts.len(), 3, "case name {name}");
        let kind: SamplerKind = parts[0].parse().expect("sampler name");
        let spacing: Spacing = parts[1].parse().expect("spacing name");
        let steps: usize = parts[2].parse().expect("step count");
        let s = Schedule::new(kind, spacing, steps, &cfg).expect("schedule builds");

        let want_t = floats(&case["timesteps"]);
        assert_eq!(s.timesteps(), want_t.as_slice(), "{name}: timesteps");
        assert_eq!(s.len(), want_t.len(), "{name}: step count");
        for (i, t) in want_t.iter().enumerate() {
            assert_eq!(s.timestep(i), *t, "{name}: step {i} timestep");
        }

        let init = case["init_noise_sigma"].as_f64().expect("init_noise_sigma");
        let e = rel(s.init_noise_sigma(), init);
        assert!(e <= TOL_SIGMA, "{name}: init_noise_sigma {} vs {init}", s.init_noise_sigma());
        worst_init = worst_init.max(e);

        match case.get("sigmas") {
            Some(sig) => {
                let want = floats(sig);
                assert_eq!(s.sigmas().len(), want.len(), "{name}: sigma count");
                for (i, (a, b)) in s.sigmas().iter().zip(&want).enumerate() {
                    let e = rel(*a, *b);
                    assert!(e <= TOL_SIGMA, "{name}: sigma {i}: {a} vs {b} (rel {e:.2e})");
                    worst_sigma = worst_sigma.max(e);
                }
            }
            None => assert!(s.sigmas().is_empty(), "{name}: ddim/lcm have no sigmas"),
        }
    }
    println!("worst sigma rel err {worst_sigma:.3e}, worst init_noise_sigma rel err {worst_init:.3e}");
}

#[test]
fn runs_json_timesteps_match() {
    let runs = read_json("runs.json");
    let cfg = SchedulerConfig::sd15();
    for (name, run) in runs.as_object().expect("object of runs") {
        let kind: SamplerKind = run["sampler"].as_str().expect("sampler").parse().expect("known sampler");
        let spacing: Spacing = run["timestep_spacing"].as_str().expect("spacing").parse().expect("spacing");
        let steps = run["steps"].as_u64().expect("steps") as usize;
        let s = Schedule::new(kind, spacing, steps, &cfg).expect("schedule builds");
        assert_eq!(s.timesteps(), floats(&run["timesteps"]).as_slice(), "{name}");
    }
}

#[test]
fn names_and_limits() {
    for k in SamplerKind::ALL {
        assert_eq!(k.name().parse::<SamplerKind>().expect("round trip"), k);
    }
    let err = "heun".parse::<SamplerKind>().expect_err("unknown sampler").to_string();
    for k in SamplerKind::ALL {
        assert!(err.contains(k.name()), "error lists {}: {err}", k.name());
    }
    assert!("linspace".parse::<Spacing>().is_err());
    let cfg = SchedulerConfig::sd15();
    for k in SamplerKind::ALL {
        assert!(Schedule::new(k, Spacing::Leading, 0, &cfg).is_err(), "{k}: 0 steps");
        assert!(Schedule::new(k, Spacing::Trailing, 1001, &cfg).is_err(), "{k}: 1001 steps");
    }
    assert!(Schedule::new(SamplerKind::Lcm, Spacing::Leading, 51, &cfg).is_err(), "lcm > 50 steps");
    assert!(Schedule::new(SamplerKind::Lcm, Spacing::Leading, 50, &cfg).is_ok());
    let mut clip = cfg.clone();
    clip.clip_sample = true;
    assert!(Schedule::new(SamplerKind::Ddim, Spacing::Leading, 10, &clip).is_err());
}

#[test]
fn needs_noise_pattern() {
    let cfg = SchedulerConfig::sd15();
    for k in SamplerKind::ALL {
        let s = Schedule::new(k, Spacing::Leading, 4, &cfg).expect("schedule");
        let got: Vec<bool> = (0..s.len()).map(|i| s.needs_noise(i)).collect();
        let want = match k {
            SamplerKind::EulerA => vec![true; 4],
            SamplerKind::Lcm => vec![true, true, true, false],
            _ => vec![false; 4],
        };
        assert_eq!(got, want, "{k}");
        for (i, st) in s.steps().iter().enumerate() {
            assert_eq!(st.needs_noise, st.coeffs.noise != 0.0 || k == SamplerKind::EulerA, "{k} step {i}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Synthetic end-to-end: a fake linear "UNet" and straightforward transcriptions of diffusers' step().

const N: usize = 48;

/// The fake model: a fixed linear function of its input and the timestep.
fn fake_model(x_in: &[f64], t: f64) -> Vec<f64> {
    x_in.iter()
        .enumerate()
        .map(|(j, &v)| (0.35 + t / 2500.0) * v + 0.4 * ((j as f64) * 0.7).sin() * (1.0 - t / 1200.0))
        .collect()
}

fn noises(count: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            (0..N)
                .map(|_| {
                    // Box-Muller from the test rng: any unit-ish noise will do here.
                    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                })
                .collect()
        })
        .collect()
}

/// The loop through the coefficient form (f64 host reference).
fn run_coeffs(s: &Schedule, init: &[f64], noise: &[Vec<f64>]) -> Vec<f64> {
    let mut x: Vec<f64> = init.iter().map(|v| v * s.init_noise_sigma()).collect();
    let mut prev_x0 = Vec::new();
    let mut drawn = 0;
    for i in 0..s.len() {
        let x_in: Vec<f64> = x.iter().map(|v| v * s.scale_model_input(i)).collect();
        let out = fake_model(&x_in, s.timestep(i));
        let n = if s.needs_noise(i) {
            drawn += 1;
            Some(noise[drawn - 1].as_slice())
        } else {
            None
        };
        step_host_f64(s.coeffs(i), &mut x, &out, &mut prev_x0, n).expect("step");
    }
    x
}

fn vp_x0(pred: PredictionType, a: f64, x: f64, out: f64) -> (f64, f64) {
    // DDIM/LCM: (x0, ε̂) exactly as diffusers writes them.
    let b = 1.0 - a;
    match pred {
        PredictionType::Epsilon => ((x - b.sqrt() * out) / a.sqrt(), out),
        PredictionType::Sample => (out, (x - a.sqrt() * out) / b.sqrt()),
        PredictionType::VPrediction => (a.sqrt() * x - b.sqrt() * out, a.sqrt() * out + b.sqrt() * x),
    }
}

/// The same loop written directly from diffusers' step() functions.
fn run_direct(kind: SamplerKind, s: &Schedule, cfg: &SchedulerConfig, init: &[f64], noise: &[Vec<f64>]) -> Vec<f64> {
    let pred = cfg.prediction_type;
    let ts = s.timesteps();
    let sig = s.sigmas();
    let ac = cfg.alphas_cumprod().expect("alphas");
    let acf = |t: f64| ac[t as usize];
    let mut drawn = 0;
    let mut next_noise = || {
        drawn += 1;
        noise[drawn - 1].clone()
    };
    let mut x: Vec<f64> = init.iter().map(|v| v * s.init_noise_sigma()).collect();
    let mut model_outputs: Vec<Vec<f64>> = Vec::new();
    for (i, &t) in ts.iter().enumerate() {
        let x_in: Vec<f64> = match kind {
            SamplerKind::Euler | SamplerKind::EulerA => x.iter().map(|v| v / (sig[i] * sig[i] + 1.0).sqrt()).collect(),
            _ => x.clone(),
        };
        let out = fake_model(&x_in, t);
        match kind {
            SamplerKind::Euler | SamplerKind::EulerA => {
                let sigma = sig[i];
                let pred_x0: Vec<f64> = x
                    .iter()
                    .zip(&out)
                    .map(|(&xv, &o)| match pred {
                        PredictionType::Epsilon => xv - sigma * o,
                        PredictionType::VPrediction => {
                            o * (-sigma / (sigma * sigma + 1.0).sqrt()) + xv / (sigma * sigma + 1.0)
                        }
                        PredictionType::Sample => o,
                    })
                    .collect();
                if kind == SamplerKind::Euler {
                    let dt = sig[i + 1] - sigma;
                    for j in 0..N {
                        let d = (x[j] - pred_x0[j]) / sigma;
                        x[j] += d * dt;
                    }
                } else {
                    let (from, to) = (sigma, sig[i + 1]);
                    let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
                    let down = (to * to - up * up).sqrt();
                    let dt = down - sigma;
                    let n = next_noise();
                    for j in 0..N {
                        let d = (x[j] - pred_x0[j]) / sigma;
                        x[j] = x[j] + d * dt + n[j] * up;
                    }
                }
            }
            SamplerKind::DpmPP2M | SamplerKind::DpmPP2MKarras => {
                let at_sig = |s: f64| {
                    let a = 1.0 / (s * s + 1.0).sqrt();
                    (a, s * a)
                };
                let (alpha_s0, sigma_s0) = at_sig(sig[i]);
                let m0: Vec<f64> = x
                    .iter()
                    .zip(&out)
                    .map(|(&xv, &o)| match pred {
                        PredictionType::Epsilon => (xv - sigma_s0 * o) / alpha_s0,
                        PredictionType::VPrediction => alpha_s0 * xv - sigma_s0 * o,
                        PredictionType::Sample => o,
                    })
                    .collect();
                model_outputs.push(m0.clone());
                let (alpha_t, sigma_t) = at_sig(sig[i + 1]);
                let lambda_t = alpha_t.ln() - sigma_t.ln();
                let lambda_s0 = alpha_s0.ln() - sigma_s0.ln();
                let h = lambda_t - lambda_s0;
                let last = i == ts.len() - 1;
                if i == 0 || last {
                    for j in 0..N {
                        x[j] = (sigma_t / sigma_s0) * x[j] - (alpha_t * ((-h).exp() - 1.0)) * m0[j];
                    }
                } else {
                    let (alpha_s1, sigma_s1) = at_sig(sig[i - 1]);
                    let lambda_s1 = alpha_s1.ln() - sigma_s1.ln();
                    let h_0 = lambda_s0 - lambda_s1;
                    let r0 = h_0 / h;
                    let m1 = &model_outputs[model_outputs.len() - 2];
                    for j in 0..N {
                        let d0 = m0[j];
                        let d1 = (1.0 / r0) * (m0[j] - m1[j]);
                        x[j] = (sigma_t / sigma_s0) * x[j]
                            - (alpha_t * ((-h).exp() - 1.0)) * d0
                            - 0.5 * (alpha_t * ((-h).exp() - 1.0)) * d1;
                    }
                }
            }
            SamplerKind::Ddim => {
                let n_inf = s.len();
                let prev_t = t - (cfg.num_train_timesteps / n_inf) as f64;
                let a_t = acf(t);
                let a_prev = if prev_t >= 0.0 {
                    acf(prev_t)
                } else if cfg.set_alpha_to_one {
                    1.0
                } else {
                    ac[0]
                };
                for j in 0..N {
                    let (x0, e) = vp_x0(pred, a_t, x[j], out[j]);
                    x[j] = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * e;
                }
            }
            SamplerKind::Lcm => {
                let last = i == ts.len() - 1;
                let prev_t = if last { t } else { ts[i + 1] };
                let (a_t, a_prev) = (acf(t), acf(prev_t));
                let st = t * cfg.timestep_scaling;
                let c_skip = 0.25 / (st * st + 0.25);
                let c_out = st / (st * st + 0.25).sqrt();
                let n = if last { None } else { Some(next_noise()) };
                for j in 0..N {
                    let (x0, _) = vp_x0(pred, a_t, x[j], out[j]);
                    let denoised = c_out * x0 + c_skip * x[j];
                    x[j] = match &n {
                        Some(n) => a_prev.sqrt() * denoised + (1.0 - a_prev).sqrt() * n[j],
                        None => denoised,
                    };
                }
            }
        }
    }
    x
}

#[test]
fn coefficient_form_matches_direct_step_formulas() {
    let init = noises(1, 7).remove(0);
    let noise = noises(60, 11);
    let mut worst = 0.0f64;
    let mut cases = 0;
    for pred in [PredictionType::Epsilon, PredictionType::VPrediction, PredictionType::Sample] {
        let mut cfg = SchedulerConfig::sd15();
        cfg.prediction_type = pred;
        for kind in SamplerKind::ALL {
            if kind == SamplerKind::EulerA && pred == PredictionType::Sample {
                // diffusers has no "sample" prediction for Euler ancestral; neither do we.
                assert!(Schedule::new(kind, Spacing::Leading, 4, &cfg).is_err());
                continue;
            }
            for spacing in [Spacing::Leading, Spacing::Trailing] {
                for steps in [1, 2, 3, 4, 7, 20, 30] {
                    let s = Schedule::new(kind, spacing, steps, &cfg).expect("schedule");
                    let a = run_coeffs(&s, &init, &noise);
                    let b = run_direct(kind, &s, &cfg, &init, &noise);
                    assert!(a.iter().all(|v| v.is_finite()), "{kind} {spacing} {steps} {pred:?}");
                    let e = rel_l2(&a, &b);
                    assert!(e <= TOL_E2E, "{kind}/{spacing}/{steps} {pred:?}: rel L2 {e:.3e}");
                    worst = worst.max(e);
                    cases += 1;
                }
            }
        }
    }
    println!("{cases} sampler loops, worst coefficient-vs-direct rel L2 {worst:.3e}");
}

#[test]
fn step_host_f32_follows_f64() {
    // The f32 entry point the pipeline uses must apply the same update (to f32 rounding).
    let cfg = SchedulerConfig::sd15();
    let s = Schedule::new(SamplerKind::DpmPP2MKarras, Spacing::Leading, 6, &cfg).expect("schedule");
    let init = noises(1, 3).remove(0);
    let mut x64: Vec<f64> = init.clone();
    let mut x32: Vec<f32> = init.iter().map(|&v| v as f32).collect();
    let (mut p64, mut p32) = (Vec::new(), Vec::new());
    for i in 0..s.len() {
        let out64 = fake_model(&x64, s.timestep(i));
        let out32: Vec<f32> = out64.iter().map(|&v| v as f32).collect();
        step_host_f64(s.coeffs(i), &mut x64, &out64, &mut p64, None).expect("f64 step");
        step_host(s.coeffs(i), &mut x32, &out32, &mut p32, None).expect("f32 step");
        let back: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let e = rel_l2(&back, &x64);
        assert!(e <= 1e-6, "step {i}: f32 vs f64 rel L2 {e:.3e}");
        x32 = x64.iter().map(|&v| v as f32).collect();
        p32 = p64.iter().map(|&v| v as f32).collect();
    }
    // Shape and missing-input errors rather than panics.
    let c = s.coeffs(1);
    assert!(step_host(c, &mut [0.0; 3], &[0.0; 2], &mut Vec::new(), None).is_err());
    let noisy = StepCoeffs { noise: 0.5, ..StepCoeffs::default() };
    assert!(step_host(noisy, &mut [0.0; 3], &[0.0; 3], &mut Vec::new(), None).is_err());
    assert!(step_host(c, &mut [0.0; 3], &[0.0; 3], &mut Vec::new(), None).is_err(), "needs prev x0");
}

#[test]
fn sample_host_runs_the_documented_loop() {
    // The f32 convenience loop must agree with the f64 coefficient loop to f32 rounding.
    let cfg = SchedulerConfig::sd15();
    let init = noises(1, 5).remove(0);
    let noise = noises(30, 13);
    let init32: Vec<f32> = init.iter().map(|&v| v as f32).collect();
    let mut worst = 0.0f64;
    for kind in SamplerKind::ALL {
        let s = Schedule::new(kind, Spacing::Leading, 8, &cfg).expect("schedule");
        let want = run_coeffs(&s, &init, &noise);
        let mut drawn = 0;
        let got = sample_host(
            &s,
            &init32,
            |_, x_in, t| {
                let x64: Vec<f64> = x_in.iter().map(|&v| v as f64).collect();
                Ok(fake_model(&x64, t).into_iter().map(|v| v as f32).collect())
            },
            |_| {
                drawn += 1;
                noise[drawn - 1].iter().map(|&v| v as f32).collect()
            },
        )
        .expect("loop runs");
        let got64: Vec<f64> = got.iter().map(|&v| v as f64).collect();
        let e = rel_l2(&got64, &want);
        assert!(e <= 1e-5, "{kind}: sample_host vs f64 loop rel L2 {e:.3e}");
        worst = worst.max(e);
    }
    println!("sample_host (f32) vs f64 coefficient loop: worst rel L2 {worst:.3e}");
}

// ---------------------------------------------------------------------------------------------
// Zero terminal SNR (diffusers `rescale_betas_zero_snr`), against tools/make_sdxl_vpred_goldens.py.

/// A deterministic unit-ish noise vector (#0: the initial noise), as the golden script draws it.
fn det_noise(k: usize) -> Vec<f64> {
    (0..N)
        .map(|j| {
            let (j, k) = (j as f64, k as f64);
            let v = 1.3 * (j * 1.37 + 0.71 * k + 0.3).sin() * (j * 0.29 + 1.1 * k).cos();
            f64::from(v as f32)
        })
        .collect()
}

/// σ with zero terminal SNR. The rescale divides consecutive ᾱ (β_t = 1 − ᾱ_t/ᾱ_{t−1}), so a
/// one-ulp difference in √ᾱ becomes ~3e-6 in a small β, and torch's vectorised CPU sqrt is not
/// correctly rounded (it differs from IEEE sqrt in the last bit for 182 of the 1000 √ᾱ):
/// measured worst 1.8e-6 relative (σ at t = 49).
const TOL_SIGMA_ZSNR: f64 = 1e-5;

/// Every sampler × {v, ε} × spacing × {1, 4, 20} steps with zero terminal SNR: timesteps exact,
/// σ and init_noise_sigma ≤ 1e-5, and the final latents of a fake-model loop run through
/// diffusers' own `step()` (float32) ≤ 1e-3 relative L2: the first step starts from x = 4096·n
/// and lands near x0, so diffusers' float32 `sample + derivative·dt` cancels 4 digits (measured
/// worst 1.4e-4, Euler 1 step; the f64 coefficient form has no such loss). ε at ᾱ = 0 (DDIM, LCM at t = 999), where
/// diffusers produces NaN, is an error naming the cause.
#[test]
fn zero_snr_cases_match_diffusers() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl-tiny/scheduler_cases_vpred.json");
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
    let cases = all["cases"].as_object().expect("cases");
    assert!(cases.len() >= 72, "6 samplers x 2 predictions x 2 spacings x 3 step counts, got {}", cases.len());
    let (mut worst_sigma, mut worst_final, mut refused) = (0.0f64, 0.0f64, 0);
    for (name, case) in cases {
        let p: Vec<&str> = name.split('/').collect();
        let kind: SamplerKind = p[0].parse().expect("sampler");
        let mut cfg = SchedulerConfig::sd15();
        cfg.rescale_betas_zero_snr = true;
        cfg.prediction_type =
            if p[1] == "v_prediction" { PredictionType::VPrediction } else { PredictionType::Epsilon };
        let spacing: Spacing = p[2].parse().expect("spacing");
        let steps: usize = p[3].parse().expect("steps");
        let built = Schedule::new(kind, spacing, steps, &cfg);
        if !case["finite"].as_bool().expect("finite") {
            let e = built.expect_err(name).to_string();
            assert!(e.contains("zero terminal SNR"), "{name}: {e}");
            refused += 1;
            continue;
        }
        let s = built.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.timesteps(), floats(&case["timesteps"]).as_slice(), "{name}: timesteps");
        let init = case["init_noise_sigma"].as_f64().expect("init");
        assert!(rel(s.init_noise_sigma(), init) <= TOL_SIGMA_ZSNR, "{name}: init {} vs {init}", s.init_noise_sigma());
        if let Some(sig) = case.get("sigmas") {
            let want = floats(sig);
            assert_eq!(s.sigmas().len(), want.len(), "{name}: sigma count");
            for (i, (a, b)) in s.sigmas().iter().zip(&want).enumerate() {
                assert!(rel(*a, *b) <= TOL_SIGMA_ZSNR, "{name}: sigma {i}: {a} vs {b}");
                worst_sigma = worst_sigma.max(rel(*a, *b));
            }
        }
        let draws = case["noise_draws"].as_u64().expect("draws") as usize;
        assert_eq!((0..s.len()).filter(|&i| s.needs_noise(i)).count(), draws, "{name}: noise draws");
        let noise: Vec<Vec<f64>> = (1..=draws).map(det_noise).collect();
        let got = run_coeffs(&s, &det_noise(0), &noise);
        let e = rel_l2(&got, &floats(&case["final"]));
        assert!(e <= 1e-3, "{name}: final latents rel L2 {e:.3e}");
        worst_final = worst_final.max(e);
    }
    assert!(refused > 0, "some ε cases are refused");
    println!("zero SNR: worst sigma rel {worst_sigma:.3e}, worst final rel L2 {worst_final:.3e}, {refused} refused");
}

#[test]
fn zero_snr_table_ends_at_zero_and_config_parses() {
    let mut cfg = SchedulerConfig::sd15();
    cfg.rescale_betas_zero_snr = true;
    let ac = cfg.alphas_cumprod().expect("alphas");
    let plain = SchedulerConfig::sd15().alphas_cumprod().expect("alphas");
    // ᾱ_0 is kept, the last one is 0 (DDIM/LCM), and σ-based samplers see 2⁻²⁴ there: σ_max 4096.
    assert!(rel(ac[0], plain[0]) <= 1e-6, "{} vs {}", ac[0], plain[0]);
    assert_eq!(*ac.last().expect("last"), 0.0);
    // √(2²⁴ − 1) correctly rounded is 4096 − 2⁻¹²; torch's sqrt gives 4096.
    assert!(rel(*cfg.sigmas().expect("sigmas").last().expect("last"), 4096.0) <= 1e-7);
    let json = r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
        "steps_offset": 1, "set_alpha_to_one": false, "rescale_betas_zero_snr": true,
        "prediction_type": "v_prediction"}"#;
    let parsed = SchedulerConfig::from_json_str(json, "test").expect("zero SNR config parses");
    assert!(parsed.rescale_betas_zero_snr && parsed.prediction_type == PredictionType::VPrediction);
    assert_eq!(PredictionType::ALL.map(|p| p.name()), ["eps", "v", "sample"]);
    assert!("x".parse::<PredictionType>().is_err());
}
