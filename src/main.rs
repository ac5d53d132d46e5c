//! The `latchkey` binary: parse the command line, run, exit with a code
//! that says how it went (0 ok, 1 failed, 2 bad usage, 3 audit check failed).

use clap::Parser;
use latchkey::cli::{Cli, run};

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("latchkey: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("latchkey: {}", e.message);
        std::process::exit(e.code);
    }
}
