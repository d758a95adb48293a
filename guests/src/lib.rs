//! Runtime of the partition payloads: entry glue, console output, and a way to report a
//! test verdict.
//!
//! Payloads are ELF64 images linked at guest-physical 1 MiB (`linker.ld`); the hypervisor
//! enters them in 64-bit mode with identity page tables and a stack, the command line's
//! address in RDI and the boot information's (`bulkhead_abi::boot_info`) in RSI (see
//! docs/architecture.md, "Payload boot protocol"). Console output goes to the partition's
//! virtual 16550 at 0x3F8; the hypervisor prefixes each line with the partition name.
#![no_std]

use core::fmt::{self, Write};

const CONSOLE: u16 = 0x3f8;
/// Writing here reports a verdict (0 = pass, anything else = fail). The hypervisor logs it
/// and, under an emulator (`exit=emulator`), ends the run with it.
pub const REPORT_PORT: u16 = 0xf4;

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory effects; the hypervisor decides what it does.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Reads one byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`.
    unsafe { core::arch::asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags)) };
    value
}

/// The partition's console.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            outb(CONSOLE, b);
        }
        Ok(())
    }
}

/// `println!` to the partition console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::Console, $($arg)*);
    }};
}

/// Reports the test verdict and parks the CPU.
pub fn report(pass: bool) -> ! {
    println!("{}", if pass { "PASS" } else { "FAIL" });
    outb(REPORT_PORT, if pass { 0 } else { 1 });
    idle()
}

/// Parks the CPU. Interrupts stay as the hypervisor delivers them.
pub fn idle() -> ! {
    loop {
        // SAFETY: HLT only waits for the next interrupt.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack, preserves_flags)) };
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// CPUID as the partition sees it.
pub fn cpuid(leaf: u32, subleaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("panic: {}", info);
    report(false)
}

/// The partition's command line, from the address the hypervisor passes in RDI.
///
/// # Safety
/// `address` must be the value the hypervisor passed (a NUL-terminated string in the
/// partition's boot area).
pub unsafe fn cmdline(address: *const u8) -> &'static str {
    let mut len = 0;
    // SAFETY: per the caller, NUL-terminated within the 4 KiB command-line area.
    while len < 4096 && unsafe { *address.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: as above; non-UTF-8 bytes give an empty command line.
    core::str::from_utf8(unsafe { core::slice::from_raw_parts(address, len) }).unwrap_or("")
}

/// The value of `key=value` on a command line.
pub fn arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Parses `0x...` or decimal.
pub fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

pub use bulkhead_abi::demo;
pub mod hyperv;
pub mod user;

pub mod gp {
    //! A minimal IDT whose #GP handler skips the faulting 2-byte instruction (RDMSR and
    //! WRMSR are 2 bytes) and counts, so a payload can see that the hypervisor answered an
    //! access with #GP; a #UD handler that skips 3-byte instructions the same way (the
    //! virtualization instructions); plus the local APIC timer and spurious vectors. Every
    //! other vector is absent: any other exception triple-faults.
    use core::sync::atomic::{AtomicU64, Ordering};

    #[unsafe(no_mangle)]
    static GP_COUNT: AtomicU64 = AtomicU64::new(0);

    #[unsafe(no_mangle)]
    static UD_COUNT: AtomicU64 = AtomicU64::new(0);

    #[unsafe(no_mangle)]
    static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);
    /// Length of the instruction the #GP handler skips (RDMSR/WRMSR: 2, XSETBV: 3).
    #[unsafe(no_mangle)]
    static GP_SKIP: AtomicU64 = AtomicU64::new(2);

    core::arch::global_asm!(
        r#"
        .section .text
        .global guest_gp_handler
    guest_gp_handler:
        add rsp, 8
        push rax
        mov rax, qword ptr [rip + GP_SKIP]
        add qword ptr [rsp + 8], rax
        pop rax
        lock inc qword ptr [rip + GP_COUNT]
        iretq

        .global guest_ud_handler
    guest_ud_handler:
        add qword ptr [rsp], 3
        lock inc qword ptr [rip + UD_COUNT]
        iretq

        .global guest_timer_handler
    guest_timer_handler:
        lock inc qword ptr [rip + TIMER_TICKS]
        // Shared tail of the interrupt handlers: EOI through the x2APIC, then return.
        .global guest_eoi_and_return
    guest_eoi_and_return:
        push rax
        push rcx
        push rdx
        mov ecx, 0x80b
        xor eax, eax
        xor edx, edx
        wrmsr
        pop rdx
        pop rcx
        pop rax
        iretq

        .global guest_spurious_handler
    guest_spurious_handler:
        iretq
        "#
    );

    unsafe extern "C" {
        fn guest_gp_handler();
        fn guest_ud_handler();
        fn guest_timer_handler();
        fn guest_spurious_handler();
    }

    /// Vector of the local APIC timer (see [`start_timer`]).
    pub const TIMER_VECTOR: u8 = 0x40;
    const SPURIOUS_VECTOR: u8 = 0xff;

    /// Points `vector` at `handler` (a 64-bit interrupt gate, code selector 0x08).
    pub fn set_gate(vector: u8, handler: u64) {
        let low = (handler & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((handler >> 16) & 0xffff) << 48;
        // SAFETY: single-threaded set-up; the IDT is this module's own static.
        unsafe {
            let idt = &raw mut IDT;
            (*idt).0[usize::from(vector) * 2] = low;
            (*idt).0[usize::from(vector) * 2 + 1] = handler >> 32;
        }
    }

    fn wrmsr_raw(msr: u32, value: u64) {
        // SAFETY: x2APIC registers the hypervisor passes through to the partition.
        unsafe {
            core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
        };
    }

    /// Software-enables the local APIC (x2APIC spurious-vector register) so fixed
    /// interrupts reach this vCPU; switches it to x2APIC mode first.
    pub fn enable_local_apic() {
        crate::lapic::enter_x2apic_mode();
        set_gate(SPURIOUS_VECTOR, guest_spurious_handler as *const () as u64);
        wrmsr_raw(0x80f, 0x100 | u64::from(SPURIOUS_VECTOR));
    }

    /// Starts this core's local APIC timer (x2APIC mode, divide by 1) in periodic mode,
    /// counting down from `initial_count`, and enables interrupts. Each tick is counted by
    /// the handler, which also signals EOI: neither causes a VM exit.
    pub fn start_timer(initial_count: u32) {
        set_gate(TIMER_VECTOR, guest_timer_handler as *const () as u64);
        enable_local_apic();
        wrmsr_raw(0x83e, 0b1011); // divide by 1
        wrmsr_raw(0x832, (1 << 17) | u64::from(TIMER_VECTOR)); // periodic
        wrmsr_raw(0x838, u64::from(initial_count));
        // SAFETY: the IDT handles the timer and spurious vectors.
        unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    }

    /// Timer interrupts taken so far.
    pub fn ticks() -> u64 {
        TIMER_TICKS.load(Ordering::SeqCst)
    }

    #[repr(C, align(16))]
    struct Idt([u64; 512]);
    static mut IDT: Idt = Idt([0; 512]);

    /// Installs the IDT (64-bit interrupt gates for vectors 6 and 13, code selector 0x08).
    pub fn install() {
        set_gate(6, guest_ud_handler as *const () as u64);
        set_gate(13, guest_gp_handler as *const () as u64);
        // SAFETY: single-threaded set-up before any exception can occur.
        unsafe {
            let idt = &raw mut IDT;
            let pointer: [u16; 5] = {
                let base = idt as u64;
                [4095, base as u16, (base >> 16) as u16, (base >> 32) as u16, (base >> 48) as u16]
            };
            core::arch::asm!("lidt [{}]", in(reg) &pointer, options(nostack));
        }
    }

    /// The hypervisor answered the access with a general-protection fault.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct GeneralProtection;

    pub fn count() -> u64 {
        GP_COUNT.load(Ordering::SeqCst)
    }

    /// RDMSR; `Err` when the hypervisor answered with #GP.
    pub fn rdmsr(msr: u32) -> Result<u64, GeneralProtection> {
        let before = count();
        let (lo, hi): (u32, u32);
        // SAFETY: a #GP is caught by the handler installed above.
        unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
        if count() == before { Ok(u64::from(hi) << 32 | u64::from(lo)) } else { Err(GeneralProtection) }
    }

    /// XSETBV of XCR0 (sets CR4.OSXSAVE first); `Err` when the hypervisor answered #GP.
    pub fn xsetbv(value: u64) -> Result<(), GeneralProtection> {
        // SAFETY: enabling XSAVE in this partition's own CR4 (CPUID reports XSAVE).
        unsafe {
            core::arch::asm!("mov {t}, cr4", "bts {t}, 18", "mov cr4, {t}", t = out(reg) _, options(nostack));
        }
        let before = count();
        GP_SKIP.store(3, Ordering::SeqCst);
        // SAFETY: a #GP is caught and skipped (3 bytes) by the handler.
        unsafe {
            core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
        };
        GP_SKIP.store(2, Ordering::SeqCst);
        if count() == before { Ok(()) } else { Err(GeneralProtection) }
    }

    /// The hypervisor (or the CPU) answered an instruction with an invalid-opcode fault.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct InvalidOpcode;

    /// The three-byte virtualization instructions (0F 01 xx) a partition may try: SVM's
    /// VMRUN, CLGI and STGI, VT-x's VMLAUNCH and VMXOFF.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum VirtualizationInstruction {
        Vmrun,
        Clgi,
        Stgi,
        Vmlaunch,
        Vmxoff,
    }

    /// Executes `instruction`; `Err` when it raised #UD (the handler skips its 3 bytes).
    pub fn execute(instruction: VirtualizationInstruction) -> Result<(), InvalidOpcode> {
        let before = UD_COUNT.load(Ordering::SeqCst);
        // SAFETY: a partition has no virtualization extensions; a #UD is caught and skipped
        // by the handler installed above. RAX (VMRUN's operand) points at nothing in use.
        unsafe {
            match instruction {
                VirtualizationInstruction::Vmrun => core::arch::asm!(".byte 0x0f, 0x01, 0xd8", in("rax") 0u64),
                VirtualizationInstruction::Clgi => core::arch::asm!(".byte 0x0f, 0x01, 0xdd"),
                VirtualizationInstruction::Stgi => core::arch::asm!(".byte 0x0f, 0x01, 0xdc"),
                VirtualizationInstruction::Vmlaunch => core::arch::asm!(".byte 0x0f, 0x01, 0xc2"),
                VirtualizationInstruction::Vmxoff => core::arch::asm!(".byte 0x0f, 0x01, 0xc4"),
            }
        }
        if UD_COUNT.load(Ordering::SeqCst) == before { Ok(()) } else { Err(InvalidOpcode) }
    }

    /// WRMSR; `Err` when the hypervisor answered with #GP.
    pub fn wrmsr(msr: u32, value: u64) -> Result<(), GeneralProtection> {
        let before = count();
        // SAFETY: as in `rdmsr`.
        unsafe {
            core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
        };
        if count() == before { Ok(()) } else { Err(GeneralProtection) }
    }
}

/// The local APIC's mode and the start of the other vCPUs, shared with the unikernel
/// runtime.
pub use bulkhead_vcpu::{lapic, smp};
