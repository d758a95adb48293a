//! The virtual machine control block (APM Vol. 2, 15.5 and Appendix B): one 4 KiB page,
//! the control area (intercepts, exit information, event injection; Table B-1) at offset 0
//! and the state save area (guest registers; Table B-2) at offset 0x400.
//!
//! Every field sits at the offset the APM gives it; the assertions at the end of this file
//! check each one at compile time, so a misplaced field does not build. Offsets in the
//! save-area comments are relative to the save area, as in Table B-2 (add 0x400 for the
//! VMCB offset).

use core::mem::{offset_of, size_of};

/// One segment register in the save area (Table B-2): selector, attributes in the
/// compressed 12-bit format (see [`compress_attributes`]), the byte-granular 32-bit limit
/// and the base.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

impl Segment {
    pub const fn zeroed() -> Self {
        Segment { selector: 0, attrib: 0, limit: 0, base: 0 }
    }
}

/// Converts VMX-style segment access rights (descriptor bits 47:40 in 7:0, bits 55:52 in
/// 15:12, bit 16 "unusable"; SDM Vol. 3C 25.4.1) into the VMCB's compressed attributes
/// (APM 15.5.1, Appendix B: descriptor bits 47:40 in 7:0 and 55:52 in 11:8, i.e.
/// type | S << 4 | DPL << 5 | P << 7 | AVL << 8 | L << 9 | D/B << 10 | G << 11). An unusable
/// segment becomes 0: not present.
pub const fn compress_attributes(access_rights: u32) -> u16 {
    if access_rights & (1 << 16) != 0 { 0 } else { ((access_rights & 0xff) | ((access_rights >> 4) & 0xf00)) as u16 }
}

/// Intercept vector 3, control area 0x00C (Table B-1): a set bit makes the event exit.
pub mod intercept {
    /// Physical maskable interrupt (not used: the guest takes its interrupts directly).
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    pub const RDPMC: u32 = 1 << 15;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    /// IN/OUT/INS/OUTS, filtered by the I/O permissions map (15.10).
    pub const IOIO_PROT: u32 = 1 << 27;
    /// RDMSR/WRMSR, filtered by the MSR permissions map (15.11).
    pub const MSR_PROT: u32 = 1 << 28;
    /// Shutdown (triple fault) in the guest.
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept vector 4, control area 0x010 (Table B-1): the SVM instructions and a few more.
pub mod intercept2 {
    /// Must be set: VMRUN fails its consistency checks otherwise (15.5.1).
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const RDTSCP: u32 = 1 << 7;
    pub const ICEBP: u32 = 1 << 8;
    /// WBINVD and WBNOINVD.
    pub const WBINVD: u32 = 1 << 9;
    /// MONITOR and MONITORX.
    pub const MONITOR: u32 = 1 << 10;
    /// MWAIT and MWAITX, armed or not.
    pub const MWAIT: u32 = 1 << 11;
    pub const XSETBV: u32 = 1 << 13;
    pub const RDPRU: u32 = 1 << 14;
}

/// TLB_CONTROL values, control area 0x05C (15.16, Table B-1).
pub mod tlb_control {
    pub const DO_NOTHING: u8 = 0;
    /// Flush the entire TLB, every ASID (the only flush on CPUs without FlushByAsid).
    pub const FLUSH_ALL: u8 = 1;
    /// Flush this guest's ASID (CPUID 0x8000_000A EDX bit 6, FlushByAsid).
    pub const FLUSH_ASID: u8 = 3;
    /// Flush this guest's non-global translations (FlushByAsid).
    pub const FLUSH_ASID_NON_GLOBAL: u8 = 7;
}

/// Interrupt control, control area 0x060: V_INTR_MASKING. It stays clear: the guest's
/// RFLAGS.IF masks physical interrupts and they are delivered through the guest's IDT
/// without an exit (15.21). Named here only to say so.
pub const V_INTR_MASKING: u64 = 1 << 24;
/// Interrupt state, control area 0x068: the guest is in an interrupt shadow (STI, MOV SS).
pub const INTERRUPT_SHADOW: u64 = 1 << 0;
/// Control area 0x090: enable nested paging (15.25).
pub const NP_ENABLE: u64 = 1 << 0;

/// EVENTINJ (control area 0x0A8) and EXITINTINFO (0x088) share this format (15.20, 15.7.2):
/// vector 7:0, type 10:8, error code valid 11, valid 31, error code 63:32.
pub mod event {
    pub const TYPE_INTR: u64 = 0 << 8;
    pub const TYPE_NMI: u64 = 2 << 8;
    pub const TYPE_EXCEPTION: u64 = 3 << 8;
    pub const TYPE_SOFTWARE_INTERRUPT: u64 = 4 << 8;
    pub const ERROR_CODE_VALID: u64 = 1 << 11;
    pub const VALID: u64 = 1 << 31;

