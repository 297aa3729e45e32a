use std::process::ExitCode;

fn main() -> ExitCode {
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
