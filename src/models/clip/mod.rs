//! CLIP text side: BPE tokenizer and A1111 prompt syntax.

pub mod prompt;
pub mod tokenizer;
