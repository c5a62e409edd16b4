//! CLIP text side: BPE tokenizer, A1111 prompt syntax, and the text transformer.

pub mod prompt;
pub mod sdxl;
pub mod text_model;
pub mod tokenizer;
