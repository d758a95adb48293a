//! A `/init` that reads the time-stamp counter as its first instruction and then runs the
//! real init script: `execve("/bin/sh", ["/bin/sh", "/init.sh", "0x<TSC>"], envp)`, so the
//! script gets, as `$1`, the TSC at the moment userspace began. In Bochs with `clock:
//! sync=none` the TSC counts emulated instruction slots (see docs/performance.md), so this is
//! the end point "Linux reached `/init`" of the Linux boot benchmark, the same in a
//! partition and in a direct boot (a partition's TSC offset is 0 until it writes its TSC).
//!
//! busybox cannot read the TSC, and a C compiler would be one more thing the harness needs,
//! so the program is written here as bytes: a 64-bit static ELF with one loadable segment
//! (read, write, execute: the digits are written into it), assembled from this source
//! (GNU as, Intel syntax, linked at 0x400078):
//!
//! ```text
//! _start: rdtsc                        ; EDX:EAX = TSC
//!         shl rdx, 32
//!         or rax, rdx
//!         lea rdi, [rip + digits_end]
//!         lea rsi, [rip + hex]
//!         mov ecx, 16
//! 1:      mov edx, eax                 ; 16 hex digits, last first
//!         and edx, 15
//!         mov dl, [rsi + rdx]
//!         dec rdi
//!         mov [rdi], dl
//!         shr rax, 4
//!         dec ecx
//!         jnz 1b
//!         mov rcx, [rsp]               ; argc; envp = rsp + 8 * (argc + 2)
//!         lea rdx, [rsp + rcx * 8 + 16]
//!         lea rdi, [rip + sh]
//!         lea rax, [rip + script]
//!         lea rcx, [rip + arg]
//!         push 0                       ; argv = { sh, script, arg, NULL }
//!         push rcx
//!         push rax
//!         push rdi
//!         mov rsi, rsp
//!         mov eax, 59                  ; execve
//!         syscall
//!         mov edi, 127                 ; exit(127) if it failed: the kernel panics
//!         mov eax, 60
//!         syscall
//! hex:    .ascii "0123456789abcdef"
//! sh:     .asciz "/bin/sh"
//! script: .asciz "/init.sh"
//! arg:    .ascii "0x"
//! digits: .ascii "0000000000000000"
//! digits_end: .byte 0
//! ```

/// Where the script `/init` runs lives in the initramfs.
pub const SCRIPT_PATH: &str = "init.sh";

/// Virtual address of the segment (and of the file offset [`CODE_OFFSET`] in it).
const LOAD_ADDRESS: u64 = 0x40_0078;
/// File offset of the code: right after the ELF header (64 bytes) and the one program
/// header (56 bytes), so the segment's address and offset agree modulo the page size.
const CODE_OFFSET: u64 = 0x78;

/// The assembled program (see the module documentation).
const CODE: [u8; 158] = [
    0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x8d, 0x3d, 0x8d, 0x00, 0x00, 0x00, //
    0x48, 0x8d, 0x35, 0x53, 0x00, 0x00, 0x00, 0xb9, 0x10, 0x00, 0x00, 0x00, 0x89, 0xc2, 0x83, 0xe2, //
    0x0f, 0x8a, 0x14, 0x16, 0x48, 0xff, 0xcf, 0x88, 0x17, 0x48, 0xc1, 0xe8, 0x04, 0xff, 0xc9, 0x75, //
    0xeb, 0x48, 0x8b, 0x0c, 0x24, 0x48, 0x8d, 0x54, 0xcc, 0x10, 0x48, 0x8d, 0x3d, 0x39, 0x00, 0x00, //
    0x00, 0x48, 0x8d, 0x05, 0x3a, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x0d, 0x3c, 0x00, 0x00, 0x00, 0x6a, //
    0x00, 0x51, 0x50, 0x57, 0x48, 0x89, 0xe6, 0xb8, 0x3b, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x7f, //
    0x00, 0x00, 0x00, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, //
    0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x2f, 0x62, 0x69, 0x6e, 0x2f, 0x73, //
    0x68, 0x00, 0x2f, 0x69, 0x6e, 0x69, 0x74, 0x2e, 0x73, 0x68, 0x00, 0x30, 0x78, 0x30, 0x30, 0x30, //
    0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x00,
];

/// The `/init` executable: ELF header (System V ABI, x86-64 supplement), one `PT_LOAD`
/// program header, the code.
pub fn elf() -> Vec<u8> {
    let mut elf = Vec::with_capacity(CODE_OFFSET as usize + CODE.len());
    // e_ident: ELF, 64-bit, little endian, version 1, System V ABI.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&7u32.to_le_bytes()); // p_flags: R W X
    elf.extend_from_slice(&CODE_OFFSET.to_le_bytes()); // p_offset
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&(CODE.len() as u64).to_le_bytes()); // p_filesz
    elf.extend_from_slice(&(CODE.len() as u64).to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    debug_assert_eq!(elf.len() as u64, CODE_OFFSET);
    elf.extend_from_slice(&CODE);
    elf
}

/// The TSC `/init` passed to the script, from the script's `$1` as printed (`0x` and 16
/// hex digits).
pub fn parse_tsc(text: &str) -> Option<u64> {
    let digits = text.trim().strip_prefix("0x")?;
    (digits.len() == 16).then(|| u64::from_str_radix(digits, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_a_static_x86_64_executable_whose_entry_reads_the_tsc() {
        let elf = elf();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 62);
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        // The entry is the first code byte, and that is RDTSC (0F 31).
        assert_eq!(entry, LOAD_ADDRESS);
        assert_eq!(&elf[CODE_OFFSET as usize..][..2], &[0x0f, 0x31]);
        assert_eq!(LOAD_ADDRESS % 0x1000, CODE_OFFSET % 0x1000);
    }

    #[test]
    fn init_runs_the_script_with_the_shell() {
        let code = String::from_utf8_lossy(&CODE);
        assert!(code.contains("/bin/sh\0/init.sh\0"), "{code}");
        assert_eq!(format!("/{SCRIPT_PATH}"), "/init.sh");
        // The digits the program fills in end the segment: `0x`, 16 digits, NUL.
        assert!(CODE.ends_with(b"0x0000000000000000\0"));
    }

    #[test]
    fn the_printed_tsc_parses() {
        assert_eq!(parse_tsc("0x00000001a2b3c4d5\n"), Some(0x1_a2b3_c4d5));
        assert_eq!(parse_tsc("0x12"), None);
        assert_eq!(parse_tsc("12"), None);
    }
}
