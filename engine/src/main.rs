//! `pbts`: the tracker binary. See `pbts --help`.

fn main() -> std::process::ExitCode {
    pbts_engine::cli::main()
}
