//! Turning SVM on for one core (APM Vol. 2, 15.4 "Enabling SVM"): check that the CPU has
//! SVM and the firmware left it enabled, read the SVM features, set EFER.SVME, give the
//! core its host save area and clear GIF for good.

use crate::Page;
use crate::world_switch;
use core::arch::x86_64::__cpuid;
use x86_64::registers::model_specific::Msr;

/// EFER (APM Vol. 2, 3.1.7); bit 12 enables SVM.
const EFER: u32 = 0xc000_0080;
pub const EFER_SVME: u64 = 1 << 12;
/// VM_CR (15.30.1): bit 3 LOCK (SVMDIS can no longer be written), bit 4 SVMDIS.
const VM_CR: u32 = 0xc001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;
/// VM_HSAVE_PA (15.30.4): physical address of the host save area VMRUN writes.
const VM_HSAVE_PA: u32 = 0xc001_0117;

const CPUID_EXTENDED_MAX: u32 = 0x8000_0000;
const CPUID_EXTENDED_FEATURES: u32 = 0x8000_0001;
/// CPUID 0x8000_0001 ECX bit 2: SVM.
const ECX_SVM: u32 = 1 << 2;
/// CPUID 0x8000_000A: SVM revision (EAX), number of ASIDs (EBX), features (EDX).
const CPUID_SVM: u32 = 0x8000_000a;

/// Why SVM cannot be used on this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableError {
    /// CPUID reports no SVM (not an AMD-V CPU, or a hypervisor below hides it).
    NotSupported,
    /// VM_CR.SVMDIS is set: the firmware disabled SVM. `unlockable` says whether the CPU
    /// supports unlocking it with a key (CPUID 0x8000_000A EDX bit 2, SVML; 15.4).
    DisabledByFirmware { unlockable: bool },
    /// A feature the backend cannot do without is missing (its name).
    MissingFeature(&'static str),
}

/// What CPUID 0x8000_000A says about this CPU's SVM (15.4 and the CPUID reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// SVM revision (EAX 7:0).
    pub revision: u8,
    /// Number of ASIDs (EBX); valid guest ASIDs are 1 to `asids - 1`.
    pub asids: u32,
    /// Nested paging (EDX bit 0).
    pub nested_paging: bool,
    /// SVM lock: VM_CR.SVMDIS can be unlocked with a key (EDX bit 2).
    pub svm_lock: bool,
    /// The next RIP is saved in the VMCB on instruction intercepts (EDX bit 3, NRIPS).
    pub nrip_save: bool,
    /// VMCB clean bits (EDX bit 5).
    pub vmcb_clean: bool,
    /// TLB_CONTROL may flush a single ASID (EDX bit 6, FlushByAsid).
    pub flush_by_asid: bool,
    /// Decode assists (EDX bit 7).
    pub decode_assists: bool,
    /// Virtualized GIF (EDX bit 16).
    pub vgif: bool,
    /// The whole of EDX, for what is not named here.
    pub edx: u32,
}

impl Features {
    /// Decodes CPUID 0x8000_000A.
    pub const fn from_cpuid(eax: u32, ebx: u32, edx: u32) -> Self {
        const fn bit(edx: u32, n: u32) -> bool {
            edx & (1 << n) != 0
        }
        Features {
            revision: eax as u8,
            asids: ebx,
            nested_paging: bit(edx, 0),
            svm_lock: bit(edx, 2),
            nrip_save: bit(edx, 3),
            vmcb_clean: bit(edx, 5),
            flush_by_asid: bit(edx, 6),
            decode_assists: bit(edx, 7),
            vgif: bit(edx, 16),
            edx,
        }
    }
}

/// Checks, without changing anything, whether this core can run SVM guests, and with
/// which features (the APM's recipe in 15.4: CPUID first, then VM_CR.SVMDIS).
///
/// `read_msr` is the caller's fault-tolerant RDMSR (`None` when the read raised #GP).
/// Every AMD CPU with SVM has VM_CR (15.30.1), but an emulator may not (Bochs 2.7's
/// `ryzen` faults on it): an absent VM_CR cannot hold SVMDIS, so it reads as 0.
pub fn probe(read_msr: fn(u32) -> Option<u64>) -> Result<Features, EnableError> {
    // The extended leaves are read only after the maximum extended leaf says they exist.
    if __cpuid(CPUID_EXTENDED_MAX).eax < CPUID_SVM {
        return Err(EnableError::NotSupported);
    }
    if __cpuid(CPUID_EXTENDED_FEATURES).ecx & ECX_SVM == 0 {
        return Err(EnableError::NotSupported);
    }
    let leaf = __cpuid(CPUID_SVM);
    let features = Features::from_cpuid(leaf.eax, leaf.ebx, leaf.edx);
    let vm_cr = read_msr(VM_CR).unwrap_or(0);
    check(vm_cr, &features)?;
    Ok(features)
}

