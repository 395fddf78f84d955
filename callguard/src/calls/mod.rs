//! The slow path: number-level checks of the requests the kernel hands up.
//!
//! | what | module |
//! |---|---|
//! | SIP parser for handed-up requests (the daemon's reading of a message) | [`message`] |
//! | the number-level rules compiled for lookups, the facts of a call, the decision | [`policy`] |
//! | fraud thresholds: calls a minute, international an hour, parallel, sequential | [`fraud`] |
//! | the hand-up reader thread: decide, re-inject, answer 403, drop | [`slowpath`] |
//! | sources proven to receive what is sent to them (they acknowledged a 403) | [`proven`] |

pub mod fraud;
pub mod message;
pub mod policy;
pub mod proven;
pub mod slowpath;
