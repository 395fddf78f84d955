//! Builds the XDP program (`callguard-ebpf`) for bpfel-unknown-none with aya-build and leaves the
//! object in `$OUT_DIR/callguard`, where `src/ebpf.rs` embeds it.
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (clippy of the userspace crates on a machine without
//! bpf-linker); an empty object is written then, and loading it fails with a clear error.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if skip {
        std::fs::write(std::path::Path::new(&out_dir).join("callguard"), [])?;
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
    aya_build::build_ebpf(
        [Package { name: ebpf.name.as_str(), root_dir, ..Default::default() }],
        Toolchain::default(),
    )
}
