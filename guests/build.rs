//! Links every guest at its guest-physical load address (guests/linker.ld), and writes the
//! two payloads Rust cannot build here: `test-mb1`, a 32-bit multiboot1 ELF (there is no
//! 32-bit bare-metal Rust target in the toolchain), and `test-flat`, a flat binary (no
//! objcopy is guaranteed on the build machine). Their few instructions are assembled by
//! hand below; the files land next to the other guest binaries. Bare-metal target only.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-none") {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    // <target>/<triple>/<profile>/build/<pkg>-<hash>/out -> <target>/<triple>/<profile>
    let binaries = Path::new(&out).ancestors().nth(3).expect("OUT_DIR inside the target folder");
    std::fs::write(binaries.join("test-mb1"), multiboot1_test_image()).expect("write test-mb1");
    std::fs::write(binaries.join("test-flat"), flat_test_image()).expect("write test-flat");
}

/// A position-independent flat binary for 64-bit mode: prints a fixed line followed by its
/// command line (RDI, as the boot protocol says) on the virtual console, then reports PASS.
fn flat_test_image() -> Vec<u8> {
    let mut code: Vec<u8> = Vec::new();
    let rip_relative_lea = |code: &mut Vec<u8>| {
        code.extend([0x48, 0x8d, 0x35]); // lea rsi, [rip + rel32] (patched)
        code.extend([0; 4]);
        code.len() - 4
    };
    let call = |code: &mut Vec<u8>| {
        code.push(0xe8); // call rel32 (patched)
        code.extend([0; 4]);
        code.len() - 4
    };
    let banner_lea = rip_relative_lea(&mut code);
    let call1 = call(&mut code);
    code.extend([0x48, 0x89, 0xfe]); // mov rsi, rdi (the command line)
    let call2 = call(&mut code);
    let newline_lea = rip_relative_lea(&mut code);
    let call3 = call(&mut code);
    code.extend([0x66, 0xba, 0xf4, 0x00]); // mov dx, 0xf4
    code.extend([0x31, 0xc0]); // xor eax, eax
    code.push(0xee); // out dx, al (PASS)
    code.extend([0xf4, 0xeb, 0xfd]); // hlt; jmp hlt
    // print: writes the NUL-terminated string at RSI to port 0x3f8.
    let print = code.len();
    code.extend([0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    code.push(0xac); // lodsb
    code.extend([0x84, 0xc0]); // test al, al
    code.extend([0x74, 0x03]); // jz ret (+3)
    code.push(0xee); // out dx, al
    code.extend([0xeb, 0xf8]); // jmp lodsb (-8)
    code.push(0xc3); // ret
    let banner = code.len();
    code.extend(b"flat: 64-bit mode at its entry, command line: \0");
    let newline = code.len();
    code.extend(b"\n\0");
    let patch = |code: &mut Vec<u8>, at: usize, target: usize| {
        let relative = target as i32 - (at as i32 + 4);
        code[at..at + 4].copy_from_slice(&relative.to_le_bytes());
    };
    patch(&mut code, banner_lea, banner);
    patch(&mut code, newline_lea, newline);
    for at in [call1, call2, call3] {
        patch(&mut code, at, print);
    }
    code
}

/// Load (and entry) address: 1 MiB, as the 64-bit guests.
const BASE: u32 = 0x10_0000;
const ELF_HEADER: usize = 52;
const PROGRAM_HEADER: usize = 32;

/// A multiboot1 ELF32 that checks EAX = 0x2BADB002 and the info structure's memory-map
/// flag, prints a line on the virtual console and writes its verdict to port 0xF4.
fn multiboot1_test_image() -> Vec<u8> {
    const MB1_MAGIC: u32 = 0x1bad_b002;
    const MB1_FLAGS: u32 = 0b11; // page-aligned modules, memory information
    let message = b"multiboot1: protected mode, magic ok, memory map present\n\0";
    // Segment layout: multiboot header (12 bytes), code, message.
    let mut segment = Vec::new();
    for word in [MB1_MAGIC, MB1_FLAGS, 0u32.wrapping_sub(MB1_MAGIC.wrapping_add(MB1_FLAGS))] {
        segment.extend_from_slice(&word.to_le_bytes());
    }
    let entry = BASE + segment.len() as u32;
    let mut code: Vec<u8> = Vec::new();
    code.extend([0x3d]); // cmp eax, imm32
    code.extend(0x2bad_b002u32.to_le_bytes());
    code.extend([0x75, 0]); // jne fail (patched)
    let jne_magic = code.len() - 1;
    code.extend([0xf6, 0x03, 0x40]); // test byte [ebx], 0x40 (flags bit 6: memory map)
    code.extend([0x74, 0]); // jz fail (patched)
    let jz_mmap = code.len() - 1;
    code.push(0xbe); // mov esi, imm32 (message, patched)
    let message_address = code.len();
    code.extend([0; 4]);
    code.extend([0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    let next = code.len();
    code.push(0xac); // lodsb
    code.extend([0x84, 0xc0]); // test al, al
    code.extend([0x74, 0x03]); // jz done (+3)
    code.push(0xee); // out dx, al
    code.extend([0xeb, (next as i32 - (code.len() as i32 + 2)) as u8]); // jmp next
    // done: report pass
    code.extend([0x66, 0xba, 0xf4, 0x00]); // mov dx, 0xf4
    code.extend([0x31, 0xc0]); // xor eax, eax
    code.push(0xee); // out dx, al
    code.extend([0xf4, 0xeb, 0xfd]); // hlt; jmp hlt
    let fail = code.len();
    code.extend([0x66, 0xba, 0xf4, 0x00]); // mov dx, 0xf4
    code.extend([0xb0, 0x01]); // mov al, 1
    code.push(0xee); // out dx, al
    code.extend([0xf4, 0xeb, 0xfd]); // hlt; jmp hlt
    code[jne_magic] = (fail - (jne_magic + 1)) as u8;
    code[jz_mmap] = (fail - (jz_mmap + 1)) as u8;
    let message_at = entry + code.len() as u32;
    code[message_address..message_address + 4].copy_from_slice(&message_at.to_le_bytes());
    segment.extend(code);
    segment.extend_from_slice(message);

    let offset = (ELF_HEADER + PROGRAM_HEADER) as u32;
    let mut elf = Vec::new();
    elf.extend(b"\x7fELF");
    elf.extend([1, 1, 1, 0]); // ELFCLASS32, little endian, version 1, System V
    elf.extend([0; 8]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(3u16.to_le_bytes()); // EM_386
    elf.extend(1u32.to_le_bytes()); // EV_CURRENT
    elf.extend(entry.to_le_bytes());
    elf.extend((ELF_HEADER as u32).to_le_bytes()); // e_phoff
    elf.extend(0u32.to_le_bytes()); // e_shoff
    elf.extend(0u32.to_le_bytes()); // e_flags
    elf.extend((ELF_HEADER as u16).to_le_bytes());
    elf.extend((PROGRAM_HEADER as u16).to_le_bytes());
    elf.extend(1u16.to_le_bytes()); // e_phnum
    elf.extend(40u16.to_le_bytes()); // e_shentsize
    elf.extend(0u16.to_le_bytes()); // e_shnum
    elf.extend(0u16.to_le_bytes()); // e_shstrndx
    // PT_LOAD, RWX, file offset right after the headers, loaded at BASE.
    for word in [1, offset, BASE, BASE, segment.len() as u32, segment.len() as u32, 7, 4] {
        elf.extend(word.to_le_bytes());
    }
    elf.extend(segment);
    elf
}
