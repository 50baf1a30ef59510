//! The `lethe` binary: all behaviour lives in the library (`lethe::cli`).

/// mimalloc rather than the system allocator: a plan of a million leads
/// allocates and frees tens of millions of small keys and rows, and
/// glibc's malloc spent a fifth of that plan consolidating free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(lethe::cli::main());
}
