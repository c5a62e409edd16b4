//! One safetensors file: a validating header parser and lazy, memory-mapped tensor reads.
//!
//! Layout: 8 bytes little-endian header length `N`, `N` bytes of JSON, then the data section.
//! The parser is our own (not the `safetensors` crate) so every problem becomes a one-line
//! [`Error`] naming the file, the tensor and the numbers involved. Every header fact is checked
//! before any slice is taken: truncation, header length past the end, non-JSON, unknown dtypes,
//! shape products that overflow, shape × dtype disagreeing with the offsets, offsets past the data
//! section, and overlapping / gapped / trailing data (the tensors must tile the data section, as
//! the reference writer produces them).
//!
//! Memory: the file is memory-mapped; a read decodes one tensor into a fresh vector, so the host
//! never holds the weights twice.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use half::f16;
use memmap2::Mmap;
use serde_json::Value;

use super::dtype::{decode_f16, decode_f32, StDType};
use crate::{Error, Result};

/// Largest header accepted (the reference implementation's limit): a real header is a few MB at
/// most, and this bounds what a lying length field can make us read.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

const OP: &str = "safetensors";

/// What the header says about one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: StDType,
    pub shape: Vec<usize>,
    /// Byte range `[begin, end)` inside the data section (validated against it).
    pub data_offsets: (usize, usize),
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        // Validated at parse time not to overflow.
        self.shape.iter().product()
    }
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed safetensors file whose tensors are read on demand, by name.
pub struct SafeTensorsFile {
    label: String,
    bytes: Bytes,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

/// A tensor name as it appears in messages: quoted, control characters escaped, so a hostile
/// header cannot break the one-line error.
pub(crate) fn quoted(name: &str) -> String {
    let mut s: String = name.chars().take(200).flat_map(char::escape_debug).collect();
    if name.chars().count() > 200 {
        s.push_str("...");
    }
    format!("'{s}'")
}

fn bad(label: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, format!("{label}: {msg}"))
}

impl SafeTensorsFile {
    /// Opens and memory-maps `path`, validating the whole header.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensorsFile> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let with_path = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{label}: {e}"));
        let file = File::open(path).map_err(with_path)?;
        let len = file.metadata().map_err(with_path)?.len();
        if len < 8 {
            // Checked before mapping: an empty file cannot be mapped at all.
            return Err(bad(&label, format!("file is {len} bytes, too short for a safetensors header (at least 8)")));
        }
        // SAFETY: the map is read-only and private to this process. Another process truncating or
        // rewriting the file while it is open is outside what any loader can defend against; every
        // offset we slice with has been checked against the length seen here.
        let map = unsafe { Mmap::map(&file) }.map_err(with_path)?;
        Self::from_parts(label, Bytes::Mapped(map))
    }

    /// Parses an in-memory file; `label` names it in errors.
    pub fn from_bytes(label: impl Into<String>, bytes: Vec<u8>) -> Result<SafeTensorsFile> {
        Self::from_parts(label.into(), Bytes::Owned(bytes))
    }

    fn from_parts(label: String, bytes: Bytes) -> Result<SafeTensorsFile> {
        let (data_start, tensors, metadata) = parse_header(&label, bytes.as_slice())?;
        Ok(SafeTensorsFile { label, bytes, data_start, tensors, metadata })
    }

    /// The path (or label) used in messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Names with their header entries, sorted by name.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &TensorInfo)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The `__metadata__` map (non-string values are kept as their JSON text).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn entry(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| bad(&self.label, format!("no tensor {}", quoted(name))))
    }

    /// The raw little-endian bytes of a tensor.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.entry(name)?;
        let (b, e) = info.data_offsets;
        // Both bounds were validated against the data section by the parser.
        self.bytes
            .as_slice()
            .get(self.data_start + b..self.data_start + e)
            .ok_or_else(|| bad(&self.label, format!("tensor {} lies outside the file", quoted(name))))
    }

    fn float_bytes(&self, name: &str) -> Result<(StDType, &[u8])> {
        let info = self.entry(name)?;
        if !info.dtype.is_float() {
            return Err(Error::dtype(
                OP,
                format!("{}: tensor {} is {}, not a float weight", self.label, quoted(name), info.dtype.name()),
            ));
        }
        Ok((info.dtype, self.bytes(name)?))
    }

    /// Reads a float tensor (F64/F32/F16/BF16/F8) as f32, row-major.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (dtype, bytes) = self.float_bytes(name)?;
        let v = decode_f32(dtype, bytes).ok_or_else(|| bad(&self.label, format!("cannot decode {}", quoted(name))));
        self.release(bytes);
        v
    }

    /// Reads a float tensor as f16 (wider types round to nearest even), row-major.
    pub fn read_f16(&self, name: &str) -> Result<Vec<f16>> {
        let (dtype, bytes) = self.float_bytes(name)?;
        let v = decode_f16(dtype, bytes).ok_or_else(|| bad(&self.label, format!("cannot decode {}", quoted(name))));
        self.release(bytes);
        v
    }

    /// Unmaps the pages of a tensor just decoded from a mapped file. Its values now live in the
    /// decoded copy (and then on the GPU), but the touched pages of the mapping would otherwise
    /// stay resident in this process for as long as the file is open (the VAE keeps its reader for
    /// the f32 fallback): 2 GB of a checkpoint counted twice in the peak memory. The mapping is
    /// read-only and file-backed, so a later read simply faults the pages in again.
    fn release(&self, bytes: &[u8]) {
        if let Bytes::Mapped(m) = &self.bytes {
            let offset = bytes.as_ptr() as usize - m.as_ptr() as usize;
            #[cfg(unix)]
            // SAFETY: DONTNEED on a read-only, file-backed private mapping that was never written
            // only drops page-table entries; the contents are unchanged when read again.
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len()) };
            #[cfg(not(unix))]
            let _ = offset;
        }
    }
}

