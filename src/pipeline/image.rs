//! Images out: [0,1] CHW floats to 8-bit RGB PNG, with the `parameters` text chunk that A1111,
//! ComfyUI, civitai and image viewers read (its text: [`super::infotext`]), and reading it back.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Convert [C=3, H, W] values in [0,1] to interleaved RGB8 (round to nearest, as PIL does after
/// `*255` and `.round()`).
pub fn to_rgb8(chw: &[f32], height: usize, width: usize) -> Result<Vec<u8>> {
    let plane = height * width;
    if chw.len() != 3 * plane {
        return Err(Error::shape("to_rgb8", format!("{} values for a 3x{height}x{width} image", chw.len())));
    }
    let mut out = vec![0u8; 3 * plane];
    for c in 0..3 {
        for i in 0..plane {
            let v = chw[c * plane + i];
            let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
            out[i * 3 + c] = (v * 255.0).round() as u8;
        }
    }
    Ok(out)
}

/// Encode an RGB8 PNG with a `parameters` text chunk (Latin-1 tEXt when it fits, else iTXt).
pub fn encode_png(width: usize, height: usize, rgb: &[u8], parameters: &str) -> Result<Vec<u8>> {
    if rgb.len() != width * height * 3 {
        return Err(Error::shape("write_png", format!("{} bytes for a {width}x{height} RGB image", rgb.len())));
    }
    let png_err = |e: png::EncodingError| Error::invalid("write_png", e.to_string());
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if parameters.chars().all(|c| (c as u32) < 256) {
            enc.add_text_chunk("parameters".into(), parameters.into()).map_err(png_err)?;
        } else {
            enc.add_itxt_chunk("parameters".into(), parameters.into()).map_err(png_err)?;
        }
        let mut w = enc.write_header().map_err(png_err)?;
        w.write_image_data(rgb).map_err(png_err)?;
        w.finish().map_err(png_err)?;
    }
    Ok(out)
}

/// Write an RGB8 PNG with a `parameters` text chunk. The file appears whole or not at all: it is
/// written beside the target and renamed over it.
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8], parameters: &str) -> Result<()> {
    let bytes = encode_png(width, height, rgb, parameters)
        .map_err(|e| Error::invalid("write_png", format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
        .map_err(|e| Error::invalid("write_png", format!("cannot write the image to {}: {e}", path.display())))
}

/// Read an image's `parameters` text (tEXt, zTXt or iTXt), as written by A1111 or lorafuse.
pub fn read_parameters(path: &Path) -> Result<Option<String>> {
    let file = std::fs::File::open(path).map_err(|e| Error::invalid("read_png", format!("{}: {e}", path.display())))?;
    let dec = png::Decoder::new(std::io::BufReader::new(file));
    let reader = dec.read_info().map_err(|e| Error::invalid("read_png", format!("{}: {e}", path.display())))?;
    let info = reader.info();
    for t in &info.uncompressed_latin1_text {
        if t.keyword == "parameters" {
            return Ok(Some(t.text.clone()));
        }
    }
    for t in &info.compressed_latin1_text {
        if t.keyword == "parameters" {
            return Ok(t.get_text().ok());
        }
    }
    for t in &info.utf8_text {
        if t.keyword == "parameters" {
            return Ok(t.get_text().ok());
        }
    }
    Ok(None)
}

/// Write `bytes` to `path` atomically (beside it, then renamed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        path.file_name().ok_or_else(|| Error::invalid("write", format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.partial", name.to_string_lossy()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all().ok();
    std::fs::rename(&tmp, path)?;
    Ok(())
}
