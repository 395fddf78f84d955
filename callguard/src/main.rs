//! The `callguard` command: the daemon (`callguard run`) and its control CLI.

fn main() -> std::process::ExitCode {
    callguard::cli::main()
}
