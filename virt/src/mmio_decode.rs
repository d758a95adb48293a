//! Decoding the one instruction that touched an emulated MMIO page (the xAPIC page, the PCI
//! ECAM window), so the hypervisor can perform it and move RIP past it.
//!
//! The second-level page fault gives the guest-physical address; what it does not give is
//! the direction, the register or immediate, the access size and the instruction's length
//! (VT-x leaves the instruction length undefined for EPT violations, SVM's decode assists
//! are optional). Only the forms compilers emit for an 8-, 16- or 32-bit device register
//! are taken (Intel SDM Vol. 2, MOV and MOVZX) — the 32-bit ones for the xAPIC, all of them
//! for configuration space (Linux's `mmio_config_readb/readw/writeb/writew` are
//! `8A`/`66 8B`/`88`/`66 89`):
//!
//! | bytes | form | size |
//! |---|---|---|
//! | `89 /r` | `mov r/m32, r32` (store); with `66`: `mov r/m16, r16` | 4; 2 |
//! | `8B /r` | `mov r32, r/m32` (load); with `66`: `mov r16, r/m16` | 4; 2 |
//! | `88 /r` | `mov r/m8, r8` (store) | 1 |
//! | `8A /r` | `mov r8, r/m8` (load) | 1 |
//! | `C7 /0 id` | `mov r/m32, imm32` (store); with `66` and `iw`: `mov r/m16, imm16` | 4; 2 |
//! | `C6 /0 ib` | `mov r/m8, imm8` (store) | 1 |
//! | `0F B6 /r`, `0F B7 /r` | `movzx r32, r/m8`, `movzx r32, r/m16` (load, zero-extended) | 1, 2 |
//! | `A1` / `A3` | `mov eax, moffs32` / `mov moffs32, eax` (with `66`: AX) | 4; 2 |
//!
//! with any ModRM/SIB/displacement addressing form (SDM Vol. 2 2.1.5, Tables 2-1 to 2-3;
//! 16-bit addressing, Table 2-1, for 16-bit code or a 0x67 prefix), segment-override
//! prefixes, the operand- and address-size prefixes, and a REX prefix (REX.R selects
//! r8-r15; REX.W, a 64-bit access, is refused except on MOVZX, where it only widens the
//! destination). The byte registers AH, CH, DH and BH (encodings 4-7 without REX) are
//! refused. Everything else (64-bit accesses, string moves, read-modify-write instructions,
//! LOCK/REP) is [`DecodeError::Unsupported`]: the caller faults the partition and logs the
//! bytes.
//!
//! Written here rather than taken from a crate: the well-kept decoders (iced-x86,
//! yaxpeax-x86) either need `alloc` or decode the whole instruction set, where this needs
//! a few opcodes, a length and no heap in the hypervisor.

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

/// What a decoded instruction does with its memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads it into a general register (by encoding; 32-bit writes zero-extend in 64-bit mode).
    Load {
        /// Destination register encoding.
        register: u8,
        /// The whole 64-bit register takes the zero-extended value (32-bit MOV, MOVZX);
        /// otherwise (8- and 16-bit MOV) the register's other bits stay.
        zero_extend: bool,
    },
    /// Writes it.
    Store {
        /// The value written.
        source: Source,
    },
}

