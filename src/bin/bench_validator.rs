//! Benchmark program (not a test): runs the dataset validator on a file and prints one JSON
//! line in the format of scripts/bench/python_validator.py, so the three can be compared.
//!
//!     bench-validator FILE [--exact] [--normalize] [--hash] [--threads N]
//!
//! `--exact` counts tokens with the cl100k_base BPE (what the platform stores); without it the
//! approximate count (bytes / 4 per message) that the Python and Node validators compute.

use std::time::Instant;

use engine::datasets::validate::{Counting, Options, validate};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut options = Options {
        counting: Counting::Approximate,
        normalize: false,
        hash: false,
        ..Options::default()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact" => options.counting = Counting::Exact,
            "--normalize" => options.normalize = true,
            "--hash" => options.hash = true,
            "--threads" => {
                options.threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(options.threads);
            }
            other => path = Some(other.to_owned()),
        }
    }
    let Some(path) = path else {
        eprintln!("usage: bench-validator FILE [--exact] [--threads N]");
        std::process::exit(2);
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("cannot open {path}: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let report = match validate(file, &options, &mut std::io::sink()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("validation failed: {e}");
            std::process::exit(1);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let s = &report.statistics;
    let output = serde_json::json!({
        "impl": if options.counting == Counting::Exact { "rust-exact" } else { "rust" },
        "threads": options.threads,
        "normalize": options.normalize,
        "hash": options.hash,
        "bytes": s.bytes,
        "seconds": seconds,
        "mb_per_s": s.bytes as f64 / 1e6 / seconds,
        "examples": s.examples,
        "messages": s.messages,
        "total_tokens": s.total_tokens,
        "assistant_tokens": s.assistant_tokens,
        "min": s.tokens.min,
        "p50": s.tokens.p50,
        "p95": s.tokens.p95,
        "max": s.tokens.max,
        "over_2048": s.over_max_seq_len,
        "errors": report.error_counts,
    });
    println!("{output}");
}
