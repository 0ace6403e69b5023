//! Compiles the small C++ shim (shim/platform_shim.cc) that fork() needs for V8's platform tasks and
//! Node's process exit handler. No V8 or Node headers are used; see the file's header.

fn main() {
    println!("cargo:rerun-if-changed=shim/platform_shim.cc");
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
