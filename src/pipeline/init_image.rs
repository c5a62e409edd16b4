//! Host-side pixel work around img2img, inpainting and hires fix, done the way A1111 and
//! diffusers do it so that their images and infotexts reproduce: loading init images and masks,
//! A1111's resize modes, its mask blur, the "only masked" crop box, paste-back and overlay, and
//! torch's latent interpolation.
//!
//! Images are [`HostTensor`]s `[3, H, W]` (planar RGB in [0, 1]); masks are `[H, W]` in [0, 1],
//! 1 = repaint. The resizing functions take either layout (`[C, H, W]` or `[H, W]`).

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageDecoder, ImageReader, Luma};

use crate::named_enum::named_enum;
use crate::{Error, HostTensor, Result};

const OP: &str = "init_image";

/// Decoding: any colour type and bit depth of PNG, JPEG or WebP, turned upright by its EXIF
/// orientation as A1111 does (`ImageOps.exif_transpose`).
fn decode(path: &Path, what: &str) -> Result<DynamicImage> {
    let bad = |e: &dyn std::fmt::Display| Error::invalid(OP, format!("cannot read the {what} {}: {e}", path.display()));
    let reader = ImageReader::open(path).map_err(|e| bad(&e))?;
    decode_from(reader, &|e| bad(e))
}

/// [`decode`] of bytes in memory (an HTTP body's base64 image); `what` names it in errors.
fn decode_bytes(bytes: &[u8], what: &str) -> Result<DynamicImage> {
    let bad = |e: &dyn std::fmt::Display| Error::invalid(OP, format!("cannot read {what}: {e}"));
    decode_from(ImageReader::new(std::io::Cursor::new(bytes)), &|e| bad(e))
}

fn decode_from<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    bad: &dyn Fn(&dyn std::fmt::Display) -> Error,
) -> Result<DynamicImage> {
    let reader = reader.with_guessed_format().map_err(|e| bad(&e))?;
    if reader.format().is_none() {
        return Err(bad(&"not a PNG, JPEG or WebP image"));
    }
    let mut decoder = reader.into_decoder().map_err(|e| bad(&e))?;
    let orientation = decoder.orientation().map_err(|e| bad(&e))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| bad(&e))?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(bad(&"the image is empty"));
    }
    Ok(img)
}

/// An init image as `[3, H, W]` in [0, 1]. Alpha is dropped, not composited (PIL's
/// `convert("RGB")`, which A1111 applies); grey and palette images become RGB.
pub fn load_image(path: &Path) -> Result<HostTensor> {
    rgb_tensor(&decode(path, "init image")?)
}

/// [`load_image`] of an encoded image in memory; `what` names it in errors.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<HostTensor> {
    rgb_tensor(&decode_bytes(bytes, what)?)
}

/// [`load_mask`] of an encoded image in memory; `what` names it in errors.
pub fn decode_mask(bytes: &[u8], what: &str) -> Result<HostTensor> {
    mask_tensor(&decode_bytes(bytes, what)?)
}

fn rgb_tensor(img: &DynamicImage) -> Result<HostTensor> {
    let rgb = img.to_rgb32f();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            data[c * h * w + i] = p.0[c];
        }
    }
    HostTensor::new(&[3, h, w], data)
}

/// An inpainting mask as `[H, W]` in [0, 1], white (1) = repaint. As A1111's
/// `create_binary_mask` (without its rounding): an image with an alpha channel that is not
/// fully opaque is read by its alpha (a transparent brush stroke on a uniform colour, or a
/// cut-out); any other image by its luminance, PIL's `convert("L")` (ITU-R 601-2 weights).
pub fn load_mask(path: &Path) -> Result<HostTensor> {
    mask_tensor(&decode(path, "mask")?)
}

fn mask_tensor(img: &DynamicImage) -> Result<HostTensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let rgba = img.to_rgba8();
    let use_alpha = img.color().has_alpha() && rgba.pixels().any(|p| p.0[3] != 255);
    let data = rgba
        .pixels()
        .map(|p| {
            let [r, g, b, a] = p.0.map(u32::from);
            let v = if use_alpha { a } else { (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16 };
            v as f32 / 255.0
        })
        .collect();
    HostTensor::new(&[h, w], data)
}

