//! TAESD / TAESDXL: madebyollin's tiny autoencoder (diffusers `AutoencoderTiny`), a cheap stand-in
//! for the full VAE (previews, fast decodes).
//!
//! Both published layouts load, detected from the keys: diffusers' `AutoencoderTiny` file
//! (`decoder.layers.N…`, `encoder.layers.N…`) and the standalone `taesd_decoder.safetensors` /
//! `taesd_encoder.safetensors` (bare `nn.Sequential` indices). The standalone decoder starts with a
//! parameterless `Clamp` module, so its indices are one past diffusers'; the encoder's match.
//!
//! The level structure is fixed by the architecture (decoder 3, 3, 3, 1 blocks, encoder 1, 3, 3, 3;
//! the same for TAESD and TAESDXL, which differ only in weights); widths come from the stored shapes.
//!
//! Latents are the UNet's as they are: `AutoencoderTiny`'s scaling factor is 1, so nothing is
//! divided by the full VAE's factor before [`TaesdDecoder::forward`] and nothing is multiplied
//! after [`TaesdEncoder::forward`]. Images are in [-1, 1] both ways, as diffusers returns them,
//! so [`super::postprocess`] applies unchanged.

use crate::kernels::binary::{add, add_scaled};
use crate::kernels::conv2d::Conv2dParams;
use crate::kernels::unary::{unary, UnaryOp};
use crate::kernels::upsample::upsample_nearest;
use crate::models::dims4;
use crate::nn::{Conv2d, Loader};
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

/// Blocks per decoder level, lowest resolution first.
const DECODER_BLOCKS: [usize; 4] = [3, 3, 3, 1];
/// Blocks per encoder level, full resolution first.
const ENCODER_BLOCKS: [usize; 4] = [1, 3, 3, 3];
/// TAESD's soft bound on input latents: `3·tanh(z/3)`.
const LATENT_CLAMP: f32 = 3.0;

/// Which file layout the weights came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaesdLayout {
    /// diffusers `AutoencoderTiny`: `decoder.layers.N…` / `encoder.layers.N…`.
    Diffusers,
    /// madebyollin's `taesd_decoder.safetensors` / `taesd_encoder.safetensors`.
    Standalone,
}

/// `AutoencoderTinyBlock`: three 3×3 convs with ReLU between, plus a skip (a 1×1 conv only when
/// one is stored), then ReLU of the sum.
pub struct TinyBlock {
    pub convs: [Conv2d; 3],
    pub skip: Option<Conv2d>,
}

impl TinyBlock {
    fn load(l: &Loader, cin: usize, cout: usize) -> Result<TinyBlock> {
        let c = l.pp("conv");
        let convs = [
            Conv2d::load(&c.pp(0), cin, cout, 3, 1)?,
            Conv2d::load(&c.pp(2), cout, cout, 3, 1)?,
            Conv2d::load(&c.pp(4), cout, cout, 3, 1)?,
        ];
        let skip = if l.contains("skip.weight") { Some(Conv2d::load(&l.pp("skip"), cin, cout, 1, 1)?) } else { None };
        if skip.is_none() && cin != cout {
            return Err(Error::invalid(
                "taesd",
                format!("block {} changes width {cin} → {cout} but stores no skip conv", l.reader().path("")),
            ));
        }
        Ok(TinyBlock { convs, skip })
    }

    fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let h = self.convs[0].forward(ctx, rec, x)?;
        let h = unary(ctx, rec, &h, UnaryOp::Relu)?;
        let h = self.convs[1].forward(ctx, rec, &h)?;
        let h = unary(ctx, rec, &h, UnaryOp::Relu)?;
        let h = self.convs[2].forward(ctx, rec, &h)?;
        let sum = match &self.skip {
            Some(s) => {
                let skip = s.forward(ctx, rec, x)?;
                add(ctx, rec, &h, &skip)?
            }
            None => add(ctx, rec, &h, x)?,
        };
        unary(ctx, rec, &sum, UnaryOp::Relu)
    }
}

/// One entry of the `nn.Sequential`.
pub enum TinyLayer {
    Conv(Conv2d),
    Relu,
    Block(Box<TinyBlock>),
    Upsample,
}

