//! The file hashes A1111 records and civitai indexes by: the checkpoint's `Model hash` and a
//! LoRA's `Lora hashes` entry. Placed under `weights` so both `lora` and `pipeline` can use it.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Hex SHA-256 of a file's bytes from `skip` on, streamed.
pub fn sha256_hex(path: &Path, skip: u64) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut (&mut f).take(skip), &mut std::io::sink())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let mut s = String::with_capacity(64);
    for b in h.finalize() {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

/// A1111's "Model hash": the first 10 hex digits of the checkpoint file's SHA-256.
pub fn model_hash(path: &Path) -> Result<String> {
    Ok(sha256_hex(path, 0)?[..10].to_string())
}

/// The hash civitai indexes a LoRA by (A1111's `Lora hashes`, sd-webui-additional-networks'
/// `sshs_model_hash`): SHA-256 of everything after the safetensors header, full hex.
pub fn lora_hash(path: &Path) -> Result<String> {
    const OP: &str = "lora";
    let mut f = std::fs::File::open(path).map_err(|e| Error::invalid(OP, format!("{}: {e}", path.display())))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| Error::invalid(OP, format!("{}: too short for a safetensors file", path.display())))?;
    let header = u64::from_le_bytes(len);
    sha256_hex(path, 8u64.saturating_add(header))
}
