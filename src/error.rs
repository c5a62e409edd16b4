//! The library's one error type. Every fallible public function returns [`Result`]; binaries wrap it
//! with `anyhow`. Variants name the operation and the values involved so a user can act on them.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// No usable GPU adapter: the message says how to get one.
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),

    /// The device could not be created or was lost.
    #[error("GPU device error: {0}")]
    Device(String),

    /// A validation or out-of-memory error reported by wgpu.
    #[error("GPU error in {op}: {msg}")]
    Gpu { op: &'static str, msg: String },

    /// Operand shapes do not fit the operation.
    #[error("{op}: shape mismatch: {msg}")]
    Shape { op: &'static str, msg: String },

    /// Operand dtypes do not fit the operation (or the adapter lacks the dtype).
    #[error("{op}: dtype error: {msg}")]
    DType { op: &'static str, msg: String },

    /// A size above what the operation or the device supports.
    #[error("{op}: {what} = {requested} exceeds the limit {max}")]
    Limit { op: &'static str, what: String, requested: u64, max: u64 },

    /// A bad argument that is neither a shape nor a limit (e.g. zero heads, unknown name).
    #[error("{op}: invalid argument: {msg}")]
    Invalid { op: &'static str, msg: String },

    /// Reading a buffer back from the GPU failed.
    #[error("GPU readback failed: {0}")]
    Readback(String),

    /// Shader compilation/validation failed (a bug in a kernel, reported instead of panicking).
    #[error("shader {kernel}: {msg}")]
    Shader { kernel: String, msg: String },

    /// The caller asked the work to stop (e.g. an HTTP interrupt) and it stopped between steps.
    #[error("{0}: interrupted")]
    Cancelled(&'static str),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid { op, msg: msg.into() }
    }
    pub fn dtype(op: &'static str, msg: impl Into<String>) -> Self {
        Error::DType { op, msg: msg.into() }
    }
    pub fn limit(op: &'static str, what: impl Into<String>, requested: u64, max: u64) -> Self {
        Error::Limit { op, what: what.into(), requested, max }
    }
}