    /// A hardware exception with an optional error code.
    pub const fn exception(vector: u8, error_code: Option<u32>) -> u64 {
        let base = VALID | TYPE_EXCEPTION | vector as u64;
        match error_code {
            Some(code) => base | ERROR_CODE_VALID | ((code as u64) << 32),
            None => base,
        }
    }
}

/// The control area (Table B-1), 0x000 to 0x3FF.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlArea {
    /// 0x000: intercept reads (15:0) and writes (31:16) of CR0-CR15.
    pub intercept_cr: u32,
    /// 0x004: intercept reads (15:0) and writes (31:16) of DR0-DR15.
    pub intercept_dr: u32,
    /// 0x008: intercept exception vectors 0-31.
    pub intercept_exceptions: u32,
    /// 0x00C: see [`intercept`].
    pub intercept_misc1: u32,
    /// 0x010: see [`intercept2`].
    pub intercept_misc2: u32,
    /// 0x014: INVLPGB, INVPCID, MCOMMIT, TLBSYNC... intercepts (not used).
    pub intercept_misc3: u32,
    _reserved_018: [u8; 0x24],
    /// 0x03C.
    pub pause_filter_threshold: u16,
    /// 0x03E.
    pub pause_filter_count: u16,
    /// 0x040: physical address of the I/O permissions map (bits 11:0 ignored).
    pub iopm_base_pa: u64,
    /// 0x048: physical address of the MSR permissions map (bits 11:0 ignored).
    pub msrpm_base_pa: u64,
    /// 0x050: added to the TSC the guest reads.
    pub tsc_offset: u64,
    /// 0x058: the guest's ASID; 0 is the host's and fails VMRUN.
    pub guest_asid: u32,
    /// 0x05C (bits 39:32 of the quadword at 0x058): see [`tlb_control`].
    pub tlb_control: u8,
    _reserved_05d: [u8; 3],
    /// 0x060: V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING (bit 24), V_INTR_VECTOR.
    pub interrupt_control: u64,
    /// 0x068: bit 0 interrupt shadow, bit 1 guest interrupt mask.
    pub interrupt_state: u64,
    /// 0x070: EXITCODE (Appendix C).
    pub exit_code: u64,
    /// 0x078: EXITINFO1.
    pub exit_info1: u64,
    /// 0x080: EXITINFO2.
    pub exit_info2: u64,
    /// 0x088: EXITINTINFO: the event being delivered when the exit happened ([`event`]).
    pub exit_int_info: u64,
    /// 0x090: bit 0 NP_ENABLE, bit 1 SEV, bit 2 SEV-ES...
    pub nested_control: u64,
    /// 0x098: AVIC APIC_BAR.
    pub avic_apic_bar: u64,
    /// 0x0A0: guest physical address of the GHCB (SEV-ES).
    pub ghcb_pa: u64,
    /// 0x0A8: EVENTINJ, the event injected at the next VMRUN ([`event`]).
    pub event_injection: u64,
    /// 0x0B0: N_CR3, the nested page table root.
    pub nested_cr3: u64,
    /// 0x0B8: bit 0 LBR virtualization, bit 1 virtualized VMSAVE/VMLOAD.
    pub virtualization_extensions: u64,
    /// 0x0C0: VMCB clean bits (15.15); 0 = reload everything.
    pub clean_bits: u32,
    _reserved_0c4: u32,
    /// 0x0C8: nRIP, the next sequential instruction pointer (NRIPS feature, 15.7.1).
    pub next_rip: u64,
    /// 0x0D0: number of guest instruction bytes fetched (DecodeAssists).
    pub bytes_fetched: u8,
    /// 0x0D1: the guest instruction bytes.
    pub instruction_bytes: [u8; 15],
    /// 0x0E0-0x3FF: AVIC and SEV pointers, reserved, and 0x3E0-0x3FF reserved for the host.
    _reserved_0e0: [u8; 0x320],
}