type Parsed = (usize, BTreeMap<String, TensorInfo>, BTreeMap<String, String>);

/// Validates the header of a complete file image and returns (data start, tensors, metadata).
pub fn parse_header(label: &str, bytes: &[u8]) -> Result<Parsed> {
    let Some(len_field) = bytes.get(..8) else {
        return Err(bad(
            label,
            format!("file is {} bytes, too short for a safetensors header (at least 8)", bytes.len()),
        ));
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(len_field);
    let n = u64::from_le_bytes(le);
    let after = (bytes.len() - 8) as u64;
    if n > after {
        return Err(bad(
            label,
            format!("header length {n} is larger than the file ({after} bytes follow the length field)"),
        ));
    }
    if n > MAX_HEADER_BYTES {
        return Err(bad(label, format!("header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")));
    }
    // n <= bytes.len() - 8, so these fit usize and the slice is in range.
    let data_start = 8 + n as usize;
    let header = &bytes[8..data_start];
    let data_len = bytes.len() - data_start;

    let text = std::str::from_utf8(header).map_err(|e| bad(label, format!("header is not UTF-8 ({e})")))?;
    let json: Value = serde_json::from_str(text).map_err(|e| bad(label, format!("header is not JSON ({e})")))?;
    let Value::Object(obj) = json else {
        return Err(bad(label, "header is not a JSON object"));
    };

    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            let Value::Object(m) = v else {
                return Err(bad(label, "__metadata__ is not a JSON object"));
            };
            for (k, v) in m {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                metadata.insert(k, s);
            }
            continue;
        }
        let info = parse_entry(label, &name, &v, data_len)?;
        tensors.insert(name, info);
    }
    check_tiling(label, &tensors, data_len)?;
    Ok((data_start, tensors, metadata))
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|x| usize::try_from(x).ok())
}

fn parse_entry(label: &str, name: &str, v: &Value, data_len: usize) -> Result<TensorInfo> {
    let t = quoted(name);
    let Value::Object(e) = v else {
        return Err(bad(label, format!("tensor {t}: header entry is not a JSON object")));
    };
    let dtype_s = e
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(label, format!("tensor {t}: missing or non-string \"dtype\"")))?;
    let dtype = StDType::parse(dtype_s)
        .ok_or_else(|| bad(label, format!("tensor {t} has unknown dtype {}", quoted(dtype_s))))?;
    let shape: Vec<usize> = e
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(as_usize).collect::<Option<Vec<_>>>())
        .ok_or_else(|| bad(label, format!("tensor {t}: \"shape\" must be a list of non-negative integers")))?;
    let offsets: Vec<usize> = e
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(as_usize).collect::<Option<Vec<_>>>())
        .filter(|o| o.len() == 2)
        .ok_or_else(|| {
            bad(label, format!("tensor {t}: \"data_offsets\" must be [begin, end], non-negative integers"))
        })?;
    let (begin, end) = (offsets[0], offsets[1]);

    let nbytes = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| {
            bad(label, format!("tensor {t}: shape {shape:?} of {} overflows the address space", dtype.name()))
        })?;
    if end < begin {
        return Err(bad(label, format!("tensor {t}: data_offsets [{begin}, {end}] end before they begin")));
    }
    if end - begin != nbytes {
        return Err(bad(
            label,
            format!(
                "tensor {t} is {} {shape:?} = {nbytes} bytes, but its data_offsets [{begin}, {end}] span {}",
                dtype.name(),
                end - begin
            ),
        ));
    }
    if end > data_len {
        return Err(bad(
            label,
            format!("tensor {t} claims {nbytes} bytes at offset {begin}, but the data section has {data_len}"),
        ));
    }
    Ok(TensorInfo { dtype, shape, data_offsets: (begin, end) })
}

/// The tensors must cover the data section exactly once: anything else is a corrupt or
/// truncated file (or a lying header pointing two names at the same bytes).
fn check_tiling(label: &str, tensors: &BTreeMap<String, TensorInfo>, data_len: usize) -> Result<()> {
    let mut spans: Vec<(usize, usize, &str)> =
        tensors.iter().map(|(k, i)| (i.data_offsets.0, i.data_offsets.1, k.as_str())).collect();
    spans.sort_unstable();
    let mut covered = 0usize;
    let mut prev: Option<(usize, usize, &str)> = None;
    for &(b, e, name) in &spans {
        if b < covered {
            let (pb, pe, pn) = prev.unwrap_or((0, 0, ""));
            return Err(bad(
                label,
                format!("tensors {} [{pb}, {pe}] and {} [{b}, {e}] overlap", quoted(pn), quoted(name)),
            ));
        }
        if b > covered {
            return Err(bad(
                label,
                format!(
                    "data offsets are not contiguous: {} bytes unused before tensor {} at offset {b}",
                    b - covered,
                    quoted(name)
                ),
            ));
        }
        covered = e;
        if e > b || prev.is_none() {
            prev = Some((b, e, name));
        }
    }
    if covered != data_len {
        return Err(bad(
            label,
            format!("the data section has {data_len} bytes but the tensors cover {covered} (trailing bytes)"),
        ));
    }
    Ok(())
}
