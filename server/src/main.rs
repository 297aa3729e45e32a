use std::process::ExitCode;

fn main() -> ExitCode {
    fix_malloc_threshold();
    // .env is optional; real environment variables win over it.
    let _ = dotenvy::dotenv();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::cli::run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // The remote commands' exit codes say what happened (README "Command line").
            ExitCode::from(server::remote::exit_code(&e))
        }
    }
}

/// glibc raises its mmap threshold each time a large block is freed; after the first password
/// hash (argon2 allocates 19 MiB) those blocks come from the heap's arenas instead, one per
/// thread, and stay there. Fixed at glibc's initial 128 KiB, the server held 88 MB under the
/// load test instead of 545 MB (docs/PERFORMANCE.md, "Load test").
fn fix_malloc_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts the allocator's parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
