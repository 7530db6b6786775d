//! Records the target triple this crate is compiled for as `FLORET_HOST_TARGET`, which
//! `fab::HOST_TARGET` exposes: cargo tells build scripts the triple, but not the crate.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=FLORET_HOST_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
