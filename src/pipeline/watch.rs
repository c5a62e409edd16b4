//! What a caller of [`super::txt2img::Pipeline::generate_watched`] sees and decides while
//! sampling runs: cancellation, a look at the latents (live previews), and whether a cancelled
//! image is still decoded from where it got to (A1111's interrupt).

/// What a caller of [`super::txt2img::Pipeline::generate_watched`] sees and decides while sampling runs.
pub struct Watch<'a> {
    /// Asked before each image and each step.
    pub cancelled: &'a dyn Fn() -> bool,
    /// Asked after each finished step (the number of steps done): whether to read the latents
    /// back for `on_latents`. A readback costs the overlap of one step with the next.
    pub wants_latents: &'a mut dyn FnMut(usize) -> bool,
    /// The current image's latents [4, h, w] (model space, before the VAE scaling factor).
    pub on_latents: &'a mut dyn FnMut(&[f32], [usize; 3]),
    /// Asked on cancel: decode the latents reached instead of failing with
    /// [`crate::Error::Cancelled`] (a user's interrupt wants the image; a timeout does not).
    pub decode_on_cancel: &'a dyn Fn() -> bool,
}

impl Default for Watch<'_> {
    fn default() -> Self {
        // Leaked zero-sized closures: `'static` and free.
        Watch {
            cancelled: &|| false,
            wants_latents: Box::leak(Box::new(|_| false)),
            on_latents: Box::leak(Box::new(|_: &[f32], _| {})),
            decode_on_cancel: &|| false,
        }
    }
}
