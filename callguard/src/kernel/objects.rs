//! The two builds of the XDP object the daemon carries, and which one this kernel loads (see
//! `callguard_common::loops`): the `may_goto` build where the kernel knows that instruction
//! (Linux 6.9 and newer), the callback build elsewhere. Both hold the same programs and maps.

use std::sync::OnceLock;

use super::syscall::{self, Insn};

/// A build of the XDP object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loops {
    /// Loops bounded by `may_goto`, no call per round: Linux 6.9 and newer.
    MayGoto,
    /// Loops bounded by `bpf_loop` callbacks and counted rounds: Linux 5.18 and newer.
    Callbacks,
}

impl Loops {
    /// The object of this build, as `build.rs` left it.
    pub fn object(self) -> &'static [u8] {
        match self {
            Self::MayGoto => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/callguard")),
            Self::Callbacks => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/callguard-callbacks")),
        }
    }

    /// The build for this kernel: [`Loops::MayGoto`] when it loads a program with a
    /// `may_goto`, else [`Loops::Callbacks`]. Probed once per process (needs the privileges
    /// loading needs anyway; without them the probe fails and the older build is chosen, whose
    /// own load then reports the missing privilege). A kernel that knows the instruction may
    /// still refuse the build's loops: `Kernel::load` then falls back to the other build.
    pub fn of_this_kernel() -> Self {
        static PROBED: OnceLock<Loops> = OnceLock::new();
        *PROBED.get_or_init(|| if may_goto_loads() { Self::MayGoto } else { Self::Callbacks })
    }

    /// How the README and the logs name it.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::MayGoto => "loops bounded by may_goto (Linux 6.9+)",
            Self::Callbacks => "loops bounded by bpf_loop callbacks (Linux 5.18+)",
        }
    }
}

/// An instruction on registers r0 only: opcode, offset, immediate.
const fn insn(code: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: 0, off, imm }
}

/// Whether the kernel loads an XDP program that uses `may_goto`:
/// `may_goto +1; r0 = XDP_PASS; r0 = XDP_PASS; exit`. A kernel that does not know the
/// instruction rejects it as an unknown opcode. Written by hand: aya has no probe for it.
fn may_goto_loads() -> bool {
    const BPF_PROG_TYPE_XDP: u32 = 6;
    let prog = [
        insn(0xe5, 1, 0), // BPF_JMP | BPF_JCOND, src BPF_MAY_GOTO: may_goto +1
        insn(0xb7, 0, 2), // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 2 (XDP_PASS)
        insn(0xb7, 0, 2),
        insn(0x95, 0, 0), // BPF_JMP | BPF_EXIT
    ];
    match syscall::prog_load(BPF_PROG_TYPE_XDP, &prog, c"GPL") {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%error, "the kernel refused a program with may_goto");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Loops;

    #[test]
    fn both_builds_are_embedded_unless_the_ebpf_build_was_skipped() {
        let skipped = Loops::MayGoto.object().is_empty();
        assert_eq!(Loops::Callbacks.object().is_empty(), skipped);
        if !skipped {
            assert_ne!(Loops::MayGoto.object(), Loops::Callbacks.object(), "the two builds are one");
        }
    }

    /// Each tail call of each program names its slot with a constant set just before it, and no
    /// jump lands on the call past that: the verifier then knows the slot, and the JIT makes
    /// the call a direct jump. A call reached with two slots (LLVM once merged the parse
    /// stage's two calls into one) is an indirect jump, through a retpoline on kernels that
    /// mitigate Spectre v2 that way: 10–15 ns on the inspected requests of the kernel bench,
    /// 3–14 on its clean request (see `handoff`).
    #[test]
    fn every_tail_call_names_one_slot() {
        const TAIL_CALL: u8 = 0x85; // BPF_JMP | BPF_CALL, imm 12: bpf_tail_call
        for loops in [Loops::MayGoto, Loops::Callbacks] {
            if loops.object().is_empty() {
                continue; // AYA_BUILD_SKIP: checked by the test above
            }
            let obj = aya_obj::Object::parse(loops.object()).expect("parsing the object");
            let mut calls = 0;
            for (name, prog) in &obj.programs {
                let insns = &obj.functions[&prog.function_key()].instructions;
                // Where each jump lands (BPF_JMP and BPF_JMP32 classes, but calls and exits;
                // `gotol`, JMP32 | JA, keeps its offset in the immediate).
                let targets: Vec<usize> = insns
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| {
                        matches!(i.code & 0x07, 0x05 | 0x06) && !matches!(i.code & 0xf0, 0x80 | 0x90)
                    })
                    .map(|(j, i)| {
                        let off = if i.code == 0x06 { i.imm as isize } else { isize::from(i.off) };
                        (j as isize + 1 + off) as usize
                    })
                    .collect();
                let sites = insns.iter().enumerate().filter(|(_, i)| i.code == TAIL_CALL && i.imm == 12);
                for k in sites.map(|(k, _)| k) {
                    calls += 1;
                    let slot = &insns[k - 1];
                    assert!(
                        matches!(slot.code, 0xb7 | 0xb4) && slot.dst_reg() == 3,
                        "{name} ({}): the tail call at {k} takes its slot from no constant",
                        loops.describe()
                    );
                    assert!(
                        !targets.contains(&k),
                        "{name} ({}): a jump lands on the tail call at {k}, past its slot ({} here): \
                         two paths share it",
                        loops.describe(),
                        slot.imm
                    );
                }
            }
            // The XDP program, the parse and judge stages, the bench's spoofer.
            assert_eq!(calls, 4, "{}", loops.describe());
        }
    }
}