impl TinyLayer {
    fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        match self {
            TinyLayer::Conv(c) => c.forward(ctx, rec, x),
            TinyLayer::Relu => unary(ctx, rec, x, UnaryOp::Relu),
            TinyLayer::Block(b) => b.forward(ctx, rec, x),
            TinyLayer::Upsample => {
                let [_, _, h, w] = dims4("taesd.upsample", x)?;
                upsample_nearest(ctx, rec, x, 2 * h, 2 * w)
            }
        }
    }
}

/// Walks the `nn.Sequential` indices of one half, reading widths from the stored conv shapes.
struct Walker<'l, 'a> {
    l: &'l Loader<'a>,
    idx: usize,
    layers: Vec<TinyLayer>,
    width: usize,
}

impl Walker<'_, '_> {
    /// `[Cout, Cin]` of the 3×3 conv at the current index.
    fn conv_dims(&self) -> Result<[usize; 2]> {
        let name = format!("{}.weight", self.idx);
        match self.l.shape(&name).as_deref() {
            Some(&[o, i, 3, 3]) => Ok([o, i]),
            Some(s) => {
                Err(Error::shape("taesd", format!("{} is {s:?}, expected a 3×3 conv", self.l.reader().path(&name))))
            }
            None => Err(Error::invalid("taesd", format!("missing tensor {}", self.l.reader().path(&name)))),
        }
    }

    fn conv(&mut self, stride: usize) -> Result<usize> {
        let [o, i] = self.conv_dims()?;
        if !self.layers.is_empty() && i != self.width {
            return Err(Error::shape("taesd", format!("conv {} takes {i} channels after {}", self.idx, self.width)));
        }
        let c = Conv2d::load_padded(&self.l.pp(self.idx), i, o, 3, Conv2dParams::same(3, stride))?;
        self.layers.push(TinyLayer::Conv(c));
        self.idx += 1;
        self.width = o;
        Ok(i)
    }

    fn blocks(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            let b = TinyBlock::load(&self.l.pp(self.idx), self.width, self.width)?;
            self.layers.push(TinyLayer::Block(Box::new(b)));
            self.idx += 1;
        }
        Ok(())
    }

    fn plain(&mut self, layer: TinyLayer) {
        self.layers.push(layer);
        self.idx += 1;
    }

    /// Rejects a file with more layers than the architecture (a different model).
    fn finish(self) -> Result<Vec<TinyLayer>> {
        let next = format!("{}.weight", self.idx);
        if self.l.contains(&next) || self.l.contains(&format!("{}.conv.0.weight", self.idx)) {
            return Err(Error::invalid(
                "taesd",
                format!(
                    "unexpected layer {} after the last TAESD layer: not a TAESD file",
                    self.l.reader().path(&next)
                ),
            ));
        }
        Ok(self.layers)
    }
}

/// Says why `l` holds no TAESD half, naming what it looks like instead.
fn not_taesd(l: &Loader, half: &str) -> Error {
    let seen = if l.contains("decoder.up_blocks.0.resnets.0.conv1.weight")
        || l.contains("first_stage_model.decoder.conv_in.weight")
        || l.contains("decoder.up.0.block.0.conv1.weight")
    {
        " (this looks like a full AutoencoderKL VAE)"
    } else if half == "decoder" && l.contains("0.weight") && l.contains("1.conv.0.weight") {
        " (this looks like a standalone TAESD encoder, taesd_encoder.safetensors)"
    } else if half == "encoder" && l.contains("1.weight") && !l.contains("0.weight") {
        " (this looks like a standalone TAESD decoder, taesd_decoder.safetensors)"
    } else {
        ""
    };
    let standalone = if half == "decoder" { "1.weight, 3.conv.0.weight" } else { "0.weight, 1.conv.0.weight" };
    Error::invalid(
        "taesd",
        format!(
            "not a TAESD {half}: expected {half}.layers.* (diffusers AutoencoderTiny) or {standalone}, … \
             (taesd_{half}.safetensors){seen}"
        ),
    )
}

/// Latents `[B, C, h, w]` → image `[B, 3, 8h, 8w]` in [-1, 1].
pub struct TaesdDecoder {
    pub layers: Vec<TinyLayer>,
    pub latent_channels: usize,
    pub out_channels: usize,
    pub layout: TaesdLayout,
    pub dtype: DType,
}

