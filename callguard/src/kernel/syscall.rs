//! The BPF system calls callguard makes that aya 0.14 has no call for, written once: the load
//! of the `may_goto` probe (`objects`), the detach of a pinned link (`detach_link`), and an
//! array read whole in one call (`tables`).

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
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
/// `attr` is the attribute `cmd` reads (some commands write fields of it back), and every
/// pointer in it is valid across the call.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<i64> {
    // SAFETY: the caller's promise; the size passed is the attribute's.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<A>()) };
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
    let mut attr = ProgLoad {
        prog_type,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
    };
    // SAFETY: a BPF_PROG_LOAD attribute whose pointers (the instructions, the license) are
    // borrowed across the call.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr)? };
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
    let mut attr = ObjGet { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: a BPF_OBJ_GET attribute whose path is borrowed across the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr)? };
    // SAFETY: the descriptor the call opened, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Detaches a link from its hook at once (`BPF_LINK_DETACH`, Linux 5.9+), whoever still holds
/// it.
pub(super) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    // `union bpf_attr` for BPF_LINK_DETACH is the link's descriptor.
    let mut fd = link.as_raw_fd() as u32;
    // SAFETY: a BPF_LINK_DETACH attribute, no pointers.
    unsafe { bpf(BPF_LINK_DETACH, &mut fd)? };
    Ok(())
}

/// The first `len` values of the array map `map` (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+) in one
/// call, where a lookup per index is a call each (65,536 of them for the source cache).
pub(super) fn array_values<V: aya::Pod + Default>(map: BorrowedFd<'_>, len: u32) -> io::Result<Vec<V>> {
    /// `union bpf_attr` for the `BPF_MAP_*_BATCH` commands.
    #[repr(C)]
    struct Batch {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let mut keys = vec![0u32; len as usize];
    let mut values = vec![V::default(); len as usize];
    let mut next = 0u32;
    let mut attr = Batch {
        in_batch: 0,
        out_batch: std::ptr::from_mut(&mut next) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: len,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: a BPF_MAP_LOOKUP_BATCH attribute whose buffers hold `count` keys (an array's are
    // u32) and values (`V` is the map's value: `aya::Pod`, any bytes valid) and are borrowed
    // across the call, which writes `count` back.
    match unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) } {
        Ok(_) => {}
        // The whole map read: the kernel says there is nothing after it.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    values.truncate(attr.count as usize);
    Ok(values)
}
