//! Builds the one piece of the preload library that stable Rust cannot express: thread-local state with the
//! initial-exec TLS model. A `thread_local!` in a cdylib uses the general-dynamic model, whose first access on a
//! thread may go through `__tls_get_addr`, which can call `malloc` — i.e. recurse into our own hook.
fn main() {
    println!("cargo:rerun-if-changed=src/linux/thread.c");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        cc::Build::new()
            .file("src/linux/thread.c")
            .opt_level(2)
            .flag("-fvisibility=hidden")
            .compile("heapledger_thread");
    }
}
