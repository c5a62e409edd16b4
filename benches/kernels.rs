//! `cargo bench`: the same table as `lorafuse bench kernels` (timestamp-query timings at SD1.5
//! shapes, each against the measured multiply-add peak). `QUICK=1` uses quarter-size shapes.

use lorafuse::bench::kernels::{run, BenchOptions};
use lorafuse::{Context, ContextOptions};

fn main() -> Result<(), lorafuse::Error> {
    let ctx = Context::new(&ContextOptions::default())?;
    let opts = BenchOptions { quick: std::env::var("QUICK").is_ok_and(|v| v == "1"), ..Default::default() };
    let report = run(&ctx, &opts, |done, total, name| eprintln!("[{done}/{total}] {name}"))?;
    print!("{}", report.table());
    Ok(())
}
