//! Builds the XDP program (`callguard-ebpf`) for bpfel-unknown-none with aya-build, twice: with
//! its `may-goto` feature for kernels 6.9 and newer (`$OUT_DIR/callguard`), and without it for
//! older ones (`$OUT_DIR/callguard-callbacks`); `src/kernel/objects.rs` embeds both (see
//! `callguard_common::loops`).
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (clippy of the userspace crates on a machine without
//! bpf-linker); empty objects are written then, and loading one fails with a clear error.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out = std::path::Path::new(&out_dir);
    if skip {
        std::fs::write(out.join("callguard"), [])?;
        std::fs::write(out.join("callguard-callbacks"), [])?;
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "callguard-ebpf")
        .ok_or_else(|| anyhow!("callguard-ebpf package not found"))?;
    let root_dir =
        ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent of {}", ebpf.manifest_path))?.as_str();
    // aya-build leaves each build's binary at `$OUT_DIR/callguard`: the one for older kernels
    // is moved aside before the other is built.
    let build = |features: &[&str]| {
        aya_build::build_ebpf(
            [Package { name: ebpf.name.as_str(), root_dir, features, ..Default::default() }],
            Toolchain::default(),
        )
    };
    build(&[])?;
    std::fs::rename(out.join("callguard"), out.join("callguard-callbacks"))
        .context("keeping the build for kernels before 6.9")?;
    build(&["may-goto"])
}
