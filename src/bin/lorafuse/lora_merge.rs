//! `lorafuse lora merge` (skeleton; being written).

use anyhow::{bail, Result};
use clap::Args;

use crate::Cli;

#[derive(Args, Clone, Debug)]
pub struct MergeArgs {}

pub fn run(_cli: &Cli, _a: &MergeArgs) -> Result<()> {
    bail!("lora merge is not implemented yet")
}
