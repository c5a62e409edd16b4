//! `lorafuse lora bake`.

use anyhow::{bail, Result};
use clap::Args;

use crate::Cli;

#[derive(Args, Clone, Debug)]
pub struct BakeArgs {}

pub fn run(_cli: &Cli, _a: &BakeArgs) -> Result<()> {
    bail!("lora bake is not implemented yet")
}