/// A1111's mask rounding (`create_binary_mask` with "Round mask"): 8-bit values above 128 are
/// masked, the rest are not.
pub fn binarize_mask(mask: &HostTensor) -> HostTensor {
    let data = mask.data.iter().map(|&v| if (v * 255.0).round() > 128.0 { 1.0 } else { 0.0 }).collect();
    HostTensor { shape: mask.shape.clone(), data }
}

/// How an init image of another size is brought to the request's size (A1111's "Resize mode").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    /// Stretch to the size (the aspect ratio may change).
    JustResize,
    /// Scale to cover the size, then cut the overflow off both sides equally.
    CropAndResize,
    /// Scale to fit inside the size, then fill the empty bands from the image's edges.
    ResizeAndFill,
}

named_enum!(
    ResizeMode,
    op = "resize_mode",
    unknown = |s| format!("unknown resize mode {s:?}; valid: just-resize, crop-and-resize, resize-and-fill"),
    {
        JustResize => "just-resize",
        CropAndResize => "crop-and-resize",
        ResizeAndFill => "resize-and-fill",
    }
);

impl ResizeMode {
    /// A1111's name of the mode.
    pub fn a1111_name(self) -> &'static str {
        match self {
            ResizeMode::JustResize => "Just resize",
            ResizeMode::CropAndResize => "Crop and resize",
            ResizeMode::ResizeAndFill => "Resize and fill",
        }
    }

    /// Reads A1111's names (and lorafuse's own).
    pub fn from_a1111(s: &str) -> Result<ResizeMode> {
        let s = s.trim();
        match ResizeMode::ALL.iter().find(|m| m.a1111_name() == s) {
            Some(m) => Ok(*m),
            None => s.parse(),
        }
    }
}

/// `(channels, height, width)` of an image `[C, H, W]` or a mask `[H, W]`.
fn dims(t: &HostTensor, op: &'static str) -> Result<(usize, usize, usize)> {
    let d = match t.shape[..] {
        [c, h, w] => (c, h, w),
        [h, w] => (1, h, w),
        _ => return Err(Error::shape(op, format!("expected [C, H, W] or [H, W], got {:?}", t.shape))),
    };
    if d.0 * d.1 * d.2 != t.data.len() {
        return Err(Error::shape(op, format!("shape {:?} does not hold {} values", t.shape, t.data.len())));
    }
    Ok(d)
}

/// The shape of `t`'s layout at another size.
fn shape_like(t: &HostTensor, c: usize, h: usize, w: usize) -> Vec<usize> {
    if t.shape.len() == 3 {
        vec![c, h, w]
    } else {
        vec![h, w]
    }
}

fn check_size(op: &'static str, w: usize, h: usize) -> Result<()> {
    if w == 0 || h == 0 || w > 16384 || h > 16384 {
        return Err(Error::invalid(op, format!("cannot resize to {w}x{h}")));
    }
    Ok(())
}

/// Lanczos (a = 3) resampling, PIL's `LANCZOS` (the filter widens when shrinking, so it
/// antialiases), per channel; results clamped to [0, 1] as PIL's 8-bit output is.
pub fn resize_image(img: &HostTensor, width: usize, height: usize) -> Result<HostTensor> {
    const OP: &str = "resize_image";
    let (c, h, w) = dims(img, OP)?;
    check_size(OP, width, height)?;
    if (w, h) == (width, height) {
        return Ok(img.clone());
    }
    let mut data = Vec::with_capacity(c * width * height);
    for plane in img.data.chunks_exact(h * w) {
        let buf = ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(w as u32, h as u32, plane.to_vec())
            .ok_or_else(|| Error::shape(OP, "plane size"))?;
        let out = image::imageops::resize(&buf, width as u32, height as u32, FilterType::Lanczos3);
        data.extend(out.into_raw());
    }
    HostTensor::new(&shape_like(img, c, height, width), data)
}

/// [`resize_image`] for a `[H, W]` mask.
pub fn resize_mask(mask: &HostTensor, width: usize, height: usize) -> Result<HostTensor> {
    if mask.shape.len() != 2 {
        return Err(Error::shape("resize_mask", format!("a mask is [H, W], got {:?}", mask.shape)));
    }
    resize_image(mask, width, height)
}

