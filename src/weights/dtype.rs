//! The element types a safetensors header may name, and their decoding to f32 / f16.
//!
//! Decoding works on little-endian byte slices with no alignment assumption: writers do not pad
//! data offsets, and a memory map gives no alignment guarantee beyond the page.

use half::{bf16, f16};

/// A safetensors dtype. Only the float types decode to weights; integer and bool tensors are
/// recognised so their headers validate, and reading them as floats is a clear error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StDType {
    F64,
    F32,
    F16,
    BF16,
    /// fp8 with 4 exponent bits, no infinities (the "FN" variant torch writes).
    F8E4M3,
    F8E5M2,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl StDType {
    /// Parses the header spelling (`"F16"`, `"BF16"`, `"F8_E4M3"`, ...).
    pub fn parse(s: &str) -> Option<StDType> {
        Some(match s {
            "F64" => StDType::F64,
            "F32" => StDType::F32,
            "F16" => StDType::F16,
            "BF16" => StDType::BF16,
            "F8_E4M3" => StDType::F8E4M3,
            "F8_E5M2" => StDType::F8E5M2,
            "I64" => StDType::I64,
            "I32" => StDType::I32,
            "I16" => StDType::I16,
            "I8" => StDType::I8,
            "U64" => StDType::U64,
            "U32" => StDType::U32,
            "U16" => StDType::U16,
            "U8" => StDType::U8,
            "BOOL" => StDType::Bool,
            _ => return None,
        })
    }

    /// The header spelling.
    pub fn name(self) -> &'static str {
        match self {
            StDType::F64 => "F64",
            StDType::F32 => "F32",
            StDType::F16 => "F16",
            StDType::BF16 => "BF16",
            StDType::F8E4M3 => "F8_E4M3",
            StDType::F8E5M2 => "F8_E5M2",
            StDType::I64 => "I64",
            StDType::I32 => "I32",
            StDType::I16 => "I16",
            StDType::I8 => "I8",
            StDType::U64 => "U64",
            StDType::U32 => "U32",
            StDType::U16 => "U16",
            StDType::U8 => "U8",
            StDType::Bool => "BOOL",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StDType::F64 | StDType::I64 | StDType::U64 => 8,
            StDType::F32 | StDType::I32 | StDType::U32 => 4,
            StDType::F16 | StDType::BF16 | StDType::I16 | StDType::U16 => 2,
            StDType::F8E4M3 | StDType::F8E5M2 | StDType::I8 | StDType::U8 | StDType::Bool => 1,
        }
    }

    /// Whether tensors of this type can be read as weights.
    pub fn is_float(self) -> bool {
        matches!(self, StDType::F64 | StDType::F32 | StDType::F16 | StDType::BF16 | StDType::F8E4M3 | StDType::F8E5M2)
    }
}

/// fp8 E4M3FN → f32. Exact: every value fits f32 (and f16).
fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0x0f) as i32;
    let man = (b & 0x07) as f32;
    if exp == 0x0f && (b & 0x07) == 0x07 {
        return f32::NAN;
    }
    let mag = if exp == 0 { man / 8.0 * 2f32.powi(-6) } else { (1.0 + man / 8.0) * 2f32.powi(exp - 7) };
    sign * mag
}

/// fp8 E5M2 is the top byte of an IEEE half.
fn e5m2_to_f16(b: u8) -> f16 {
    f16::from_bits((b as u16) << 8)
}

/// Decodes `bytes` (whole elements of `dtype`) to f32. `None` for non-float dtypes.
pub fn decode_f32(dtype: StDType, bytes: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        StDType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StDType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StDType::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StDType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        StDType::F8E4M3 => bytes.iter().map(|&b| e4m3_to_f32(b)).collect(),
        StDType::F8E5M2 => bytes.iter().map(|&b| e5m2_to_f16(b).to_f32()).collect(),
        _ => return None,
    };
    Some(out)
}

/// Decodes `bytes` to f16 (round to nearest even from wider types). `None` for non-float dtypes.
pub fn decode_f16(dtype: StDType, bytes: &[u8]) -> Option<Vec<f16>> {
    let out = match dtype {
        StDType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect(),
        StDType::F32 => {
            bytes.chunks_exact(4).map(|c| f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        // Through f32, which holds every bf16 exactly, so this is a single rounding.
        StDType::BF16 => {
            bytes.chunks_exact(2).map(|c| f16::from_f32(bf16::from_le_bytes([c[0], c[1]]).to_f32())).collect()
        }
        StDType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f16::from_f64(f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])))
            .collect(),
        StDType::F8E4M3 => bytes.iter().map(|&b| f16::from_f32(e4m3_to_f32(b))).collect(),
        StDType::F8E5M2 => bytes.iter().map(|&b| e5m2_to_f16(b)).collect(),
        _ => return None,
    };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_known_values() {
        // E4M3FN: 0x38 = 1.0, 0x7e = 448 (max), 0x01 = 2^-9 (min subnormal), 0x7f = NaN.
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0xb8), -1.0);
        assert!(e4m3_to_f32(0x7f).is_nan());
        // E5M2: 0x3c = 1.0, 0x7b = 57344 (max finite).
        assert_eq!(e5m2_to_f16(0x3c).to_f32(), 1.0);
        assert_eq!(e5m2_to_f16(0x7b).to_f32(), 57344.0);
    }
}
