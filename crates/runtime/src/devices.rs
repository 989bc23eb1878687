//! Device rules on cgroup v2, which has no devices controller: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup, as runc and crun do.
//! The kernel runs it on every open and mknod of a device node by a process of the cgroup.
//!
//! The program checks the rules from the last to the first and answers with the first that
//! matches, so a later rule overrides an earlier one, as writing them in order to v1's
//! `devices.allow`/`devices.deny` does; nothing matching means deny.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use flotilla_oci::DeviceRule;

use crate::sys::{self, err_at};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

// Opcodes: class | size/op | source.
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }:
// access_type = access << 16 | type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

// Registers: r1 = ctx on entry; r2 type, r3 access, r4 major, r5 minor, r6 scratch.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |m, c| {
        m | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// The program for `rules`.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        // The checks, each jumping past the block when it fails; the jump offsets are filled
        // in once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        let mut jumps: Vec<usize> = Vec::new();
        match rule.kind.as_deref() {
            Some("c") => {
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, R2, 0, 0, DEV_CHAR));
            }
            Some("b") => {
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, R2, 0, 0, DEV_BLOCK));
            }
            _ => {}
        }
        let allowed = access_bits(&rule.access);
        if allowed != ACC_READ | ACC_WRITE | ACC_MKNOD {
            // Matches when the request asks for nothing outside `allowed`.
            block.push(insn(ALU32_MOV_X, R6, R3, 0, 0));
            block.push(insn(ALU32_AND_K, R6, 0, 0, !allowed & 7));
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, R6, 0, 0, 0));
        }
        if let Some(major) = rule.major.filter(|m| *m >= 0) {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, R4, 0, 0, major as i32));
        }
        if let Some(minor) = rule.minor.filter(|m| *m >= 0) {
            jumps.push(block.len());
            block.push(insn(JMP_JNE_K, R5, 0, 0, minor as i32));
        }
        block.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        let unconditional = jumps.is_empty();
        for j in jumps {
            // Relative to the next instruction: land on the first one after the block.
            block[j].off = (len - j - 1) as i16;
        }
        p.extend(block);
        if unconditional {
            // It matches everything: earlier rules can never apply, and the verifier refuses
            // unreachable instructions.
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    /// The rest of `union bpf_attr` for this command, zeroed.
    rest: [u8; 96],
}

#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    rest: [u8; 32],
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix for `cmd`, valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, std::mem::size_of::<T>()) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory `cgroup`. The
/// attachment lives as long as the cgroup, not as long as this process.
pub fn attach(cgroup: &Path, rules: &[DeviceRule]) -> io::Result<()> {
    let insns = program(rules);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 4096];
    let load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        rest: [0; 96],
    };
    let fd = bpf(BPF_PROG_LOAD, &load).map_err(|e| {
        let verifier = String::from_utf8_lossy(&log);
        io::Error::new(e.kind(), format!("loading the device filter: {e}: {}", verifier.trim_end_matches('\0').trim()))
    })?;
    // SAFETY: a fresh descriptor from BPF_PROG_LOAD.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let dir = sys::open(cgroup, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY)?;
    let attach = ProgAttach {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        rest: [0; 32],
    };
    bpf(BPF_PROG_ATTACH, &attach).map(drop).map_err(|e| err_at("attaching the device filter to", cgroup, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, kind: Option<&str>, major: Option<i64>, minor: Option<i64>, access: &str) -> DeviceRule {
        DeviceRule { allow, kind: kind.map(str::to_string), major, minor, access: access.to_string() }
    }

    #[test]
    fn later_rules_are_checked_first_and_jumps_land_after_their_block() {
        let p = program(&[rule(false, None, None, None, "rwm"), rule(true, Some("c"), Some(1), Some(3), "rwm")]);
        // Prologue 6, the null rule (type, major, minor, r0, exit) 5, deny-all (r0, exit) 2,
        // and no default after a rule that matches everything.
        assert_eq!(p.len(), 13);
        assert_eq!(p[6], insn(JMP_JNE_K, R2, 0, 4, DEV_CHAR));
        assert_eq!(p[7], insn(JMP_JNE_K, R4, 0, 3, 1));
        assert_eq!(p[8], insn(JMP_JNE_K, R5, 0, 2, 3));
        assert_eq!(p[9], insn(ALU64_MOV_K, R0, 0, 0, 1));
        assert_eq!(p[11], insn(ALU64_MOV_K, R0, 0, 0, 0));
    }

    #[test]
    fn partial_access_checks_the_requested_bits() {
        let p = program(&[rule(true, Some("c"), None, None, "m")]);
        // type check, mov, and (everything but m), jne, r0, exit.
        assert_eq!(p[7], insn(ALU32_MOV_X, R6, R3, 0, 0));
        assert_eq!(p[8], insn(ALU32_AND_K, R6, 0, 0, ACC_READ | ACC_WRITE));
        assert_eq!(p[9].off, 2);
    }
}