/// PIL's bicubic filter (a = -0.5), which `Image.resize` uses by default.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The rows (or columns) and weights PIL's bicubic resize reads for a zero-height source box at
/// `center` (A1111's band fill asks for `box=(0, 0, W, 0)` and `box=(0, H, W, H)`): its own
/// window arithmetic, so the fill is 1.125·edge − 0.125·next line, as A1111's is.
fn zero_box_taps(center: usize, n: usize) -> Vec<(usize, f64)> {
    let center = center as f64;
    let lo = ((center - 2.0 + 0.5) as i64).max(0) as usize; // C's truncating cast, as PIL
    let hi = ((center + 2.0 + 0.5) as i64).min(n as i64) as usize;
    let taps: Vec<(usize, f64)> = (lo..hi).map(|i| (i, bicubic(i as f64 - center + 0.5))).collect();
    let sum: f64 = taps.iter().map(|t| t.1).sum();
    taps.into_iter().map(|(i, w)| (i, if sum != 0.0 { w / sum } else { w })).collect()
}

/// Bring an image or mask to `width`×`height` as A1111's `images.resize_image` does (with its
/// default, no img2img upscaler: Lanczos only). Crop-and-resize scales to cover and keeps the
/// centre; resize-and-fill scales to fit, centres, and fills the bands on either side with the
/// resized image's edge lines stretched across (A1111's own band fill, see [`zero_box_taps`]);
/// a line left over when the band cannot split evenly stays black, as in A1111.
pub fn fit_image(img: &HostTensor, width: usize, height: usize, mode: ResizeMode) -> Result<HostTensor> {
    const OP: &str = "fit_image";
    let (c, h, w) = dims(img, OP)?;
    check_size(OP, width, height)?;
    let (ratio, src_ratio) = (width as f64 / height as f64, w as f64 / h as f64);
    let (sw, sh) = match mode {
        ResizeMode::JustResize => return resize_image(img, width, height),
        ResizeMode::CropAndResize => (
            if ratio > src_ratio { width } else { w * height / h },
            if ratio <= src_ratio { height } else { h * width / w },
        ),
        ResizeMode::ResizeAndFill => (
            if ratio < src_ratio { width } else { w * height / h },
            if ratio >= src_ratio { height } else { h * width / w },
        ),
    };
    let resized = resize_image(img, sw.max(1), sh.max(1))?;
    let (sw, sh) = (sw.max(1), sh.max(1));
    let mut out = HostTensor::zeros(&shape_like(img, c, height, width));
    // PIL's paste at (W/2 − sw/2, H/2 − sh/2), clipped (negative for crop-and-resize).
    let (ox, oy) = ((width / 2) as i64 - (sw / 2) as i64, (height / 2) as i64 - (sh / 2) as i64);
    let src_at = |ch: usize, y: usize, x: usize| resized.data[(ch * sh + y) * sw + x];
    for ch in 0..c {
        for y in 0..height {
            let sy = y as i64 - oy;
            if sy < 0 || sy >= sh as i64 {
                continue;
            }
            for x in 0..width {
                let sx = x as i64 - ox;
                if sx >= 0 && sx < sw as i64 {
                    out.data[(ch * height + y) * width + x] = src_at(ch, sy as usize, sx as usize);
                }
            }
        }
    }
    if mode != ResizeMode::ResizeAndFill {
        return Ok(out);
    }
    let mut set = |ch: usize, y: usize, x: usize, v: f64| {
        if y < height && x < width {
            out.data[(ch * height + y) * width + x] = v.clamp(0.0, 1.0) as f32;
        }
    };
    if ratio < src_ratio {
        let fill = (height / 2).saturating_sub(sh / 2);
        let (top, bottom) = (zero_box_taps(0, sh), zero_box_taps(sh, sh));
        for ch in 0..c {
            for x in 0..width.min(sw) {
                let t: f64 = top.iter().map(|&(i, wt)| wt * src_at(ch, i, x) as f64).sum();
                let b: f64 = bottom.iter().map(|&(i, wt)| wt * src_at(ch, i, x) as f64).sum();
                for y in 0..fill {
                    set(ch, y, x, t);
                    set(ch, fill + sh + y, x, b);
                }
            }
        }
    } else if ratio > src_ratio {
        let fill = (width / 2).saturating_sub(sw / 2);
        let (left, right) = (zero_box_taps(0, sw), zero_box_taps(sw, sw));
        for ch in 0..c {
            for y in 0..height.min(sh) {
                let l: f64 = left.iter().map(|&(i, wt)| wt * src_at(ch, y, i) as f64).sum();
                let r: f64 = right.iter().map(|&(i, wt)| wt * src_at(ch, y, i) as f64).sum();
                for x in 0..fill {
                    set(ch, y, x, l);
                    set(ch, y, fill + sw + x, r);
                }
            }
        }
    }
    Ok(out)
}

