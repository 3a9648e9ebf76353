//! The `keybound` command line tool; everything lives in `keybound::cli`.

fn main() -> std::process::ExitCode {
    keybound::cli::main()
}
