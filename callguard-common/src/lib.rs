#![no_std]
// `may_goto` is written as inline BPF assembly, which is unstable (the eBPF build is nightly).
#![cfg_attr(all(target_arch = "bpf", feature = "may-goto"), feature(asm_experimental_arch))]
//! The kernel's view of callguard's rules, shared by the XDP program (`callguard-ebpf`) and the
//! daemon (`callguard`).
//!
//! One concept, one home: every map name, map size, key and value layout, reason code and
//! policy flag the two sides must agree on is defined here and nowhere else. Map values are
//! `#[repr(C)]` with explicit padding and no `bool`/`Option`/Rust-enum fields, so their bytes
//! mean the same thing on both sides; a compile-time assertion pins the size of each.

#[cfg(test)]
extern crate std;

pub mod answer;
pub mod auth;
pub mod config;
pub mod events;
pub mod handup;
pub mod limits;
pub mod loops;
pub mod maps;
pub mod net;
pub mod sig;
pub mod sip;
pub mod stats;

pub use config::KernelConfig;
pub use net::{NetEntry, NetMatch};
pub use stats::{Action, Counter, Reason};
