//! Scanner signatures as the kernel evaluates them: one deterministic automaton per inspected
//! field, walked one byte at a time over the field's value.
//!
//! A signature is a literal matched case-insensitively as a prefix or substring of the
//! User-Agent, or of the display name or URI user of From and To. The daemon compiles every
//! signature in force into an automaton (a DFA) per field — the User-Agent value, the From value,
//! the To value — and writes it to [`crate::maps::SIG_DFA`] and [`crate::maps::SIG_HEAD`]. The
//! automaton itself knows where a display name or a URI user starts and ends, so the kernel needs
//! no From/To parser: it feeds the bytes of the value and stops at the first enforcing match or
//! at the dead state. Cost is one table read per byte walked; for prefix signatures the
//! automaton dies after a few bytes, whatever the number of signatures.
//!
//! Two banks: the daemon writes the bank not in use, then flips
//! [`crate::KernelConfig::sig_bank`] (one byte), so a packet walks the old automaton or the new
//! one, never a mix.

/// States per bank (state 0 is the dead state of every field).
pub const DFA_STATES: u32 = 4096;
/// Byte classes per state, the last one ([`CLASS_EOI`]) being "end of the value".
pub const DFA_CLASSES: usize = 64;
/// The class of the end of the value.
pub const CLASS_EOI: usize = DFA_CLASSES - 1;
/// Banks (see the module documentation).
pub const BANKS: u32 = 2;
/// Counter slots for signatures (slot 0 unused).
pub const SLOTS: u32 = 1024;
/// The dead state: no signature can match any more.
pub const STATE_DEAD: u16 = 0;

/// Inspected fields: index into [`DfaHead::start`].
pub mod field {
    /// The User-Agent value.
    pub const USER_AGENT: usize = 0;
    /// The From value.
    pub const FROM: usize = 1;
    /// The To value.
    pub const TO: usize = 2;
    /// Number of fields.
    pub const COUNT: usize = 3;
}

/// [`DfaRow::mode`]: no signature matches in this state.
pub const MODE_NONE: u8 = 0;
/// [`DfaRow::mode`]: a dry-run signature matched (count, do not drop).
pub const MODE_DRY_RUN: u8 = 1;
/// [`DfaRow::mode`]: an enforcing signature matched (count and drop).
pub const MODE_ENFORCE: u8 = 2;

/// One state of the automaton as the daemon compiles it; the kernel holds the rows of a bank in
/// a [`DfaBank`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfaRow {
    /// The next state by byte class ([`DfaHead::classes`]), and by [`CLASS_EOI`] at the end.
    pub next: [u16; DFA_CLASSES],
    /// Counter slot ([`crate::maps::SIG_STATS`]) of the signature that matched on entering this
    /// state (0: none).
    pub slot: u16,
    /// `MODE_*`: what the match means.
    pub mode: u8,
    /// Explicit padding (zero).
    pub _pad: u8,
}

impl Default for DfaRow {
    fn default() -> Self {
        Self { next: [STATE_DEAD; DFA_CLASSES], slot: 0, mode: MODE_NONE, _pad: 0 }
    }
}

const _: () = assert!(size_of::<DfaRow>() == 2 * DFA_CLASSES + 4);

/// One bank of automata as the kernel walks it: a value of [`crate::maps::SIG_DFA`] at index
/// `bank`. One value per bank rather than one per state, so that a transition is an index into
/// memory the program already holds (a shift and two adds) instead of a map lookup per byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfaBank {
    /// `next[state][class]`: as [`DfaRow::next`].
    pub next: [[u16; DFA_CLASSES]; DFA_STATES as usize],
    /// `slot[state]`: as [`DfaRow::slot`].
    pub slot: [u16; DFA_STATES as usize],
    /// `mode[state]`: as [`DfaRow::mode`].
    pub mode: [u8; DFA_STATES as usize],
}

const _: () = assert!(size_of::<DfaBank>() == DFA_STATES as usize * (2 * DFA_CLASSES + 3));

impl DfaBank {
    /// Writes `rows` (state 0 first) into this bank; the states after them become dead ends.
    pub fn fill(&mut self, rows: &[DfaRow]) {
        for (i, r) in
            rows.iter().chain(core::iter::repeat(&DfaRow::default())).take(DFA_STATES as usize).enumerate()
        {
            self.next[i] = r.next;
            self.slot[i] = r.slot;
            self.mode[i] = r.mode;
        }
    }

    /// The transition from `state` by `class`.
    #[inline(always)]
    pub fn next(&self, state: u16, class: usize) -> u16 {
        self.next[usize::from(state) & (DFA_STATES as usize - 1)][class & (DFA_CLASSES - 1)]
    }

    /// `(mode, slot)` of `state`.
    #[inline(always)]
    pub fn meta(&self, state: u16) -> (u8, u16) {
        let s = usize::from(state) & (DFA_STATES as usize - 1);
        (self.mode[s], self.slot[s])
    }
}

/// Per-bank header: a row of [`crate::maps::SIG_HEAD`] at index `bank`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfaHead {
    /// Byte class of each byte value (below [`CLASS_EOI`]).
    pub classes: [u8; 256],
    /// Start state by [`field`] index; [`STATE_DEAD`] when no signature looks at that field.
    pub start: [u16; field::COUNT],
    /// Explicit padding (zero).
    pub _pad: u16,
}

impl Default for DfaHead {
    fn default() -> Self {
        Self { classes: [0; 256], start: [STATE_DEAD; field::COUNT], _pad: 0 }
    }
}

const _: () = assert!(size_of::<DfaHead>() == 256 + 8);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, explicit padding; every bit pattern valid.
unsafe impl aya::Pod for DfaRow {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for DfaHead {}
#[cfg(feature = "user")]
// SAFETY: repr(C), arrays of integers whose sizes add up to a multiple of 8 (no padding, see the
// size assertion); every bit pattern valid.
unsafe impl aya::Pod for DfaBank {}

/// What a walk found: the enforcing match that stopped it, or the last dry-run match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hit {
    /// `MODE_*` of the match.
    pub mode: u8,
    /// Counter slot of the signature.
    pub slot: u16,
}

/// Walks the automaton from `start` over a value of `len` bytes (at most `max` are read),
/// `byte(k)` giving byte `k`, `next(state, class)` the transition and `meta(state)` the state's
/// `(mode, slot)` (the kernel reads a [`DfaBank`], userspace models [`DfaRow`]s). Stops at an
/// enforcing match or at the dead state; one transition is read per byte.
#[inline(always)]
pub fn walk(
    head: &DfaHead,
    start: u16,
    mut byte: impl FnMut(usize) -> u8,
    len: usize,
    max: usize,
    mut next: impl FnMut(u16, usize) -> u16,
    mut meta: impl FnMut(u16) -> (u8, u16),
) -> Hit {
    let mut hit = Hit::default();
    let mut state = start;
    let len = if len > max { max } else { len };
    // Bytes 0..len, then the end-of-value transition, then the mode of the state it leads to.
    for k in 0..max + 2 {
        if state == STATE_DEAD {
            break;
        }
        let (mode, slot) = meta(state);
        if mode == MODE_ENFORCE {
            return Hit { mode: MODE_ENFORCE, slot };
        }
        if mode == MODE_DRY_RUN {
            hit = Hit { mode: MODE_DRY_RUN, slot };
        }
        if k > len {
            break;
        }
        let class = if k < len { usize::from(head.classes[usize::from(byte(k))]) } else { CLASS_EOI };
        state = next(state, class & (DFA_CLASSES - 1));
    }
    hit
}