/// cv2's `BORDER_REFLECT_101` (`gfedcb|abcdefgh|gfedcba`), repeated for kernels wider than
/// the image.
fn reflect101(mut i: i64, n: i64) -> usize {
    if n == 1 {
        return 0;
    }
    while i < 0 || i >= n {
        i = if i < 0 { -i } else { 2 * (n - 1) - i };
    }
    i as usize
}

/// A1111's mask blur: `cv2.GaussianBlur` along x, then along y, each with a kernel of
/// `2·⌊2.5·blur + 0.5⌋ + 1` taps and σ = `blur`, borders reflected (cv2's default
/// `BORDER_REFLECT_101`). A1111 blurs an 8-bit mask and so rounds after each pass; so does this,
/// which also keeps the far tails at exactly 0 (the overlay leaves those pixels untouched).
/// `blur` 0 returns the mask unchanged.
pub fn blur_mask(mask: &HostTensor, blur: f32) -> Result<HostTensor> {
    const OP: &str = "blur_mask";
    if mask.shape.len() != 2 || mask.shape[0] * mask.shape[1] != mask.data.len() {
        return Err(Error::shape(OP, format!("a mask is [H, W], got {:?}", mask.shape)));
    }
    if !(blur.is_finite() && (0.0..=256.0).contains(&blur)) {
        return Err(Error::invalid(OP, format!("mask blur must be in [0, 256], got {blur}")));
    }
    if blur == 0.0 {
        return Ok(mask.clone());
    }
    let sigma = blur as f64;
    let half = (2.5 * sigma + 0.5) as i64; // Python's int(): truncation
    let mut kernel: Vec<f64> = (-half..=half).map(|i| (-0.5 * (i * i) as f64 / (sigma * sigma)).exp()).collect();
    let sum: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let (h, w) = (mask.shape[0], mask.shape[1]);
    let quantize = |v: f64| ((v.clamp(0.0, 1.0) * 255.0).round() / 255.0) as f32;
    let mut tmp = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let v: f64 = kernel
                .iter()
                .enumerate()
                .map(|(k, wt)| wt * mask.data[y * w + reflect101(x as i64 + k as i64 - half, w as i64)] as f64)
                .sum();
            tmp[y * w + x] = quantize(v);
        }
    }
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let v: f64 = kernel
                .iter()
                .enumerate()
                .map(|(k, wt)| wt * tmp[reflect101(y as i64 + k as i64 - half, h as i64) * w + x] as f64)
                .sum();
            out[y * w + x] = quantize(v);
        }
    }
    HostTensor::new(&[h, w], out)
}

