//! `lorafuse lora compare` (skeleton; being written).

use anyhow::{bail, Result};
use clap::Args;

use crate::Cli;

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {}

pub fn run(_cli: &Cli, _a: &CompareArgs) -> Result<()> {
    bail!("lora compare is not implemented yet")
}
