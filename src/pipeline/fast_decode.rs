//! TAESD / TAESDXL as the pipeline uses it: loading a published file for the model's family,
//! and decoding latents to pixels for previews and `FinalDecoder::Taesd`.
