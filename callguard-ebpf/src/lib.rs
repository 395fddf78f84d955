#![no_std]
//! This library target exists only so that the `callguard` crate can list this package as a
//! build-dependency (cargo then rebuilds the embedded object when the program changes). The
//! program itself is the `callguard` binary target in `main.rs`, built by aya-build.
