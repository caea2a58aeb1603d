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
//!
//! Also for the x86_64 musl binary: `link/hot-text.ld` gathers the code that
//! start-up, serving and fetching run into one block, an output section placed
//! before `.text` (README, "Memory"). The kernel maps code 64 KiB around each
//! page a process touches, and the 600 KiB that run were spread over 27 of the
//! 37 such blocks of the binary's code: 1.6 MiB of RSS. `make hot-text` writes
//! the script; with `HOT_TEXT_MAP=path` the linker also writes its map. (An
//! aws-lc FIPS build checks a hash over its module's code range at start-up,
//! which moving its sections would break; this build does not use FIPS.)

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HOT_TEXT_MAP");
    println!("cargo:rerun-if-env-changed=HOT_TEXT_OFF");
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("musl")
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
        let script = Path::new(&dir).join("link/hot-text.ld");
        // The script only moves sections: without it (HOT_TEXT_OFF set, to
        // measure the difference, or for a linker without GNU ld's `INSERT`)
        // the binary is the same code, laid out as the compiler emitted it.
        // Watched whether or not it is there, so that a script that appears
        // is linked with.
        println!("cargo:rerun-if-changed={}", script.display());
        if std::env::var_os("HOT_TEXT_OFF").is_none() {
            if script.is_file() {
                // -Xlinker passes the path as one argument: `-Wl,` would
                // split it at a comma.
                println!("cargo:rustc-link-arg-bins=-Xlinker");
                println!("cargo:rustc-link-arg-bins=--script={}", script.display());
            } else {
                println!(
                    "cargo:warning=no {}: code not laid out for RSS (README, \"Memory\")",
                    script.display()
                );
            }
        }
        if let Some(map) = std::env::var_os("HOT_TEXT_MAP") {
            println!("cargo:rustc-link-arg-bins=-Xlinker");
            println!(
                "cargo:rustc-link-arg-bins=-Map={}",
                Path::new(&map).display()
            );
        }
    }
}
