//! One adapted module: its factor tensors, scale, and the exact ΔW they define.

use std::collections::BTreeMap;

use super::delta::{hadamard, kron, matmul, transpose, tucker, Mat};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use crate::weights::names::Component;

/// Adapter family of a module (or, for a file, of its modules).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraKind {
    /// kohya LoRA on linear / 1×1 conv weights.
    Lora,
    /// kohya/LyCORIS LoRA on k×k convs or with a Tucker `lora_mid` core.
    LoCon,
    LoHa,
    LoKr,
    /// diffusers / PEFT `lora_A`/`lora_B` (and the older `lora_linear_layer.up/down`).
    Peft,
    /// Any low-rank family with a `dora_scale` magnitude vector (merge-only).
    Dora,
}

/// An adapted model weight.
#[derive(Clone, Debug)]
pub struct LoraModule {
    pub component: Component,
    /// Diffusers path of the changed weight, e.g. `down_blocks.1.attentions.0.proj_in.weight`.
    pub target: String,
    pub target_shape: Vec<usize>,
    pub kind: LoraKind,
    /// The module key in the file (without tensor suffix).
    pub key: String,
    pub rank: usize,
    pub alpha: Option<f32>,
    /// alpha / rank (1 without alpha), or the explicit `.scale` tensor.
    pub scale: f32,
    /// DoRA magnitude, recorded for merge-only application.
    pub dora_scale: Option<HostTensor>,
    /// Factor tensors by canonical role: down, up, mid, w1a, w1b, w2a, w2b, t1, t2, w1, w2.
    pub(crate) parts: BTreeMap<&'static str, Mat>,
}

impl LoraKind {
    pub fn name(self) -> &'static str {
        match self {
            LoraKind::Lora => "LoRA (kohya)",
            LoraKind::LoCon => "LoCon (kohya/LyCORIS)",
            LoraKind::LoHa => "LoHa (LyCORIS)",
            LoraKind::LoKr => "LoKr (LyCORIS)",
            LoraKind::Peft => "LoRA (diffusers/PEFT)",
            LoraKind::Dora => "DoRA",
        }
    }
}

impl LoraModule {
    /// A module from one key's grouped tensors. `alpha`, `scale` and the DoRA magnitude are taken
    /// out of the factor parts (the magnitude is returned for the caller to keep or drop); the
    /// scale is the `scale` tensor, else alpha/rank, else 1, alpha being the file's or
    /// `default_alpha`'s. The kind is the factor family, or DoRA with a magnitude; callers that
    /// know the target refine it (PEFT, LoCon).
    pub(crate) fn from_parts(
        key: String,
        component: Component,
        target: String,
        target_shape: Vec<usize>,
        mut parts: BTreeMap<&'static str, Mat>,
        default_alpha: impl FnOnce() -> Option<f32>,
    ) -> (LoraModule, Option<Mat>) {
        let alpha = parts.remove("alpha").and_then(|m| m.data.first().copied()).or_else(default_alpha);
        let scale_t = parts.remove("scale").and_then(|m| m.data.first().copied());
        let dora = parts.remove("dora");
        let mut m = LoraModule {
            component,
            target,
            target_shape,
            kind: LoraKind::Lora,
            key,
            rank: 0,
            alpha,
            scale: 1.0,
            dora_scale: None,
            parts,
        };
        m.rank = m.factor_rank();
        m.scale = match (scale_t, alpha) {
            (Some(s), _) => s,
            (None, Some(a)) if m.rank > 0 && a != 0.0 => a / m.rank as f32,
            _ => 1.0,
        };
        m.kind = if dora.is_some() { LoraKind::Dora } else { m.family_kind() };
        (m, dora)
    }

    fn part(&self, role: &str) -> Result<&Mat> {
        self.parts
            .get(role)
            .ok_or_else(|| Error::invalid("lora_module", format!("{}: missing {role} tensor", self.key)))
    }

    pub(crate) fn family_kind(&self) -> LoraKind {
        self.family()
    }

    fn family(&self) -> LoraKind {
        if self.parts.contains_key("w1a") || self.parts.contains_key("t1") {
            LoraKind::LoHa
        } else if self.parts.contains_key("w1") || self.parts.contains_key("k1a") {
            LoraKind::LoKr
        } else {
            LoraKind::Lora
        }
    }

    /// ΔW at multiplier 1 (scale included) in the target weight's shape.
    pub fn delta(&self) -> Result<HostTensor> {
        let m = self.raw_delta()?;
        let n: usize = self.target_shape.iter().product();
        if m.numel() != n {
            return Err(Error::shape(
                "lora_delta",
                format!("{}: ΔW has {:?}, the target {} is {:?}", self.key, m.shape, self.target, self.target_shape),
            ));
        }
        let data = m.data.into_iter().map(|v| v * self.scale).collect();
        HostTensor::new(&self.target_shape, data)
    }

