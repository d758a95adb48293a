//! Decoding the one instruction that touched an emulated MMIO page (the xAPIC page), so the
//! hypervisor can perform it and move RIP past it.
//!
//! The second-level page fault gives the guest-physical address; what it does not give is
//! the direction, the register or immediate and the instruction's length (VT-x leaves the
//! instruction length undefined for EPT violations, SVM's decode assists are optional).
//! Only the forms compilers emit for a 32-bit MMIO register are taken (Intel SDM Vol. 2,
//! MOV):
//!
//! | bytes | form |
//! |---|---|
//! | `89 /r` | `mov r/m32, r32` (store) |
//! | `8B /r` | `mov r32, r/m32` (load) |
//! | `C7 /0 id` | `mov r/m32, imm32` (store) |
//! | `A1` / `A3` | `mov eax, moffs32` / `mov moffs32, eax` |
//!
//! with any ModRM/SIB/displacement addressing form (SDM Vol. 2 2.1.5, Tables 2-1 to 2-3;
//! 16-bit addressing, Table 2-1, for 16-bit code or a 0x67 prefix), segment-override
//! prefixes, the operand- and address-size prefixes where they keep a 32-bit operand, and
//! a REX prefix (REX.R selects r8-r15; REX.W, a 64-bit access, is refused). Everything else
//! (byte and word accesses, string moves, read-modify-write instructions, LOCK/REP) is
//! [`DecodeError::Unsupported`]: the caller faults the partition and logs the bytes.
//!
//! Written here rather than taken from a crate: the well-kept decoders (iced-x86,
//! yaxpeax-x86) either need `alloc` or decode the whole instruction set, where this needs
//! four opcodes, a length and no heap in the hypervisor.

/// The code size the guest executes in (CS.D / CS.L, SDM Vol. 3 3.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSize {
    /// Real mode or a 16-bit code segment.
    Bits16,
    /// A 32-bit code segment (protected or compatibility mode).
    Bits32,
    /// 64-bit mode.
    Bits64,
}

/// Where a store's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A general register, by its encoding (0 = RAX ... 4 = RSP ... 15 = R15).
    Register(u8),
    /// An immediate operand.
    Immediate(u32),
}

/// What a decoded instruction does with its 32-bit memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads it into a general register (by encoding; 32-bit writes zero-extend in 64-bit mode).
    Load {
        /// Destination register encoding.
        register: u8,
    },
    /// Writes it.
    Store {
        /// The value written.
        source: Source,
    },
}

/// A decoded MMIO instruction: its 32-bit access and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioInstruction {
    /// The access.
    pub access: Access,
    /// Bytes accessed: 4 for every form decoded so far.
    pub size: u8,
    /// Length in bytes (RIP advances by this much).
    pub length: u8,
}

/// Why the instruction is not emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does (or it exceeds 15 bytes).
    Truncated,
    /// An instruction or form outside the supported MOVs (the opcode byte).
    Unsupported {
        /// The opcode byte (after the prefixes).
        opcode: u8,
    },
}

const MAX_LENGTH: usize = 15;

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let limit = self.bytes.len().min(MAX_LENGTH);
        let b = *self.bytes[..limit].get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        for _ in 0..n {
            self.byte()?;
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            value |= u32::from(self.byte()?) << (8 * i);
        }
        Ok(value)
    }
}

/// Decodes the instruction at the start of `bytes` (the guest's bytes at RIP; pass up to 15).
pub fn decode(bytes: &[u8], code: CodeSize) -> Result<MmioInstruction, DecodeError> {
    let mut c = Cursor { bytes, at: 0 };
    let mut operand_prefix = false;
    let mut address_prefix = false;
    let mut rex = 0u8;
    let opcode = loop {
        let b = c.byte()?;
        match b {
            // Segment overrides: the address is known from the fault already.
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => rex = 0,
            0x66 => {
                operand_prefix = true;
                rex = 0;
            }
            0x67 => {
                address_prefix = true;
                rex = 0;
            }
            // REX counts only directly before the opcode (SDM Vol. 2 2.2.1).
            0x40..=0x4f if code == CodeSize::Bits64 => rex = b,
            _ => break b,
        }
    };
    const REX_W: u8 = 1 << 3;
    const REX_R: u8 = 1 << 2;
    let operand_32 = match code {
        CodeSize::Bits16 => operand_prefix,
        CodeSize::Bits32 | CodeSize::Bits64 => !operand_prefix,
    };
    let address_bytes = match (code, address_prefix) {
        (CodeSize::Bits16, false) | (CodeSize::Bits32, true) => 2,
        (CodeSize::Bits16, true) | (CodeSize::Bits32, false) | (CodeSize::Bits64, true) => 4,
        (CodeSize::Bits64, false) => 8,
    };
    if !operand_32 || rex & REX_W != 0 {
        return Err(DecodeError::Unsupported { opcode });
    }
    let access = match opcode {
        0x89 | 0x8b | 0xc7 => {
            let modrm = c.byte()?;
            let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
            if md == 0b11 || (opcode == 0xc7 && reg != 0) {
                return Err(DecodeError::Unsupported { opcode });
            }
            skip_address(&mut c, md, rm, address_bytes == 2)?;
            let register = reg | if rex & REX_R != 0 { 8 } else { 0 };
            match opcode {
                0x89 => Access::Store { source: Source::Register(register) },
                0x8b => Access::Load { register },
                _ => Access::Store { source: Source::Immediate(c.u32()?) },
            }
        }
        0xa1 | 0xa3 => {
            c.skip(address_bytes)?;
            if opcode == 0xa1 { Access::Load { register: 0 } } else { Access::Store { source: Source::Register(0) } }
        }
        _ => return Err(DecodeError::Unsupported { opcode }),
    };
    Ok(MmioInstruction { access, size: 4, length: c.at as u8 })
}

