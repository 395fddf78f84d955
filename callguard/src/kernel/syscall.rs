//! The BPF system calls callguard makes that aya 0.14 has no call for, written once: the load
//! of the `may_goto` probe (`objects`) and the detach of a pinned link (`detach_link`).

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

/// A BPF instruction as the kernel reads it (`struct bpf_insn`).
#[repr(C)]
pub(super) struct Insn {
    /// The opcode.
    pub(super) code: u8,
    /// Destination register in the low nibble, source in the high one.
    pub(super) regs: u8,
    /// The jump offset or memory offset.
    pub(super) off: i16,
    /// The immediate.
    pub(super) imm: i32,
}

/// `bpf(cmd, attr, sizeof attr)`: the kernel reads the leading fields of `union bpf_attr` it is
/// given and takes the rest as zero. The descriptor or value the call returns.
///
/// # Safety
///
/// `attr` is the attribute `cmd` reads, and every pointer in it is valid across the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<i64> {
    // SAFETY: the caller's promise; the size passed is the attribute's.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_ref(attr), size_of::<A>()) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Loads a program of type `prog_type` (no verifier log): its descriptor, or the kernel's
/// refusal.
pub(super) fn prog_load(prog_type: u32, insns: &[Insn], license: &CStr) -> io::Result<OwnedFd> {
    /// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
    }
    let attr = ProgLoad {
        prog_type,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
    };
    // SAFETY: a BPF_PROG_LOAD attribute whose pointers (the instructions, the license) are
    // borrowed across the call.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &attr)? };
    // SAFETY: the descriptor the call opened, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Opens the object pinned at `path` on bpffs.
pub(super) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    /// `union bpf_attr` for `BPF_OBJ_GET`: the path, then `bpf_fd` and `file_flags` (zero).
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let path = CString::new(path.as_os_str().as_encoded_bytes())?;
    let attr = ObjGet { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: a BPF_OBJ_GET attribute whose path is borrowed across the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &attr)? };
    // SAFETY: the descriptor the call opened, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Detaches a link from its hook at once (`BPF_LINK_DETACH`, Linux 5.9+), whoever still holds
/// it.
pub(super) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    // `union bpf_attr` for BPF_LINK_DETACH is the link's descriptor.
    let fd = link.as_raw_fd() as u32;
    // SAFETY: a BPF_LINK_DETACH attribute, no pointers.
    unsafe { bpf(BPF_LINK_DETACH, &fd)? };
    Ok(())
}
