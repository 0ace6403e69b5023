//! Compiles the small C++ shim (shim/platform_shim.cc) that fork() needs for V8's platform tasks and
//! Node's process exit handler. No V8 or Node headers are used; see the file's header.

fn main() {
    println!("cargo:rerun-if-changed=shim/platform_shim.cc");
    // The addon is never unloaded. Node dlcloses an addon when the last environment that loaded
    // it ends, so one loaded only in Workers would be unmapped while our monitor thread, SIGALRM
    // handler and atexit hook still point into it. Linux: marked at link time; macOS has no such
    // flag, and the addon reopens itself with RTLD_NODELETE as it loads (src/lib.rs).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
    cc::Build::new()
        .cpp(true)
        .file("shim/platform_shim.cc")
        .flag_if_supported("-std=c++17")
        .flag("-fno-exceptions")
        .flag("-fno-rtti")
        .flag("-fvisibility=hidden")
        // V8's tasks are called through the task base class declared in the shim; never let the
        // compiler assume it knows all of that class's subclasses.
        .flag_if_supported("-fno-devirtualize")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        // Everything the shim uses is header-only: no libstdc++/libc++ dependency for the addon,
        // so the prebuilt binary loads wherever Node does.
        .cpp_link_stdlib(None)
        .compile("loop_helpers_shim");
}
