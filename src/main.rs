fn main() -> std::process::ExitCode {
    ddmq::cli::main()
}
