//! What the processor offers a hypervisor, decoded from CPUID leaves and the VMX capability
//! MSRs.
//!
//! Collecting the raw values needs privileged instructions (the kernel does that); decoding
//! them is plain logic, tested here on the host. Bit positions: Intel SDM Vol. 3 Appendix A
//! (VMX capability MSRs) and Vol. 2 CPUID; AMD APM Vol. 3 Appendix E (CPUID 8000_000A).

/// Processor vendor, from CPUID leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Intel,
    Amd,
    Other,
}

impl Vendor {
    /// Decodes the vendor string held in EBX, EDX, ECX of CPUID leaf 0.
    pub fn from_leaf0(ebx: u32, edx: u32, ecx: u32) -> Self {
        let mut s = [0u8; 12];
        s[0..4].copy_from_slice(&ebx.to_le_bytes());
        s[4..8].copy_from_slice(&edx.to_le_bytes());
        s[8..12].copy_from_slice(&ecx.to_le_bytes());
        match &s {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" => Vendor::Amd,
            _ => Vendor::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Vendor::Intel => "intel",
            Vendor::Amd => "amd",
            Vendor::Other => "other",
        }
    }
}

/// The VMX capability MSRs that matter for the features we report (each read only when
/// CPUID says VMX exists: reading them otherwise raises #GP).
#[derive(Debug, Clone, Copy, Default)]
pub struct VmxMsrs {
    /// IA32_VMX_BASIC (0x480).
    pub basic: u64,
    /// IA32_VMX_TRUE_PINBASED_CTLS (0x48D) when basic bit 55 is set, else IA32_VMX_PINBASED_CTLS (0x481).
    pub pinbased: u64,
    /// IA32_VMX_TRUE_PROCBASED_CTLS (0x48E) when basic bit 55 is set, else IA32_VMX_PROCBASED_CTLS (0x482).
    pub procbased: u64,
    /// IA32_VMX_PROCBASED_CTLS2 (0x48B); 0 when the primary controls cannot enable it.
    pub procbased2: u64,
}

pub mod msr {
    pub const IA32_VMX_BASIC: u32 = 0x480;
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
}

impl VmxMsrs {
    /// IA32_VMX_BASIC bit 55: the TRUE_* control MSRs exist.
    pub fn has_true_controls(basic: u64) -> bool {
        basic & (1 << 55) != 0
    }
}

/// Raw CPUID values needed to decide the capabilities.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCpuid {
    /// Leaf 0: EBX, EDX, ECX (vendor string).
    pub vendor: [u32; 3],
    /// Leaf 1 ECX.
    pub leaf1_ecx: u32,
    /// Leaf 0x8000_0001 ECX and EDX (0 when the leaf does not exist).
    pub ext1_ecx: u32,
    pub ext1_edx: u32,
    /// Leaf 0x8000_000A EBX (number of ASIDs) and EDX (SVM features); 0 when absent.
    pub svm_ebx: u32,
    pub svm_edx: u32,
}

/// Leaf 1 ECX bits.
const LEAF1_ECX_VMX: u32 = 1 << 5;
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// Leaf 0x8000_0001 ECX bit 2: SVM.
const EXT1_ECX_SVM: u32 = 1 << 2;
/// Leaf 0x8000_0001 EDX bits.
const EXT1_EDX_NX: u32 = 1 << 20;
const EXT1_EDX_PAGE1GB: u32 = 1 << 26;
/// Leaf 0x8000_000A EDX bits.
const SVM_EDX_NP: u32 = 1 << 0;
const SVM_EDX_NRIPS: u32 = 1 << 3;

/// Pin-based control bit 7: process posted interrupts.
const PIN_POSTED_INTERRUPTS: u32 = 1 << 7;
/// Primary processor-based control bit 31: activate secondary controls.
const PROC_SECONDARY: u32 = 1 << 31;
/// Secondary processor-based control bits.
const PROC2_EPT: u32 = 1 << 1;
const PROC2_VPID: u32 = 1 << 5;
const PROC2_UNRESTRICTED_GUEST: u32 = 1 << 7;
const PROC2_APIC_REGISTER_VIRT: u32 = 1 << 8;
const PROC2_VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;

/// A control may be set to 1 when its bit is set in the MSR's upper half ("allowed-1").
fn allowed1(msr: u64) -> u32 {
    (msr >> 32) as u32
}

/// The features later layers build on, decided once at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub vmx: bool,
    pub svm: bool,
    /// EPT (Intel) or NPT (AMD): second-level address translation.
    pub second_level_paging: bool,
    pub unrestricted_guest: bool,
    pub vpid: bool,
    pub apic_register_virtualization: bool,
    pub virtual_interrupt_delivery: bool,
    pub posted_interrupts: bool,
    pub x2apic: bool,
    pub nrips: bool,
    /// Number of SVM address-space IDs (0 without SVM).
    pub asid_count: u32,
    pub nx: bool,
    pub page_1gb: bool,
}