/// The "only masked" region `[x0, y0, x1, y1]` (x1, y1 exclusive): diffusers'
/// `VaeImageProcessor.get_crop_region`, which is A1111's. The bounding box of the mask's
/// non-zero pixels (as 8-bit values: 0.5/255 and above), grown by `padding` on each side and
/// clamped to the mask, then grown on its short side to the `width`:`height` aspect ratio and
/// shifted back inside the mask (clamped where the mask is too small for it). An all-zero mask
/// has no region: an error.
pub fn crop_region(mask: &HostTensor, width: usize, height: usize, padding: usize) -> Result<[usize; 4]> {
    const OP: &str = "crop_region";
    if mask.shape.len() != 2 || mask.shape[0] * mask.shape[1] != mask.data.len() {
        return Err(Error::shape(OP, format!("a mask is [H, W], got {:?}", mask.shape)));
    }
    if width == 0 || height == 0 {
        return Err(Error::invalid(OP, format!("cannot fit a region to {width}x{height}")));
    }
    let (h, w) = (mask.shape[0], mask.shape[1]);
    let on = |y: usize, x: usize| (mask.data[y * w + x] * 255.0).round() > 0.0;
    let (mut left, mut right, mut top, mut bottom) = (w, 0, h, 0);
    for y in 0..h {
        for x in 0..w {
            if on(y, x) {
                (left, right, top, bottom) = (left.min(x), right.max(x + 1), top.min(y), bottom.max(y + 1));
            }
        }
    }
    if left >= right {
        return Err(Error::invalid(OP, "the mask is empty (all black): nothing to inpaint"));
    }
    let (w, h, pad) = (w as i64, h as i64, padding as i64);
    let (mut x1, mut y1) = ((left as i64 - pad).max(0), (top as i64 - pad).max(0));
    let (mut x2, mut y2) = ((right as i64 + pad).min(w), (bottom as i64 + pad).min(h));
    let ratio_crop = (x2 - x1) as f64 / (y2 - y1) as f64;
    let ratio = width as f64 / height as f64;
    // diffusers' arithmetic, clamps included, line for line (Python floats are f64).
    if ratio_crop > ratio {
        let diff = ((x2 - x1) as f64 / ratio - (y2 - y1) as f64) as i64;
        (y1, y2) = grow_span(y1, y2, diff, h);
    } else {
        let diff = ((y2 - y1) as f64 * ratio - (x2 - x1) as f64) as i64;
        (x1, x2) = grow_span(x1, x2, diff, w);
    }
    Ok([x1 as usize, y1 as usize, x2 as usize, y2 as usize])
}

/// One axis of the crop box grown by `diff` (half on each side), shifted back inside `[0, len)`
/// and clamped, as diffusers does it for whichever axis is short of the target aspect.
fn grow_span(mut lo: i64, mut hi: i64, diff: i64, len: i64) -> (i64, i64) {
    lo -= diff / 2;
    hi += diff - diff / 2;
    if hi >= len {
        let d = hi - len;
        hi -= d;
        lo -= d;
    }
    if lo < 0 {
        hi -= lo;
        lo = 0;
    }
    (lo, hi.min(len))
}

fn check_region(op: &'static str, region: [usize; 4], h: usize, w: usize) -> Result<()> {
    let [x0, y0, x1, y1] = region;
    if x0 >= x1 || y0 >= y1 || x1 > w || y1 > h {
        return Err(Error::invalid(op, format!("region {region:?} is empty or outside a {w}x{h} image")));
    }
    Ok(())
}

/// The `[x0, y0, x1, y1]` part of an image or mask.
pub fn crop(img: &HostTensor, region: [usize; 4]) -> Result<HostTensor> {
    const OP: &str = "crop";
    let (c, h, w) = dims(img, OP)?;
    check_region(OP, region, h, w)?;
    let [x0, y0, x1, y1] = region;
    let mut data = Vec::with_capacity(c * (x1 - x0) * (y1 - y0));
    for ch in 0..c {
        for y in y0..y1 {
            data.extend_from_slice(&img.data[(ch * h + y) * w + x0..(ch * h + y) * w + x1]);
        }
    }
    HostTensor::new(&shape_like(img, c, y1 - y0, x1 - x0), data)
}

/// Write `src` over the `[x0, y0, x1, y1]` part of `dst`; `src` must already have the region's
/// size (resize it first) and `dst`'s layout.
pub fn paste(dst: &mut HostTensor, src: &HostTensor, region: [usize; 4]) -> Result<()> {
    const OP: &str = "paste";
    let (c, h, w) = dims(dst, OP)?;
    check_region(OP, region, h, w)?;
    let [x0, y0, x1, y1] = region;
    if src.shape != shape_like(dst, c, y1 - y0, x1 - x0) {
        return Err(Error::shape(OP, format!("{:?} does not fit region {region:?} of {:?}", src.shape, dst.shape)));
    }
    let rw = x1 - x0;
    for ch in 0..c {
        for y in y0..y1 {
            let s = (ch * (y1 - y0) + y - y0) * rw;
            dst.data[(ch * h + y) * w + x0..(ch * h + y) * w + x1].copy_from_slice(&src.data[s..s + rw]);
        }
    }
    Ok(())
}

