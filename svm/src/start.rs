//! The guest's start state: the VMCB save area for a neutral [`GuestEntry`], the SVM
//! counterpart of the VMX backend's guest-state fields.
//!
//! The values satisfy VMRUN's consistency checks (APM Vol. 2, 15.5.1): EFER.SVME set,
//! CR0.CD/NW consistent, long mode only with CR0.PG, CR0.PE and CR4.PAE, and a 64-bit CS
//! with L set and D clear. Nested paging is on, so real mode and protected mode without
//! paging run directly: no paged-real-mode tricks are needed.

use crate::enable::EFER_SVME;
use crate::vmcb::{SaveArea, Segment, compress_attributes};
use bulkhead_virt::guest_paging::{CODE64_DESCRIPTOR, DATA_DESCRIPTOR, Segment as GdtSegment};
use bulkhead_virt::guest_state::{CODE32_SELECTOR, DATA_SELECTOR, EntryMode, GuestEntry};

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
/// Default PAT (APM Vol. 2, 7.8): WB, WT, UC-, UC, repeated; the guest's PAT while
/// nested paging is on.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;
/// RFLAGS with only the always-one bit 1.
const RFLAGS_DEFAULT: u64 = 0x2;
/// DR6 and DR7 at reset (APM Vol. 2, Table 14-1): no breakpoints.
const DR6_DEFAULT: u64 = 0xffff_0ff0;
const DR7_DEFAULT: u64 = 0x400;

/// Real-mode code and data (VMX-style access rights: present, S, accessed; execute/read
/// resp. read/write), and a busy TSS; compressed for the VMCB by [`compress_attributes`].
const AR_CODE16: u32 = 0x009b;
const AR_DATA16: u32 = 0x0093;
const AR_TSS_BUSY: u32 = 0x008b;

/// A segment of the flat GDT the loader writes into guest memory, with the hidden state
/// that GDT entry gives (so the VMCB agrees with a later reload of the selector).
fn flat(selector: u16) -> Segment {
    from_gdt(GdtSegment::flat(selector))
}

/// A segment the loader's GDT holds `descriptor` for at `selector`.
fn described(selector: u16, descriptor: u64) -> Segment {
    from_gdt(GdtSegment::from_descriptor(selector, descriptor))
}

fn from_gdt(s: GdtSegment) -> Segment {
    let selector = s.selector;
    Segment { selector, attrib: compress_attributes(s.vmx_access_rights()), limit: s.limit, base: s.base }
}

