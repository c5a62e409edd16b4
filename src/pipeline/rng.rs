//! Seeded unit-normal noise that reproduces the streams other Stable Diffusion front ends draw:
//!
//! - [`RngKind::Philox`] (default): `torch.randn(shape, device="cuda")` after `manual_seed(S)`,
//!   i.e. A1111's default "GPU" seed and stable-diffusion.cpp's `--rng cuda`. Element i of the
//!   k-th draw is Philox4x32-10 at counter (k, 0, i, 0) with key (S mod 2³², S >> 32), through
//!   curand's Box–Muller (first output: √(−2 ln u)·sin v).
//! - [`RngKind::TorchCpu`]: `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(S))`,
//!   diffusers' CPU generator: mt19937 seeded with S mod 2³², then torch's normal sampler, which
//!   for ≥ 16 elements transforms 24-bit uniforms in blocks of 16 (8 Box–Muller pairs, the tail
//!   block recomputed from 16 fresh uniforms) and for fewer uses double-precision Box–Muller on
//!   53-bit uniforms, caching the second value of each pair in the generator.
//!
//! [`NoiseStream`] draws successive tensors from one generator, as diffusers does when the same
//! generator produces the initial latents and then each ancestral / LCM step's noise.

use std::f64::consts::PI;

use crate::named_enum::named_enum;

/// Which noise stream to reproduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RngKind {
    /// CUDA Philox (A1111 "GPU", sd.cpp `--rng cuda`).
    #[default]
    Philox,
    /// torch's CPU generator (diffusers with a CPU `torch.Generator`).
    TorchCpu,
}

named_enum!(RngKind, op = "rng", unknown = |s| format!("unknown rng {s:?}; valid: philox, torch-cpu"), {
    Philox => "philox",
    TorchCpu => "torch-cpu",
});

/// One tensor of unit-normal noise (row-major over `shape`) from a freshly seeded generator.
pub fn randn(kind: RngKind, seed: u64, shape: &[usize]) -> Vec<f32> {
    NoiseStream::new(kind, seed).next(shape)
}

/// A seeded generator that hands out successive noise tensors.
#[derive(Clone, Debug)]
pub struct NoiseStream {
    kind: RngKind,
    seed: u64,
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    /// Philox draws are stateless apart from the counter's high word, one per draw.
    Philox {
        draws: u32,
    },
    TorchCpu(Box<TorchCpuGen>),
}

impl NoiseStream {
    pub fn new(kind: RngKind, seed: u64) -> Self {
        let inner = match kind {
            RngKind::Philox => Inner::Philox { draws: 0 },
            RngKind::TorchCpu => Inner::TorchCpu(Box::new(TorchCpuGen::new(seed))),
        };
        NoiseStream { kind, seed, inner }
    }

    pub fn kind(&self) -> RngKind {
        self.kind
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next tensor of `shape` (its element count is the product; an empty shape is a scalar).
    pub fn next(&mut self, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        match &mut self.inner {
            Inner::Philox { draws } => {
                let out = philox_randn(self.seed, *draws, n);
                // torch advances the CUDA offset by 4 per draw (one curand4 call per thread), i.e.
                // one counter step, as long as every element has its own thread.
                *draws = draws.wrapping_add(1);
                out
            }
            Inner::TorchCpu(g) => g.randn(n),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// CUDA Philox4x32-10 (Salmon et al. 2011, as in curand) and curand's Box–Muller.

const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for round in 0..10 {
        if round > 0 {
            key[0] = key[0].wrapping_add(PHILOX_W[0]);
            key[1] = key[1].wrapping_add(PHILOX_W[1]);
        }
        let p0 = u64::from(PHILOX_M[0]) * u64::from(ctr[0]);
        let p1 = u64::from(PHILOX_M[1]) * u64::from(ctr[2]);
        ctr = [(p1 >> 32) as u32 ^ ctr[1] ^ key[0], p1 as u32, (p0 >> 32) as u32 ^ ctr[3] ^ key[1], p0 as u32];
    }
    ctr
}

fn philox_randn(seed: u64, offset: u32, n: usize) -> Vec<f32> {
    let key = [seed as u32, (seed >> 32) as u32];
    let inv = 2f64.powi(-32);
    (0..n)
        .map(|i| {
            // The element index is the curand subsequence: counter words 2 and 3.
            let i = i as u64;
            let r = philox4x32_10([offset, 0, i as u32, (i >> 32) as u32], key);
            // u ∈ (0, 1], v ∈ (0, 2π): the half-step offsets keep log(u) finite.
            let u = f64::from(r[0]) * inv + inv / 2.0;
            let v = (f64::from(r[1]) * inv + inv / 2.0) * (2.0 * PI);
            ((-2.0 * u.ln()).sqrt() * v.sin()) as f32
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// torch's CPU generator: mt19937 plus its normal sampler.

const MT_N: usize = 624;
const MT_M: usize = 397;

#[derive(Clone, Debug)]
struct Mt19937 {
    state: [u32; MT_N],
    index: usize,
}

impl Mt19937 {
    /// torch seeds with the low 32 bits of its 64-bit seed (the standard init_genrand).
    fn new(seed: u64) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = seed as u32;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(j as u32);
        }
        Mt19937 { state, index: MT_N }
    }

    fn twist(&mut self) {
        for k in 0..MT_N {
            let y = (self.state[k] & 0x8000_0000) | (self.state[(k + 1) % MT_N] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.state[k] = self.state[(k + MT_M) % MT_N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= MT_N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

#[derive(Clone, Debug)]
struct TorchCpuGen {
    mt: Mt19937,
    /// The second value of the last double-precision Box–Muller pair, as torch caches it.
    next_double_normal: Option<f64>,
}

impl TorchCpuGen {
    fn new(seed: u64) -> Self {
        TorchCpuGen { mt: Mt19937::new(seed), next_double_normal: None }
    }

    /// Uniform float in [0, 1) from 24 bits of one draw.
    fn uniform_f32(&mut self) -> f32 {
        (self.mt.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// Uniform double in [0, 1) from 53 bits of two draws (the first is the high word).
    fn uniform_f64(&mut self) -> f64 {
        let hi = u64::from(self.mt.next_u32());
        let lo = u64::from(self.mt.next_u32());
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * 2f64.powi(-53)
    }

    /// at::normal_distribution<double>: cos value now, sin value cached for the next call.
    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_double_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for start in (0..=n - 16).step_by(16) {
            normal_fill_16(&mut data[start..start + 16]);
        }
        if !n.is_multiple_of(16) {
            let tail = n - 16;
            for v in &mut data[tail..] {
                *v = self.uniform_f32();
            }
            normal_fill_16(&mut data[tail..]);
        }
        data
    }
}

/// torch's 16-wide transform: pairs (j, j+8) become r·cos θ and r·sin θ with r = √(−2 ln(1 − u_j))
/// and θ = 2π·u_{j+8}. Float32 steps as in its AVX2 kernel; log/sin/cos evaluated in f64.
fn normal_fill_16(data: &mut [f32]) {
    let two_pi = (2.0 * PI) as f32;
    for j in 0..8 {
        let u1 = 1.0f32 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0f32 * (f64::from(u1).ln() as f32)).sqrt();
        let theta = f64::from(two_pi * u2);
        data[j] = radius * theta.cos() as f32;
        data[j + 8] = radius * theta.sin() as f32;
    }
}