    fn raw_delta(&self) -> Result<Mat> {
        let k = &self.key;
        match self.family() {
            LoraKind::LoHa => {
                let f1 = self.loha_factor("w1a", "w1b", "t1")?;
                let f2 = self.loha_factor("w2a", "w2b", "t2")?;
                hadamard(&f1, &f2, k)
            }
            LoraKind::LoKr => {
                let w1 = match self.parts.get("w1") {
                    Some(w) => w.clone(),
                    None => matmul(self.part("k1a")?, self.part("k1b")?, k)?,
                };
                let w2 = if let Some(w) = self.parts.get("w2") {
                    w.clone()
                } else if let Some(t) = self.parts.get("kt2") {
                    tucker(t, self.part("k2a")?, self.part("k2b")?, k)?
                } else {
                    let mut m = matmul(self.part("k2a")?, self.part("k2b")?, k)?;
                    // w2_b may carry the conv kernel: keep w2 4-D so kron lays out [out,in,kh,kw].
                    if self.target_shape.len() == 4 {
                        let (b, rest) = m.rows_cols();
                        let kk = self.target_shape[2] * self.target_shape[3];
                        if rest % kk == 0 {
                            m.shape = vec![b, rest / kk, self.target_shape[2], self.target_shape[3]];
                        }
                    }
                    m
                };
                let w2 = if w2.shape.len() < 2 { Mat { shape: vec![w2.numel(), 1], data: w2.data } } else { w2 };
                kron(&w1, &w2, k)
            }
            _ => {
                let down = self.part("down")?;
                let up = self.part("up")?;
                match self.parts.get("mid") {
                    Some(mid) => tucker(mid, &transpose(up), down, k),
                    None => matmul(up, down, k),
                }
            }
        }
    }

    fn loha_factor(&self, a: &str, b: &str, t: &str) -> Result<Mat> {
        match self.parts.get(t) {
            Some(core) => tucker(core, self.part(a)?, self.part(b)?, &self.key),
            None => matmul(self.part(a)?, self.part(b)?, &self.key),
        }
    }

    /// For plain low-rank modules (no Tucker core): down `[r, in·kh·kw]`, up `[out, r]`, scale.
    pub fn low_rank(&self) -> Option<(HostTensor, HostTensor, f32)> {
        if self.family() != LoraKind::Lora || self.parts.contains_key("mid") {
            return None;
        }
        let down = self.parts.get("down")?;
        let up = self.parts.get("up")?;
        let (r, inn) = down.rows_cols();
        let (out, r2) = up.rows_cols();
        if r != r2 {
            return None;
        }
        let d = HostTensor::new(&[r, inn], down.data.clone()).ok()?;
        let u = HostTensor::new(&[out, r], up.data.clone()).ok()?;
        Some((d, u, self.scale))
    }

    /// Output rows and flattened input width the factors produce, without computing ΔW.
    pub(crate) fn produced_dims(&self) -> Option<(usize, usize)> {
        let p = &self.parts;
        let dims = |m: &Mat| m.rows_cols();
        match self.family() {
            LoraKind::LoHa => match p.get("t1") {
                Some(t) => {
                    let kk: usize = t.shape.iter().skip(2).product();
                    Some((dims(p.get("w1a")?).1, dims(p.get("w1b")?).1 * kk))
                }
                None => Some((dims(p.get("w1a")?).0, dims(p.get("w1b")?).1)),
            },
            LoraKind::LoKr => {
                let (a, c) = match p.get("w1") {
                    Some(w) => dims(w),
                    None => (dims(p.get("k1a")?).0, dims(p.get("k1b")?).1),
                };
                let (b, d) = if let Some(w) = p.get("w2") {
                    dims(w)
                } else if let Some(t) = p.get("kt2") {
                    let kk: usize = t.shape.iter().skip(2).product();
                    (dims(p.get("k2a")?).1, dims(p.get("k2b")?).1 * kk)
                } else {
                    (dims(p.get("k2a")?).0, dims(p.get("k2b")?).1)
                };
                Some((a * b, c * d))
            }
            _ => {
                let up = dims(p.get("up")?);
                match p.get("mid") {
                    Some(mid) => {
                        let kk: usize = mid.shape.iter().skip(2).product();
                        Some((up.0, p.get("down")?.shape.get(1).copied()? * kk))
                    }
                    None => Some((up.0, dims(p.get("down")?).1)),
                }
            }
        }
    }

    /// Rank used for alpha / rank.
    pub(crate) fn factor_rank(&self) -> usize {
        let p = &self.parts;
        let r = |role: &str| p.get(role).map(|m| m.shape.first().copied().unwrap_or(1));
        match self.family() {
            LoraKind::LoHa => r("w1b").unwrap_or(1),
            LoraKind::LoKr => r("k2b").or_else(|| r("k1b")).unwrap_or(0),
            _ => r("down").unwrap_or(1),
        }
    }
}
