//! callguard: a SIP security filter. The XDP program drops hostile packets at the NIC; this crate
//! is everything else: the rule model and its store, the kernel loader, the daemon, its control
//! API and the CLI.

pub mod accounts;
pub mod api;
pub mod border;
pub mod calls;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod events;
pub mod kernel;
pub mod net;
pub mod numbers;
pub mod service;
pub mod sig;
pub mod store;
pub mod web;