/// `alpha·generated + (1 − alpha)·original` per pixel, `alpha` `[H, W]` shared by the channels:
/// where alpha is 0 the result is the original exactly, where it is 1 the generated image.
pub fn overlay(original: &HostTensor, generated: &HostTensor, alpha: &HostTensor) -> Result<HostTensor> {
    const OP: &str = "overlay";
    let (c, h, w) = dims(original, OP)?;
    if generated.shape != original.shape || alpha.shape != [h, w] {
        return Err(Error::shape(
            OP,
            format!("original {:?}, generated {:?} and mask {:?} differ", original.shape, generated.shape, alpha.shape),
        ));
    }
    let mut out = original.clone();
    for ch in 0..c {
        for i in 0..h * w {
            let (a, o, g) = (alpha.data[i], original.data[ch * h * w + i], generated.data[ch * h * w + i]);
            out.data[ch * h * w + i] = a * g + (1.0 - a) * o;
        }
    }
    Ok(out)
}

/// Hires fix's latent upscale, torch's `interpolate` on `[C, h, w]`: bilinear with
/// `align_corners=False` and no antialias (A1111 "Latent"), or `mode="nearest"`, source index
/// ⌊dst·in/out⌋ (A1111 "Latent (nearest)"). Indices are computed in f32, as torch does.
pub fn upscale_latents(lat: &HostTensor, h2: usize, w2: usize, nearest: bool) -> Result<HostTensor> {
    upscale_latents_with(lat, h2, w2, if nearest { LatentInterp::Nearest } else { LatentInterp::Bilinear })
}

/// torch `interpolate` modes the latent upscalers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatentInterp {
    /// `bilinear`, `align_corners=False`, no antialias.
    Bilinear,
    /// `nearest`: source ⌊dst·in/out⌋.
    Nearest,
    /// `nearest-exact`: source ⌊(dst + ½)·in/out⌋.
    NearestExact,
}

/// [`upscale_latents`] with any of torch's modes the A1111 latent upscalers use.
pub fn upscale_latents_with(lat: &HostTensor, h2: usize, w2: usize, mode: LatentInterp) -> Result<HostTensor> {
    const OP: &str = "upscale_latents";
    let [c, h, w] = lat.shape[..] else {
        return Err(Error::shape(OP, format!("latents are [C, h, w], got {:?}", lat.shape)));
    };
    if c * h * w != lat.data.len() || h == 0 || w == 0 {
        return Err(Error::shape(OP, format!("latents {:?} hold {} values", lat.shape, lat.data.len())));
    }
    check_size(OP, w2, h2)?;
    // (index, weight) pairs along one axis.
    let taps = |n_in: usize, n_out: usize| -> Vec<[(usize, f32); 2]> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|d| {
                if mode != LatentInterp::Bilinear {
                    let offset = if mode == LatentInterp::NearestExact { 0.5 } else { 0.0 };
                    let i = (((d as f32 + offset) * scale).floor() as usize).min(n_in - 1);
                    [(i, 1.0), (i, 0.0)]
                } else {
                    let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                    let i0 = (src as usize).min(n_in - 1);
                    let i1 = (i0 + 1).min(n_in - 1);
                    let l1 = src - i0 as f32;
                    [(i0, 1.0 - l1), (i1, l1)]
                }
            })
            .collect()
    };
    let (ty, tx) = (taps(h, h2), taps(w, w2));
    let mut out = vec![0f32; c * h2 * w2];
    for ch in 0..c {
        let p = &lat.data[ch * h * w..(ch + 1) * h * w];
        for (y, [(y0, wy0), (y1, wy1)]) in ty.iter().enumerate() {
            for (x, [(x0, wx0), (x1, wx1)]) in tx.iter().enumerate() {
                out[(ch * h2 + y) * w2 + x] = wy0 * (wx0 * p[y0 * w + x0] + wx1 * p[y0 * w + x1])
                    + wy1 * (wx0 * p[y1 * w + x0] + wx1 * p[y1 * w + x1]);
            }
        }
    }
    HostTensor::new(&[c, h2, w2], out)
}