/// Skips the SIB byte and displacement of a memory ModRM operand.
fn skip_address(c: &mut Cursor<'_>, md: u8, rm: u8, addressing_16: bool) -> Result<(), DecodeError> {
    if addressing_16 {
        // SDM Vol. 2 Table 2-1: [disp16] for mod 00 r/m 110, else disp8/disp16 by mod.
        let disp = match (md, rm) {
            (0, 6) => 2,
            (0, _) => 0,
            (1, _) => 1,
            _ => 2,
        };
        return c.skip(disp);
    }
    // Table 2-2: r/m 100 means a SIB byte follows; mod 00 r/m 101 is disp32 (RIP-relative
    // in 64-bit mode); Table 2-3: a SIB base of 101 with mod 00 is disp32 without a base.
    let mut disp = match md {
        0 if rm == 5 => 4,
        0 => 0,
        1 => 1,
        _ => 4,
    };
    if rm == 4 {
        let sib = c.byte()?;
        if md == 0 && sib & 7 == 5 {
            disp = 4;
        }
    }
    c.skip(disp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(register: u8, length: u8) -> Result<MmioInstruction, DecodeError> {
        Ok(MmioInstruction { access: Access::Load { register }, size: 4, length })
    }

    fn store(register: u8, length: u8) -> Result<MmioInstruction, DecodeError> {
        Ok(MmioInstruction { access: Access::Store { source: Source::Register(register) }, size: 4, length })
    }

    #[test]
    fn register_indirect_loads_and_stores() {
        // mov eax, [rdi]; mov [rdi], ecx; mov r9d, [rax]; mov [r8], r10d
        assert_eq!(decode(&[0x8b, 0x07], CodeSize::Bits64), load(0, 2));
        assert_eq!(decode(&[0x89, 0x0f], CodeSize::Bits64), store(1, 2));
        assert_eq!(decode(&[0x44, 0x8b, 0x08], CodeSize::Bits64), load(9, 3));
        assert_eq!(decode(&[0x45, 0x89, 0x10], CodeSize::Bits64), store(10, 3));
    }

    #[test]
    fn displacement_and_sib_forms() {
        // mov eax, [rdi+0x20]; mov [rdi+0x300], edx; mov eax, [rsp+8]; mov ecx, [rax+rbx*4+0x10]
        assert_eq!(decode(&[0x8b, 0x47, 0x20], CodeSize::Bits64), load(0, 3));
        assert_eq!(decode(&[0x89, 0x97, 0x00, 0x03, 0, 0], CodeSize::Bits64), store(2, 6));
        assert_eq!(decode(&[0x8b, 0x44, 0x24, 0x08], CodeSize::Bits64), load(0, 4));
        assert_eq!(decode(&[0x8b, 0x4c, 0x98, 0x10], CodeSize::Bits64), load(1, 4));
        // mov eax, [rip+disp32]; mov eax, [disp32] (SIB, no base); mov eax, [rbp+rcx*1]
        assert_eq!(decode(&[0x8b, 0x05, 1, 2, 3, 4], CodeSize::Bits64), load(0, 6));
        assert_eq!(decode(&[0x8b, 0x04, 0x25, 0x20, 0, 0xe0, 0xfe], CodeSize::Bits64), load(0, 7));
        assert_eq!(decode(&[0x8b, 0x44, 0x0d, 0x00], CodeSize::Bits64), load(0, 4));
        // 32-bit code: mov eax, [0xfee00020]; mov [ebx+0x380], esi
        assert_eq!(decode(&[0x8b, 0x05, 0x20, 0, 0xe0, 0xfe], CodeSize::Bits32), load(0, 6));
        assert_eq!(decode(&[0x89, 0xb3, 0x80, 0x03, 0, 0], CodeSize::Bits32), store(6, 6));
    }

    #[test]
    fn immediate_and_moffs_forms() {
        // mov dword [rax+0xb0], 0
        assert_eq!(
            decode(&[0xc7, 0x80, 0xb0, 0, 0, 0, 0, 0, 0, 0], CodeSize::Bits64),
            Ok(MmioInstruction { access: Access::Store { source: Source::Immediate(0) }, size: 4, length: 10 })
        );
        // mov dword [rdi], 0x12345678 with a REX.B prefix
        assert_eq!(
            decode(&[0x41, 0xc7, 0x07, 0x78, 0x56, 0x34, 0x12], CodeSize::Bits64),
            Ok(MmioInstruction {
                access: Access::Store { source: Source::Immediate(0x1234_5678) },
                size: 4,
                length: 7
            })
        );
        // mov eax, [moffs32] in 32-bit code; mov [moffs64], eax in 64-bit code
        assert_eq!(decode(&[0xa1, 0x20, 0, 0xe0, 0xfe], CodeSize::Bits32), load(0, 5));
        assert_eq!(decode(&[0xa3, 0x20, 0, 0xe0, 0xfe, 0, 0, 0, 0], CodeSize::Bits64), store(0, 9));
    }

    #[test]
    fn prefixes() {
        // ds: mov eax, [rdi]; a REX before a legacy prefix is ignored; 0x67 in 64-bit mode
        assert_eq!(decode(&[0x3e, 0x8b, 0x07], CodeSize::Bits64), load(0, 3));
        assert_eq!(decode(&[0x44, 0x3e, 0x8b, 0x07], CodeSize::Bits64), load(0, 4));
        assert_eq!(decode(&[0x67, 0x8b, 0x07], CodeSize::Bits64), load(0, 3));
        // 16-bit code: 66 67 mov eax, [edi]; 66 mov eax, [bx+si+0x20]; 66 mov [0x1234], eax
        assert_eq!(decode(&[0x66, 0x67, 0x8b, 0x07], CodeSize::Bits16), load(0, 4));
        assert_eq!(decode(&[0x66, 0x8b, 0x40, 0x20], CodeSize::Bits16), load(0, 4));
        assert_eq!(decode(&[0x66, 0x89, 0x06, 0x34, 0x12], CodeSize::Bits16), store(0, 5));
        // In 32-bit code 0x4x are INC/DEC, not REX.
        assert_eq!(decode(&[0x41, 0x8b, 0x07], CodeSize::Bits32), Err(DecodeError::Unsupported { opcode: 0x41 }));
    }

    #[test]
    fn unsupported_forms_are_refused() {
        for (bytes, opcode) in [
            (&[0x48, 0x8b, 0x07][..], 0x8b),       // 64-bit load
            (&[0x66, 0x8b, 0x07][..], 0x8b),       // 16-bit load
            (&[0x8a, 0x07][..], 0x8a),             // byte load
            (&[0x88, 0x07][..], 0x88),             // byte store
            (&[0x8b, 0xc7][..], 0x8b),             // register to register
            (&[0xc7, 0x0f, 0, 0, 0, 0][..], 0xc7), // C7 /1
            (&[0xf3, 0xa5][..], 0xf3),             // rep movsd
            (&[0xf0, 0x01, 0x07][..], 0xf0),       // lock add
            (&[0x01, 0x07][..], 0x01),             // add [rdi], eax
            (&[0x16, 0x00][..], 0x16),             // not a MOV
        ] {
            assert_eq!(decode(bytes, CodeSize::Bits64), Err(DecodeError::Unsupported { opcode }), "{bytes:x?}");
        }
    }

    #[test]
    fn truncated_or_overlong_input() {
        assert_eq!(decode(&[], CodeSize::Bits64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x8b], CodeSize::Bits64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x8b, 0x80, 0, 0], CodeSize::Bits64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0xc7, 0x07, 1, 2, 3], CodeSize::Bits64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x3e; 20], CodeSize::Bits64), Err(DecodeError::Truncated));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..100_000 {
            let mut bytes = [0u8; 16];
            for b in bytes.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let len = (state >> 40) as usize % 17;
            for code in [CodeSize::Bits16, CodeSize::Bits32, CodeSize::Bits64] {
                if let Ok(i) = decode(&bytes[..len], code) {
                    assert!(usize::from(i.length) <= len.min(15));
                }
            }
        }
    }
}