impl ControlArea {
    pub const fn zeroed() -> Self {
        ControlArea {
            intercept_cr: 0,
            intercept_dr: 0,
            intercept_exceptions: 0,
            intercept_misc1: 0,
            intercept_misc2: 0,
            intercept_misc3: 0,
            _reserved_018: [0; 0x24],
            pause_filter_threshold: 0,
            pause_filter_count: 0,
            iopm_base_pa: 0,
            msrpm_base_pa: 0,
            tsc_offset: 0,
            guest_asid: 0,
            tlb_control: 0,
            _reserved_05d: [0; 3],
            interrupt_control: 0,
            interrupt_state: 0,
            exit_code: 0,
            exit_info1: 0,
            exit_info2: 0,
            exit_int_info: 0,
            nested_control: 0,
            avic_apic_bar: 0,
            ghcb_pa: 0,
            event_injection: 0,
            nested_cr3: 0,
            virtualization_extensions: 0,
            clean_bits: 0,
            _reserved_0c4: 0,
            next_rip: 0,
            bytes_fetched: 0,
            instruction_bytes: [0; 15],
            _reserved_0e0: [0; 0x320],
        }
    }
}

/// The state save area (Table B-2), VMCB 0x400 to 0xFFF. VMRUN loads and #VMEXIT saves
/// the segment registers ES, CS, SS, DS, GDTR, IDTR, the control and debug registers,
/// EFER, RFLAGS, RIP, RSP, RAX, CPL and G_PAT; FS, GS, TR, LDTR, KernelGsBase, STAR,
/// LSTAR, CSTAR, SFMASK and SYSENTER_* only move with VMLOAD/VMSAVE (15.5.2).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveArea {
    /// 0x000.
    pub es: Segment,
    /// 0x010.
    pub cs: Segment,
    /// 0x020.
    pub ss: Segment,
    /// 0x030.
    pub ds: Segment,
    /// 0x040.
    pub fs: Segment,
    /// 0x050.
    pub gs: Segment,
    /// 0x060: only limit and base are used.
    pub gdtr: Segment,
    /// 0x070.
    pub ldtr: Segment,
    /// 0x080: only limit and base are used.
    pub idtr: Segment,
    /// 0x090.
    pub tr: Segment,
    _reserved_0a0: [u8; 0x2b],
    /// 0x0CB: the current privilege level (SS.DPL is not used for it).
    pub cpl: u8,
    _reserved_0cc: u32,
    /// 0x0D0.
    pub efer: u64,
    _reserved_0d8: [u8; 0x70],
    /// 0x148.
    pub cr4: u64,
    /// 0x150.
    pub cr3: u64,
    /// 0x158.
    pub cr0: u64,
    /// 0x160.
    pub dr7: u64,
    /// 0x168.
    pub dr6: u64,
    /// 0x170.
    pub rflags: u64,
    /// 0x178.
    pub rip: u64,
    _reserved_180: [u8; 0x58],
    /// 0x1D8.
    pub rsp: u64,
    /// 0x1E0: CET state (not used).
    pub s_cet: u64,
    /// 0x1E8.
    pub ssp: u64,
    /// 0x1F0.
    pub isst_addr: u64,
    /// 0x1F8: VMRUN loads the guest's RAX from here, #VMEXIT stores it here.
    pub rax: u64,
    /// 0x200.
    pub star: u64,
    /// 0x208.
    pub lstar: u64,
    /// 0x210.
    pub cstar: u64,
    /// 0x218.
    pub sfmask: u64,
    /// 0x220.
    pub kernel_gs_base: u64,
    /// 0x228.
    pub sysenter_cs: u64,
    /// 0x230.
    pub sysenter_esp: u64,
    /// 0x238.
    pub sysenter_eip: u64,
    /// 0x240.
    pub cr2: u64,
    _reserved_248: [u8; 0x20],
    /// 0x268: the guest's PAT while nested paging is on (15.25).
    pub g_pat: u64,
    /// 0x270: DBGCTL (LBR virtualization).
    pub dbgctl: u64,
    /// 0x278.
    pub br_from: u64,
    /// 0x280.
    pub br_to: u64,
    /// 0x288.
    pub last_exception_from: u64,
    /// 0x290.
    pub last_exception_to: u64,
    _reserved_298: [u8; 0xc00 - 0x298],
}