/// The firmware and feature checks, over the values read (pure, for the tests).
fn check(vm_cr: u64, features: &Features) -> Result<(), EnableError> {
    if vm_cr & VM_CR_SVMDIS != 0 {
        // Even with VM_CR.LOCK clear, when the MSR could be rewritten, SVMDIS is the
        // firmware's decision (15.4): it is reported, not overridden.
        return Err(EnableError::DisabledByFirmware { unlockable: features.svm_lock });
    }
    if !features.nested_paging {
        return Err(EnableError::MissingFeature("nested paging"));
    }
    // ASID 0 is the host's: a guest needs at least one more.
    if features.asids < 2 {
        return Err(EnableError::MissingFeature("guest ASIDs"));
    }
    Ok(())
}

/// Turns SVM on for this core: EFER.SVME, `host_save` as its host save area
/// (VM_HSAVE_PA), and CLGI, after which the host runs with GIF = 0 (see the crate
/// documentation: NMIs to this core are held pending until the next VMRUN).
///
/// # Safety
/// `host_save` must belong to this core and stay untouched by software while SVM is on
/// (the processor writes the host state into it at every VMRUN; its format is not
/// architectural, 15.30.4). Call it once per core, with interrupts disabled. `read_msr`
/// as in [`probe`].
pub unsafe fn enable(host_save: &'static mut Page, read_msr: fn(u32) -> Option<u64>) -> Result<Features, EnableError> {
    let features = probe(read_msr)?;
    // SAFETY: SVM is present and not disabled (`probe`); setting SVME only makes the SVM
    // instructions legal and changes nothing the kernel relies on.
    unsafe {
        let mut efer = Msr::new(EFER);
        let value = efer.read();
        efer.write(value | EFER_SVME);
    }
    // SAFETY: a 4 KiB-aligned page reserved for this core's host save area (the caller's
    // contract); the low 12 bits of VM_HSAVE_PA must be zero, which the alignment gives.
    unsafe { Msr::new(VM_HSAVE_PA).write(host_save.address()) };
    // SAFETY: EFER.SVME is set, so CLGI is legal; GIF = 0 holds NMIs and interrupts pending
    // while the host runs, which is the design (crate documentation).
    unsafe { world_switch::clgi() };
    Ok(features)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_from_cpuid() {
        // QEMU 7.2 TCG: revision 1, 16 ASIDs, NPT | VGIF | SVME_ADDR_CHK.
        let f = Features::from_cpuid(1, 16, (1 << 0) | (1 << 16) | (1 << 28));
        assert_eq!(f.revision, 1);
        assert_eq!(f.asids, 16);
        assert!(f.nested_paging && f.vgif);
        assert!(!f.nrip_save && !f.flush_by_asid && !f.decode_assists && !f.vmcb_clean && !f.svm_lock);
        // A Zen CPU: NP, LbrVirt, SVML, NRIPS, TscRate, VmcbClean, FlushByAsid, DecodeAssists.
        let f = Features::from_cpuid(1, 0x8000, 0xff);
        assert!(f.nested_paging && f.svm_lock && f.nrip_save && f.vmcb_clean && f.flush_by_asid && f.decode_assists);
    }

    #[test]
    fn firmware_and_feature_checks() {
        let qemu = Features::from_cpuid(1, 16, 1);
        assert_eq!(check(0, &qemu), Ok(()));
        assert_eq!(check(VM_CR_SVMDIS | (1 << 3), &qemu), Err(EnableError::DisabledByFirmware { unlockable: false }));
        let lockable = Features::from_cpuid(1, 16, 1 | (1 << 2));
        assert_eq!(check(VM_CR_SVMDIS, &lockable), Err(EnableError::DisabledByFirmware { unlockable: true }));
        assert_eq!(check(0, &Features::from_cpuid(1, 16, 0)), Err(EnableError::MissingFeature("nested paging")));
        assert_eq!(check(0, &Features::from_cpuid(1, 1, 1)), Err(EnableError::MissingFeature("guest ASIDs")));
    }
}