impl TaesdDecoder {
    /// `l` is scoped to the file's root (either layout).
    pub fn load(l: &Loader) -> Result<TaesdDecoder> {
        let (scope, layout, first) = if l.contains("decoder.layers.0.weight") {
            (l.pp("decoder").pp("layers"), TaesdLayout::Diffusers, 0)
        } else if l.contains("1.weight") && l.contains("3.conv.0.weight") && !l.contains("0.weight") {
            (l.clone(), TaesdLayout::Standalone, 1)
        } else {
            return Err(not_taesd(l, "decoder"));
        };
        let mut w = Walker { l: &scope, idx: first, layers: Vec::new(), width: 0 };
        let latent_channels = w.conv(1)?;
        w.plain(TinyLayer::Relu);
        for (i, &n) in DECODER_BLOCKS.iter().enumerate() {
            w.blocks(n)?;
            if i + 1 < DECODER_BLOCKS.len() {
                w.plain(TinyLayer::Upsample);
            }
            w.conv(1)?;
        }
        let out_channels = w.width;
        Ok(TaesdDecoder { layers: w.finish()?, latent_channels, out_channels, layout, dtype: l.dtype() })
    }

    /// `z` (the UNet's latents, not divided by any scaling factor) → image in [-1, 1]. Records
    /// only, in an arena (`Context::arena`): submit `rec` as a whole.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, z: &GpuTensor) -> Result<GpuTensor> {
        super::check_input("taesd.decode", z, self.latent_channels, self.dtype)?;
        let _arena = ctx.arena();
        let mut h = unary(ctx, rec, z, UnaryOp::SoftClamp(LATENT_CLAMP))?;
        for layer in &self.layers {
            h = layer.forward(ctx, rec, &h)?;
        }
        // TAESD decodes to [0, 1]; diffusers maps that to [-1, 1], the full VAE's range.
        let one = GpuTensor::from_slice(ctx, &[1], &[1.0], h.dtype)?;
        add_scaled(ctx, rec, &h, &one, 2.0, -1.0)
    }
}

/// Image `[B, 3, H, W]` in [-1, 1] → latents `[B, C, ⌈H/8⌉, ⌈W/8⌉]` in the UNet's space.
pub struct TaesdEncoder {
    pub layers: Vec<TinyLayer>,
    pub in_channels: usize,
    pub latent_channels: usize,
    pub layout: TaesdLayout,
    pub dtype: DType,
}

impl TaesdEncoder {
    /// `l` is scoped to the file's root (either layout).
    pub fn load(l: &Loader) -> Result<TaesdEncoder> {
        let (scope, layout) = if l.contains("encoder.layers.0.weight") {
            (l.pp("encoder").pp("layers"), TaesdLayout::Diffusers)
        } else if l.contains("0.weight") && l.contains("1.conv.0.weight") {
            (l.clone(), TaesdLayout::Standalone)
        } else {
            return Err(not_taesd(l, "encoder"));
        };
        let mut w = Walker { l: &scope, idx: 0, layers: Vec::new(), width: 0 };
        let mut in_channels = 0;
        for (i, &n) in ENCODER_BLOCKS.iter().enumerate() {
            // Every level after the first halves the resolution (3×3, stride 2, padding 1).
            let cin = w.conv(if i == 0 { 1 } else { 2 })?;
            if i == 0 {
                in_channels = cin;
            }
            w.blocks(n)?;
        }
        w.conv(1)?;
        let latent_channels = w.width;
        Ok(TaesdEncoder { layers: w.finish()?, in_channels, latent_channels, layout, dtype: l.dtype() })
    }

    /// `x` in [-1, 1] → latents as the UNet uses them (no scaling factor to apply). Records only,
    /// in an arena like [`TaesdDecoder::forward`].
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        super::check_input("taesd.encode", x, self.in_channels, self.dtype)?;
        let _arena = ctx.arena();
        // TAESD encodes from [0, 1]; the conv's zero padding is then zero in that space, so the
        // shift cannot be folded into the first conv's bias.
        let one = GpuTensor::from_slice(ctx, &[1], &[1.0], x.dtype)?;
        let mut h = add_scaled(ctx, rec, x, &one, 0.5, 0.5)?;
        for layer in &self.layers {
            h = layer.forward(ctx, rec, &h)?;
        }
        Ok(h)
    }
}
