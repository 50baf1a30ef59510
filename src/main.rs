//! The `lethe` binary: all behaviour lives in the library (`lethe::cli`).

fn main() {
    std::process::exit(lethe::cli::main());
}