impl SaveArea {
    pub const fn zeroed() -> Self {
        let z = Segment::zeroed();
        SaveArea {
            es: z,
            cs: z,
            ss: z,
            ds: z,
            fs: z,
            gs: z,
            gdtr: z,
            ldtr: z,
            idtr: z,
            tr: z,
            _reserved_0a0: [0; 0x2b],
            cpl: 0,
            _reserved_0cc: 0,
            efer: 0,
            _reserved_0d8: [0; 0x70],
            cr4: 0,
            cr3: 0,
            cr0: 0,
            dr7: 0,
            dr6: 0,
            rflags: 0,
            rip: 0,
            _reserved_180: [0; 0x58],
            rsp: 0,
            s_cet: 0,
            ssp: 0,
            isst_addr: 0,
            rax: 0,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            cr2: 0,
            _reserved_248: [0; 0x20],
            g_pat: 0,
            dbgctl: 0,
            br_from: 0,
            br_to: 0,
            last_exception_from: 0,
            last_exception_to: 0,
            _reserved_298: [0; 0xc00 - 0x298],
        }
    }
}

/// A VMCB: 4 KiB, 4 KiB aligned (VMRUN, VMLOAD and VMSAVE take its physical address in
/// RAX and fault on an unaligned one). Also the format of the host's VMSAVE area.
#[repr(C, align(4096))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vmcb {
    pub control: ControlArea,
    pub save: SaveArea,
}

impl Vmcb {
    pub const fn zeroed() -> Self {
        Vmcb { control: ControlArea::zeroed(), save: SaveArea::zeroed() }
    }

    /// Physical address (the hypervisor runs identity-mapped).
    pub fn address(&self) -> u64 {
        self as *const Vmcb as u64
    }
}

