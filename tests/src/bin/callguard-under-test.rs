//! The `callguard` program, built inside the test package so integration tests can start it
//! (cargo exposes only a package's own binaries to its tests).

fn main() -> std::process::ExitCode {
    callguard::cli::main()
}
