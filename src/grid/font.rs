//! Label text drawn with an embedded 8×8 bitmap font (font8x8: Basic Latin and Latin-1), scaled
//! by whole pixels, so a grid renders the same everywhere and needs no system font.

use font8x8::legacy::{BASIC_LEGACY, LATIN_LEGACY};

/// Glyph cell side in font pixels (before scaling).
pub const GLYPH: usize = 8;

/// The 8 row bytes of `c` (bit `i` of a row = column `i`, left to right); `?` for characters the
/// font lacks, so an unusual label still shows where text is.
fn glyph(c: char) -> [u8; 8] {
    let u = c as u32;
    match u {
        0x20..=0x7E => BASIC_LEGACY[u as usize],
        0xA0..=0xFF => LATIN_LEGACY[(u - 0xA0) as usize],
        _ => BASIC_LEGACY[b'?' as usize],
    }
}

/// Width in pixels of one line of `text` at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * GLYPH * scale
}

/// Line height in pixels at `scale` (the glyph plus two rows of leading).
pub fn line_height(scale: usize) -> usize {
    (GLYPH + 2) * scale
}

/// Split `text` into lines of at most `max_chars` characters: at spaces where possible, inside a
/// word only when the word alone is too long. Never returns an empty list.
pub fn wrap(text: &str, max_chars: usize) -> Vec<String> {
    let max = max_chars.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let wlen = word.chars().count();
        let clen = cur.chars().count();
        if clen > 0 && clen + 1 + wlen <= max {
            cur.push(' ');
            cur.push_str(word);
            continue;
        }
        if clen > 0 {
            lines.push(std::mem::take(&mut cur));
        }
        let chars: Vec<char> = word.chars().collect();
        let mut pieces = chars.chunks(max).peekable();
        while let Some(p) = pieces.next() {
            let s: String = p.iter().collect();
            if pieces.peek().is_some() {
                lines.push(s);
            } else {
                cur = s;
            }
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Draw one line of `text` into an interleaved RGB8 image of `width`×`height` with its top-left
/// corner at (`x`, `y`); pixels falling outside the image are clipped.
#[allow(clippy::too_many_arguments)]
pub fn draw_text(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    x: usize,
    y: usize,
    text: &str,
    scale: usize,
    color: [u8; 3],
) {
    let s = scale.max(1);
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        let gx = x + i * GLYPH * s;
        for (row, bits) in g.iter().enumerate() {
            for col in 0..GLYPH {
                if bits >> col & 1 == 0 {
                    continue;
                }
                for dy in 0..s {
                    let py = y + row * s + dy;
                    if py >= height {
                        break;
                    }
                    for dx in 0..s {
                        let px = gx + col * s + dx;
                        if px >= width {
                            break;
                        }
                        let o = (py * width + px) * 3;
                        rgb[o..o + 3].copy_from_slice(&color);
                    }
                }
            }
        }
    }
}