// Appendix B, Table B-1: control area offsets.
const _: () = {
    assert!(size_of::<ControlArea>() == 0x400);
    assert!(offset_of!(ControlArea, intercept_cr) == 0x000);
    assert!(offset_of!(ControlArea, intercept_dr) == 0x004);
    assert!(offset_of!(ControlArea, intercept_exceptions) == 0x008);
    assert!(offset_of!(ControlArea, intercept_misc1) == 0x00c);
    assert!(offset_of!(ControlArea, intercept_misc2) == 0x010);
    assert!(offset_of!(ControlArea, intercept_misc3) == 0x014);
    assert!(offset_of!(ControlArea, pause_filter_threshold) == 0x03c);
    assert!(offset_of!(ControlArea, pause_filter_count) == 0x03e);
    assert!(offset_of!(ControlArea, iopm_base_pa) == 0x040);
    assert!(offset_of!(ControlArea, msrpm_base_pa) == 0x048);
    assert!(offset_of!(ControlArea, tsc_offset) == 0x050);
    assert!(offset_of!(ControlArea, guest_asid) == 0x058);
    assert!(offset_of!(ControlArea, tlb_control) == 0x05c);
    assert!(offset_of!(ControlArea, interrupt_control) == 0x060);
    assert!(offset_of!(ControlArea, interrupt_state) == 0x068);
    assert!(offset_of!(ControlArea, exit_code) == 0x070);
    assert!(offset_of!(ControlArea, exit_info1) == 0x078);
    assert!(offset_of!(ControlArea, exit_info2) == 0x080);
    assert!(offset_of!(ControlArea, exit_int_info) == 0x088);
    assert!(offset_of!(ControlArea, nested_control) == 0x090);
    assert!(offset_of!(ControlArea, avic_apic_bar) == 0x098);
    assert!(offset_of!(ControlArea, ghcb_pa) == 0x0a0);
    assert!(offset_of!(ControlArea, event_injection) == 0x0a8);
    assert!(offset_of!(ControlArea, nested_cr3) == 0x0b0);
    assert!(offset_of!(ControlArea, virtualization_extensions) == 0x0b8);
    assert!(offset_of!(ControlArea, clean_bits) == 0x0c0);
    assert!(offset_of!(ControlArea, next_rip) == 0x0c8);
    assert!(offset_of!(ControlArea, bytes_fetched) == 0x0d0);
    assert!(offset_of!(ControlArea, instruction_bytes) == 0x0d1);
};

// Appendix B, Table B-2: save area offsets (relative to the save area).
const _: () = {
    assert!(size_of::<Segment>() == 16);
    assert!(offset_of!(Segment, selector) == 0);
    assert!(offset_of!(Segment, attrib) == 2);
    assert!(offset_of!(Segment, limit) == 4);
    assert!(offset_of!(Segment, base) == 8);
    assert!(size_of::<SaveArea>() == 0xc00);
    assert!(offset_of!(SaveArea, es) == 0x000);
    assert!(offset_of!(SaveArea, cs) == 0x010);
    assert!(offset_of!(SaveArea, ss) == 0x020);
    assert!(offset_of!(SaveArea, ds) == 0x030);
    assert!(offset_of!(SaveArea, fs) == 0x040);
    assert!(offset_of!(SaveArea, gs) == 0x050);
    assert!(offset_of!(SaveArea, gdtr) == 0x060);
    assert!(offset_of!(SaveArea, ldtr) == 0x070);
    assert!(offset_of!(SaveArea, idtr) == 0x080);
    assert!(offset_of!(SaveArea, tr) == 0x090);
    assert!(offset_of!(SaveArea, cpl) == 0x0cb);
    assert!(offset_of!(SaveArea, efer) == 0x0d0);
    assert!(offset_of!(SaveArea, cr4) == 0x148);
    assert!(offset_of!(SaveArea, cr3) == 0x150);
    assert!(offset_of!(SaveArea, cr0) == 0x158);
    assert!(offset_of!(SaveArea, dr7) == 0x160);
    assert!(offset_of!(SaveArea, dr6) == 0x168);
    assert!(offset_of!(SaveArea, rflags) == 0x170);
    assert!(offset_of!(SaveArea, rip) == 0x178);
    assert!(offset_of!(SaveArea, rsp) == 0x1d8);
    assert!(offset_of!(SaveArea, s_cet) == 0x1e0);
    assert!(offset_of!(SaveArea, ssp) == 0x1e8);
    assert!(offset_of!(SaveArea, isst_addr) == 0x1f0);
    assert!(offset_of!(SaveArea, rax) == 0x1f8);
    assert!(offset_of!(SaveArea, star) == 0x200);
    assert!(offset_of!(SaveArea, lstar) == 0x208);
    assert!(offset_of!(SaveArea, cstar) == 0x210);
    assert!(offset_of!(SaveArea, sfmask) == 0x218);
    assert!(offset_of!(SaveArea, kernel_gs_base) == 0x220);
    assert!(offset_of!(SaveArea, sysenter_cs) == 0x228);
    assert!(offset_of!(SaveArea, sysenter_esp) == 0x230);
    assert!(offset_of!(SaveArea, sysenter_eip) == 0x238);
    assert!(offset_of!(SaveArea, cr2) == 0x240);
    assert!(offset_of!(SaveArea, g_pat) == 0x268);
    assert!(offset_of!(SaveArea, dbgctl) == 0x270);
    assert!(offset_of!(SaveArea, br_from) == 0x278);
    assert!(offset_of!(SaveArea, br_to) == 0x280);
    assert!(offset_of!(SaveArea, last_exception_from) == 0x288);
    assert!(offset_of!(SaveArea, last_exception_to) == 0x290);
};

