//! Live previews for `GET /sdapi/v1/progress`'s `current_image`: A1111's "Approx cheap" method, a
//! fixed linear map of each latent pixel's 4 channels to RGB. It costs one small readback and a few
//! multiplies per latent pixel, nothing next to a VAE decode, so it can run during sampling.

use base64::Engine as _;

use crate::pipeline::image::encode_png;
use crate::Result;

/// Latent channel → (R, G, B) weights fitted to the SD 1.x VAE (the ones A1111 uses).
const SD1: [[f32; 3]; 4] =
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]];

/// The same for the SDXL VAE, whose latent space differs.
const SDXL: [[f32; 3]; 4] =
    [[0.3448, 0.4168, 0.4395], [-0.1953, -0.0290, 0.0250], [0.1074, 0.0886, -0.0163], [-0.3730, -0.2499, -0.2088]];

/// One latent image [4, h, w] as RGB8 at latent resolution (h × w × 3). The map gives roughly
/// −1..1, shown as 0..255 like a decoded image.
pub fn latents_to_rgb8(latents: &[f32], [c, h, w]: [usize; 3], sdxl: bool) -> Option<Vec<u8>> {
    let plane = h * w;
    if c != 4 || latents.len() != c * plane {
        return None;
    }
    let coef = if sdxl { &SDXL } else { &SD1 };
    let mut rgb = vec![0u8; plane * 3];
    for p in 0..plane {
        for (o, out) in rgb[p * 3..p * 3 + 3].iter_mut().enumerate() {
            let v: f32 = (0..4).map(|l| latents[l * plane + p] * coef[l][o]).sum();
            *out = (((v + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    Some(rgb)
}

/// The preview as A1111 sends it: a base64 PNG (no data-URL prefix).
pub fn preview_png_base64(latents: &[f32], shape: [usize; 3], sdxl: bool) -> Result<Option<String>> {
    let Some(rgb) = latents_to_rgb8(latents, shape, sdxl) else { return Ok(None) };
    let png = encode_png(shape[2], shape[1], &rgb, "")?;
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(png)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_map_to_colours() {
        // One pixel whose only non-zero channel is the 4th: SD1 maps it to a blue-less dark colour.
        let rgb = latents_to_rgb8(&[0.0, 0.0, 0.0, 1.0], [4, 1, 1], false).unwrap();
        let want: Vec<u8> = [-0.184f32, -0.271, -0.473]
            .iter()
            .map(|v| (((v + 1.0) * 0.5f32).clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        assert_eq!(rgb, want);
        assert_ne!(latents_to_rgb8(&[0.0, 0.0, 0.0, 1.0], [4, 1, 1], true).unwrap(), want);
        assert!(latents_to_rgb8(&[0.0; 3], [4, 1, 1], false).is_none());
    }
}
