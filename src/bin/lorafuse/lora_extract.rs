//! `lorafuse lora extract` and `lorafuse lora resize`.

use anyhow::{bail, Result};
use clap::Args;

use crate::Cli;

#[derive(Args, Clone, Debug)]
pub struct ExtractArgs {}

#[derive(Args, Clone, Debug)]
pub struct ResizeArgs {}

pub fn run_extract(_cli: &Cli, _a: &ExtractArgs) -> Result<()> {
    bail!("lora extract is not implemented yet")
}

pub fn run_resize(_cli: &Cli, _a: &ResizeArgs) -> Result<()> {
    bail!("lora resize is not implemented yet")
}
