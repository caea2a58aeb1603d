//! Link options for the static musl binary (`make static`, the Dockerfile).
//!
//! A static-pie executable relocates itself at start (musl's `rcrt1.o`): one
//! 24-byte `.rela.dyn` entry per pointer in its data, 6,598 of them (158,352
//! bytes, mostly vtables and string tables of rustls and aws-lc). With
//! `-z pack-relative-relocs` the linker writes them as `.relr.dyn` bitmaps
//! instead (1,712 bytes): the binary went from 3,499,048 to 3,343,480 bytes,
//! still position-independent (ASLR unchanged). musl reads `DT_RELR` since
//! 1.2.4; Rust's musl target links its own self-contained musl (1.2.5 with
//! Rust 1.95). GNU ld before 2.38 ignores the option with a warning.
//!
//! Only for musl: on glibc the option would make the binary require glibc 2.36
//! (`GLIBC_ABI_DT_RELR`), and `make build` is meant for any host.
//!
//! Only for x86_64: Rust's `aarch64-unknown-linux-musl` target does not build
//! static-pie (its target spec lacks `static-position-independent-executables`;
//! rustc links it `-static -no-pie` with `crt1.o`), so that binary is loaded at
//! a fixed address and has no self-relocations to pack. Zig's linker, which
//! `make static-arm64` uses, refuses the option outright ("unsupported linker
//! extension flag").

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("musl")
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