/// Writes the start state for `entry` into `save`: every field of the save area, so
/// nothing of a previous run survives. RAX is set from the entry too; RBX, RSI and RDI are
/// general registers the caller loads.
pub fn load(save: &mut SaveArea, entry: &GuestEntry) {
    *save = SaveArea::zeroed();
    let (code, data) = match entry.mode {
        EntryMode::Real { segment } => {
            let code = Segment {
                selector: segment,
                attrib: compress_attributes(AR_CODE16),
                limit: 0xffff,
                base: u64::from(segment) << 4,
            };
            // After INIT-SIPI only CS points at the start page; the data segments are
            // selector 0, base 0 (APM Vol. 2, Table 14-1).
            let data = Segment { selector: 0, attrib: compress_attributes(AR_DATA16), limit: 0xffff, base: 0 };
            (code, data)
        }
        EntryMode::Protected32 => (flat(CODE32_SELECTOR), flat(DATA_SELECTOR)),
        EntryMode::Long64 { selectors, .. } => {
            (described(selectors.code, CODE64_DESCRIPTOR), described(selectors.data, DATA_DESCRIPTOR))
        }
    };
    let (cr0, cr3, cr4, efer) = match entry.mode {
        EntryMode::Real { .. } => (CR0_ET | CR0_NE, 0, 0, EFER_SVME),
        EntryMode::Protected32 => (CR0_PE | CR0_ET | CR0_NE, 0, 0, EFER_SVME),
        // The guest sees EFER.SVME set here: VMRUN requires it in the guest's EFER
        // (15.5.1); CPUID never reports SVM to the guest.
        EntryMode::Long64 { cr3, .. } => {
            (CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG, cr3, CR4_PAE, EFER_LME | EFER_LMA | EFER_SVME)
        }
    };
    save.cs = code;
    save.ds = data;
    save.es = data;
    save.ss = data;
    // FS, GS, TR and LDTR are loaded by VMLOAD from this save area before every VMRUN.
    save.fs = data;
    save.gs = data;
    save.ldtr = Segment::zeroed();
    save.tr = Segment { selector: 0, attrib: compress_attributes(AR_TSS_BUSY), limit: 0xffff, base: 0 };
    save.gdtr = match entry.mode {
        EntryMode::Real { .. } => Segment { limit: 0xffff, ..Segment::zeroed() },
        _ => Segment { limit: u32::from(entry.gdt_limit), base: entry.gdt_base, ..Segment::zeroed() },
    };
    save.idtr = Segment { limit: 0xffff, ..Segment::zeroed() };
    save.cpl = 0;
    save.cr0 = cr0;
    save.cr3 = cr3;
    save.cr4 = cr4;
    save.efer = efer;
    save.g_pat = PAT_DEFAULT;
    save.dr6 = DR6_DEFAULT;
    save.dr7 = DR7_DEFAULT;
    save.rflags = RFLAGS_DEFAULT;
    save.rip = entry.rip;
    save.rsp = entry.rsp;
    save.rax = entry.rax;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_virt::guest_state::{CODE64_SELECTOR, LongModeSelectors};

    fn entry(mode: EntryMode) -> GuestEntry {
        GuestEntry {
            mode,
            rip: 0x10_0000,
            rsp: 0x8000,
            gdt_base: 0x5000,
            gdt_limit: 31,
            rax: 0x2bad_b002,
            rbx: 0x9000,
            rdi: 0,
            rsi: 0x7_0000,
        }
    }

    fn loaded(mode: EntryMode) -> SaveArea {
        let mut save = SaveArea::zeroed();
        save.star = 0xdead; // must not survive
        load(&mut save, &entry(mode));
        save
    }

    #[test]
    fn real_mode() {
        let s = loaded(EntryMode::Real { segment: 0x9a });
        assert_eq!(s.cs, Segment { selector: 0x9a, attrib: 0x9b, limit: 0xffff, base: 0x9a0 });
        for d in [s.ds, s.es, s.ss, s.fs, s.gs] {
            assert_eq!(d, Segment { selector: 0, attrib: 0x93, limit: 0xffff, base: 0 });
        }
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), 0);
        assert_eq!(s.efer, EFER_SVME);
        assert_eq!((s.gdtr.base, s.gdtr.limit), (0, 0xffff));
        assert_eq!(s.star, 0);
    }

    #[test]
    fn protected_mode() {
        let s = loaded(EntryMode::Protected32);
        assert_eq!(s.cs, Segment { selector: CODE32_SELECTOR, attrib: 0xc9b, limit: 0xffff_ffff, base: 0 });
        assert_eq!(s.ds, Segment { selector: DATA_SELECTOR, attrib: 0xc93, limit: 0xffff_ffff, base: 0 });
        assert_eq!(s.cr0, CR0_PE | CR0_ET | CR0_NE);
        assert_eq!(s.efer, EFER_SVME);
        assert_eq!((s.gdtr.base, s.gdtr.limit), (0x5000, 31));
        assert_eq!(s.rax, 0x2bad_b002);
    }

    #[test]
    fn long_mode() {
        let s = loaded(EntryMode::Long64 { cr3: 0x7000, selectors: LongModeSelectors::FLAT });
        // L set, D clear: a 64-bit code segment VMRUN accepts.
        assert_eq!(s.cs, Segment { selector: CODE64_SELECTOR, attrib: 0xa9b, limit: 0xffff_ffff, base: 0 });
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG | CR0_WP), CR0_PE | CR0_PG | CR0_WP);
        assert_eq!((s.cr3, s.cr4), (0x7000, CR4_PAE));
        assert_eq!(s.efer, EFER_LME | EFER_LMA | EFER_SVME);
    }

    #[test]
    fn long_mode_with_linux_selectors() {
        let s = loaded(EntryMode::Long64 { cr3: 0x7000, selectors: LongModeSelectors::LINUX_BOOT });
        assert_eq!(s.cs, Segment { selector: 0x10, attrib: 0xa9b, limit: 0xffff_ffff, base: 0 });
        for d in [s.ds, s.es, s.ss, s.fs, s.gs] {
            assert_eq!(d, Segment { selector: 0x18, attrib: 0xc93, limit: 0xffff_ffff, base: 0 });
        }
    }

    #[test]
    fn common_state() {
        for mode in [
            EntryMode::Real { segment: 0 },
            EntryMode::Protected32,
            EntryMode::Long64 { cr3: 0x7000, selectors: LongModeSelectors::FLAT },
        ] {
            let s = loaded(mode);
            assert_eq!((s.rip, s.rsp, s.rflags), (0x10_0000, 0x8000, 2));
            assert_eq!((s.dr6, s.dr7, s.g_pat, s.cpl), (DR6_DEFAULT, DR7_DEFAULT, PAT_DEFAULT, 0));
            assert_eq!(s.tr.attrib, 0x8b);
            assert_eq!(s.ldtr, Segment::zeroed());
            assert_eq!((s.idtr.base, s.idtr.limit), (0, 0xffff));
            assert_eq!(s.efer & EFER_SVME, EFER_SVME);
        }
    }
}