// The whole block: control area at 0, save area at 0x400, one aligned page.
const _: () = {
    assert!(size_of::<Vmcb>() == 4096);
    assert!(core::mem::align_of::<Vmcb>() == 4096);
    assert!(offset_of!(Vmcb, control) == 0);
    assert!(offset_of!(Vmcb, save) == 0x400);
};

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_virt::guest_paging::{CODE32_SELECTOR, CODE64_SELECTOR, DATA_SELECTOR, Segment as GdtSegment};

    /// Byte offset of a field inside a whole VMCB, from a real instance (not `offset_of!`),
    /// as a second check of the layout the hardware reads.
    fn at(vmcb: &Vmcb, field: *const u8) -> usize {
        field as usize - vmcb as *const Vmcb as usize
    }

    #[test]
    fn absolute_offsets() {
        let v = Vmcb::zeroed();
        assert_eq!(at(&v, &v.control.exit_code as *const u64 as *const u8), 0x070);
        assert_eq!(at(&v, &v.control.next_rip as *const u64 as *const u8), 0x0c8);
        assert_eq!(at(&v, &v.control.tlb_control), 0x05c);
        assert_eq!(at(&v, &v.save.es as *const Segment as *const u8), 0x400);
        assert_eq!(at(&v, &v.save.cpl), 0x4cb);
        assert_eq!(at(&v, &v.save.efer as *const u64 as *const u8), 0x4d0);
        assert_eq!(at(&v, &v.save.rip as *const u64 as *const u8), 0x578);
        assert_eq!(at(&v, &v.save.rax as *const u64 as *const u8), 0x5f8);
        assert_eq!(at(&v, &v.save.g_pat as *const u64 as *const u8), 0x668);
        assert_eq!(v.address() % 4096, 0);
    }

    #[test]
    fn attribute_compression() {
        // 64-bit code: G, L, P, S, execute/read accessed.
        assert_eq!(compress_attributes(0xa09b), 0xa9b);
        // 32-bit code and data: G, D/B.
        assert_eq!(compress_attributes(0xc09b), 0xc9b);
        assert_eq!(compress_attributes(0xc093), 0xc93);
        // Real-mode code and data, busy TSS: the low byte only.
        assert_eq!(compress_attributes(0x009b), 0x09b);
        assert_eq!(compress_attributes(0x0093), 0x093);
        assert_eq!(compress_attributes(0x008b), 0x08b);
        // AVL (bit 12) moves to bit 8; DPL 3 stays in 6:5.
        assert_eq!(compress_attributes(0x10f3), 0x1f3);
        // Unusable: not present, whatever else is set.
        assert_eq!(compress_attributes(1 << 16), 0);
        assert_eq!(compress_attributes((1 << 16) | 0xc093), 0);
    }

    #[test]
    fn compression_matches_the_flat_gdt() {
        for selector in [CODE64_SELECTOR, CODE32_SELECTOR, DATA_SELECTOR] {
            let s = GdtSegment::flat(selector);
            assert_eq!(compress_attributes(s.vmx_access_rights()), s.svm_attrib());
        }
        assert_eq!(compress_attributes(GdtSegment::flat(0).vmx_access_rights()), 0);
    }

    #[test]
    fn exception_events() {
        assert_eq!(event::exception(13, Some(0)), 0x8000_0b0d);
        assert_eq!(event::exception(14, Some(0x1234_5678)), 0x1234_5678_8000_0b0e);
        assert_eq!(event::exception(6, None), 0x8000_0306);
    }
}
