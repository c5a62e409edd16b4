//! Plain CPU versions of every kernel, accumulating in f64: the truth the GPU is tested against.
//! Written for clarity, not speed; each mirrors the launcher of the same name in `kernels/`.

pub mod attention;
pub mod attention_sg;
pub mod binary;
pub mod cfg_rescale;
pub mod concat;
pub mod conv2d;
pub mod conv_pack;
pub mod embedding;
pub mod fma_peak;
pub mod geglu;
pub mod group_norm;
pub mod group_norm_sg;
pub mod layer_norm;
pub mod lora_linear;
pub mod lora_merge;
pub mod matmul;
pub mod softmax;
pub mod timestep_embedding;
pub mod unary;
pub mod upsample;