impl Capabilities {
    /// Decodes CPUID and (when VMX exists) the VMX capability MSRs.
    pub fn decode(cpuid: &RawCpuid, vmx_msrs: Option<&VmxMsrs>) -> Self {
        let vmx = cpuid.leaf1_ecx & LEAF1_ECX_VMX != 0;
        let svm = cpuid.ext1_ecx & EXT1_ECX_SVM != 0;
        let mut caps = Capabilities {
            vmx,
            svm,
            x2apic: cpuid.leaf1_ecx & LEAF1_ECX_X2APIC != 0,
            nx: cpuid.ext1_edx & EXT1_EDX_NX != 0,
            page_1gb: cpuid.ext1_edx & EXT1_EDX_PAGE1GB != 0,
            ..Default::default()
        };
        if let (true, Some(m)) = (vmx, vmx_msrs) {
            let proc2 = if allowed1(m.procbased) & PROC_SECONDARY != 0 { allowed1(m.procbased2) } else { 0 };
            caps.second_level_paging = proc2 & PROC2_EPT != 0;
            caps.vpid = proc2 & PROC2_VPID != 0;
            caps.unrestricted_guest = proc2 & PROC2_UNRESTRICTED_GUEST != 0;
            caps.apic_register_virtualization = proc2 & PROC2_APIC_REGISTER_VIRT != 0;
            caps.virtual_interrupt_delivery = proc2 & PROC2_VIRTUAL_INTERRUPT_DELIVERY != 0;
            caps.posted_interrupts = allowed1(m.pinbased) & PIN_POSTED_INTERRUPTS != 0;
        }
        if svm {
            caps.second_level_paging = cpuid.svm_edx & SVM_EDX_NP != 0;
            caps.nrips = cpuid.svm_edx & SVM_EDX_NRIPS != 0;
            caps.asid_count = cpuid.svm_ebx;
            // SVM guests may always start in real mode: the equivalent of unrestricted guest.
            caps.unrestricted_guest = caps.second_level_paging;
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[u8; 12]) -> [u32; 3] {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        [w(0), w(4), w(8)]
    }

    #[test]
    fn vendor_strings() {
        let [b, d, c] = words(b"GenuineIntel");
        assert_eq!(Vendor::from_leaf0(b, d, c), Vendor::Intel);
        let [b, d, c] = words(b"AuthenticAMD");
        assert_eq!(Vendor::from_leaf0(b, d, c), Vendor::Amd);
        assert_eq!(Vendor::from_leaf0(0, 0, 0), Vendor::Other);
    }

    /// Values read in Bochs 2.7 `corei7_skylake_x` (see shared reference notes):
    /// pin allowed-1 = 0x7f, secondary allowed-1 = 0x2177fff.
    #[test]
    fn bochs_skylake_x() {
        let cpuid = RawCpuid { leaf1_ecx: LEAF1_ECX_VMX | LEAF1_ECX_X2APIC, ..Default::default() };
        let msrs = VmxMsrs {
            basic: 0x00d8_1000_0000_002b,
            pinbased: 0x7f_0000_0016,
            procbased: 0xfff9_fffe_0401_e172,
            procbased2: 0x0217_7fff_0000_0000,
        };
        assert!(VmxMsrs::has_true_controls(msrs.basic));
        let caps = Capabilities::decode(&cpuid, Some(&msrs));
        assert!(caps.vmx && !caps.svm && caps.x2apic);
        assert!(caps.second_level_paging && caps.unrestricted_guest && caps.vpid);
        assert!(caps.apic_register_virtualization && caps.virtual_interrupt_delivery);
        assert!(!caps.posted_interrupts, "pin allowed-1 0x7f has no bit 7");
        assert_eq!(caps.asid_count, 0);
    }

    #[test]
    fn secondary_controls_ignored_when_primary_cannot_enable_them() {
        let cpuid = RawCpuid { leaf1_ecx: LEAF1_ECX_VMX, ..Default::default() };
        let msrs = VmxMsrs { procbased: 0x7fff_ffff_0000_0000, procbased2: u64::MAX, ..Default::default() };
        let caps = Capabilities::decode(&cpuid, Some(&msrs));
        assert!(!caps.second_level_paging && !caps.vpid && !caps.unrestricted_guest);
    }

    #[test]
    fn posted_interrupts_from_pin_controls() {
        let cpuid = RawCpuid { leaf1_ecx: LEAF1_ECX_VMX, ..Default::default() };
        let msrs = VmxMsrs { pinbased: 0xff_0000_0000, ..Default::default() };
        assert!(Capabilities::decode(&cpuid, Some(&msrs)).posted_interrupts);
    }

    /// QEMU 7.2 TCG `-cpu max`: 8000000A EDX=0x10010001 (NP, no NRIPS), 16 ASIDs, no x2APIC.
    #[test]
    fn qemu_tcg_svm() {
        let cpuid = RawCpuid {
            ext1_ecx: EXT1_ECX_SVM,
            ext1_edx: EXT1_EDX_NX | EXT1_EDX_PAGE1GB,
            svm_ebx: 16,
            svm_edx: 0x1001_0001,
            ..Default::default()
        };
        let caps = Capabilities::decode(&cpuid, None);
        assert!(caps.svm && !caps.vmx && caps.second_level_paging && !caps.nrips);
        assert!(!caps.x2apic && caps.nx && caps.page_1gb);
        assert_eq!(caps.asid_count, 16);
    }

    #[test]
    fn vmx_msrs_ignored_without_vmx_cpuid_bit() {
        let msrs = VmxMsrs { procbased: u64::MAX, procbased2: u64::MAX, pinbased: u64::MAX, basic: 0 };
        let caps = Capabilities::decode(&RawCpuid::default(), Some(&msrs));
        assert_eq!(caps, Capabilities::default());
    }
}
