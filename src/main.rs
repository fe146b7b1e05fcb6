#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    ddmq::cli::main()
}