/// A decoded MMIO instruction: its access, the access size and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioInstruction {
    /// The access.
    pub access: Access,
    /// Bytes accessed: 1, 2 or 4.
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
    // The operand size of a MOV: 16 bits with the operand-size prefix in 32/64-bit code
    // (without it in 16-bit code), 64 with REX.W (SDM Vol. 2 2.2.1.2, Table 2-4).
    let operand_16 = match code {
        CodeSize::Bits16 => !operand_prefix,
        CodeSize::Bits32 | CodeSize::Bits64 => operand_prefix,
    };
    let rex_w = rex & REX_W != 0;
    let address_bytes = match (code, address_prefix) {
        (CodeSize::Bits16, false) | (CodeSize::Bits32, true) => 2,
        (CodeSize::Bits16, true) | (CodeSize::Bits32, false) | (CodeSize::Bits64, true) => 4,
        (CodeSize::Bits64, false) => 8,
    };
    let unsupported = Err(DecodeError::Unsupported { opcode });
    // (opcode, size, kind): which MOV this is and its access size.
    enum Kind {
        Store,
        Load { zero_extend: bool },
        Immediate,
    }
    let (opcode_byte, size, kind) = match opcode {
        0x88 => (opcode, 1, Kind::Store),
        0x8a => (opcode, 1, Kind::Load { zero_extend: false }),
        0xc6 => (opcode, 1, Kind::Immediate),
        0x89 | 0x8b | 0xc7 | 0xa1 | 0xa3 => {
            if rex_w {
                return unsupported;
            }
            let size = if operand_16 { 2 } else { 4 };
            let kind = match opcode {
                0x89 | 0xa3 => Kind::Store,
                0xc7 => Kind::Immediate,
                // A 32-bit load zero-extends into the 64-bit register; a 16-bit one keeps
                // the upper bits.
                _ => Kind::Load { zero_extend: size == 4 },
            };
            (opcode, size, kind)
        }
        // MOVZX r32, r/m8 / r/m16 (a REX.W form, to r64, zero-extends the same way; a
        // 16-bit destination is refused).
        0x0f => {
            let second = c.byte()?;
            if operand_16 {
                return Err(DecodeError::Unsupported { opcode: second });
            }
            match second {
                0xb6 => (second, 1, Kind::Load { zero_extend: true }),
                0xb7 => (second, 2, Kind::Load { zero_extend: true }),
                _ => return Err(DecodeError::Unsupported { opcode: second }),
            }
        }
        _ => return unsupported,
    };
    let unsupported = Err(DecodeError::Unsupported { opcode: opcode_byte });
    if size == 1 && rex_w && opcode_byte != 0xb6 {
        return unsupported;
    }
    let access = if matches!(opcode_byte, 0xa1 | 0xa3) {
        c.skip(address_bytes)?;
        match kind {
            Kind::Load { zero_extend } => Access::Load { register: 0, zero_extend },
            _ => Access::Store { source: Source::Register(0) },
        }
    } else {
        let modrm = c.byte()?;
        let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
        if md == 0b11 || (matches!(kind, Kind::Immediate) && reg != 0) {
            return unsupported;
        }
        skip_address(&mut c, md, rm, address_bytes == 2)?;
        let register = reg | if rex & REX_R != 0 { 8 } else { 0 };
        // Byte registers 4-7 without a REX prefix are AH, CH, DH, BH (SDM Vol. 2 3.1.1.1):
        // not taken (with REX they are SPL..DIL, the low bytes like every other).
        let byte_register = size == 1 && !matches!(kind, Kind::Immediate) && opcode_byte != 0xb6;
        if byte_register && rex == 0 && (4..8).contains(&register) {
            return unsupported;
        }
        match kind {
            Kind::Store => Access::Store { source: Source::Register(register) },
            Kind::Load { zero_extend } => Access::Load { register, zero_extend },
            Kind::Immediate => Access::Store {
                source: Source::Immediate(match size {
                    1 => u32::from(c.byte()?),
                    2 => u32::from(c.byte()?) | u32::from(c.byte()?) << 8,
                    _ => c.u32()?,
                }),
            },
        }
    };
    Ok(MmioInstruction { access, size, length: c.at as u8 })
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
        Ok(MmioInstruction { access: Access::Load { register, zero_extend: true }, size: 4, length })
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
            (&[0x8a, 0x27][..], 0x8a),             // mov ah, [rdi]
            (&[0x48, 0x88, 0x07][..], 0x88),       // REX.W on a byte store
            (&[0x66, 0x0f, 0xb6, 0x07][..], 0xb6), // movzx r16
            (&[0x0f, 0xbe, 0x07][..], 0xbe),       // movsx
            (&[0xc6, 0x0f, 0][..], 0xc6),          // C6 /1
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
    fn byte_and_word_forms() {
        let sized = |access, size, length| Ok(MmioInstruction { access, size, length });
        let load = |register, zero_extend| Access::Load { register, zero_extend };
        // Linux's mmio_config_readb/readw/writeb/writew: mov al, [rdx]; mov ax, [rdx];
        // mov [rdx], al; mov [rdx], ax
        assert_eq!(decode(&[0x8a, 0x02], CodeSize::Bits64), sized(load(0, false), 1, 2));
        assert_eq!(decode(&[0x66, 0x8b, 0x02], CodeSize::Bits64), sized(load(0, false), 2, 3));
        assert_eq!(decode(&[0x88, 0x02], CodeSize::Bits64), sized(Access::Store { source: Source::Register(0) }, 1, 2));
        assert_eq!(
            decode(&[0x66, 0x89, 0x02], CodeSize::Bits64),
            sized(Access::Store { source: Source::Register(0) }, 2, 3)
        );
        // mov sil, [rdi] (REX: SIL, not DH); mov r9b, [rax+8]; mov bl, [rdi]
        assert_eq!(decode(&[0x40, 0x8a, 0x37], CodeSize::Bits64), sized(load(6, false), 1, 3));
        assert_eq!(decode(&[0x44, 0x8a, 0x48, 0x08], CodeSize::Bits64), sized(load(9, false), 1, 4));
        assert_eq!(decode(&[0x8a, 0x1f], CodeSize::Bits64), sized(load(3, false), 1, 2));
        // mov byte [rdi+4], 0x80; mov word [rdi], 0x1234; 16-bit code: mov word [bx], 5 without 66
        assert_eq!(
            decode(&[0xc6, 0x47, 0x04, 0x80], CodeSize::Bits64),
            sized(Access::Store { source: Source::Immediate(0x80) }, 1, 4)
        );
        assert_eq!(
            decode(&[0x66, 0xc7, 0x07, 0x34, 0x12], CodeSize::Bits64),
            sized(Access::Store { source: Source::Immediate(0x1234) }, 2, 5)
        );
        assert_eq!(
            decode(&[0xc7, 0x07, 5, 0], CodeSize::Bits16),
            sized(Access::Store { source: Source::Immediate(5) }, 2, 4)
        );
        // movzx eax, byte [rdi]; movzx r10d, word [rsi+0x10]; movzx rax, byte [rdi]
        assert_eq!(decode(&[0x0f, 0xb6, 0x07], CodeSize::Bits64), sized(load(0, true), 1, 3));
        assert_eq!(decode(&[0x44, 0x0f, 0xb7, 0x56, 0x10], CodeSize::Bits64), sized(load(10, true), 2, 5));
        assert_eq!(decode(&[0x48, 0x0f, 0xb6, 0x07], CodeSize::Bits64), sized(load(0, true), 1, 4));
        // movzx eax, byte [di] with 66 in 16-bit code: a 32-bit destination.
        assert_eq!(decode(&[0x66, 0x0f, 0xb6, 0x05], CodeSize::Bits16), sized(load(0, true), 1, 4));
        // mov ax, [moffs32] in 32-bit code
        assert_eq!(decode(&[0x66, 0xa1, 0, 0, 0, 0xb0], CodeSize::Bits32), sized(load(0, false), 2, 6));
    }

    #[test]
    fn truncated_or_overlong_input() {
        assert_eq!(decode(&[], CodeSize::Bits64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x8b], CodeSize::Bits64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x8b, 0x80, 0, 0], CodeSize::Bits64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0xc7, 0x07, 1, 2, 3], CodeSize::Bits64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x0f], CodeSize::Bits64), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0xc6, 0x07], CodeSize::Bits64), Err(DecodeError::Truncated));
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
