//! Text-to-image orchestration.
//!
//! - [`request`]: what a generation is asked for, resolved once per request.
//! - [`txt2img`]: the loaded [`txt2img::Pipeline`] and its sampling loop.
//! - [`watch`]: what a caller sees and decides while sampling runs (cancel, previews).
//! - [`rng`]: the seeded noise streams A1111 and diffusers use.
//! - [`infotext`], [`image`]: the A1111 `parameters` text and the PNG that carries it.

pub mod fast_decode;
pub mod image;
pub mod infotext;
pub mod init;
pub mod request;
pub mod rng;
pub mod txt2img;
pub mod watch;
