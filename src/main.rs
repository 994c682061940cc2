/// jemalloc instead of glibc's allocator on Linux. Each argon2id check of a key or token
/// allocates and frees a 19 MiB buffer; glibc then raises its mmap and trim thresholds to
/// that size, and its per-thread arenas keep freed memory: under a 15-minute load the
/// gateway held ~285 MiB of heap (RssAnon) for 40-45 MiB live. jemalloc returns freed
/// pages to the system after a few seconds (BENCHMARKS.md, "where the memory goes").
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    consentry::cli::main()
}
