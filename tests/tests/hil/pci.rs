//! PCI configuration space filtered per partition (docs/devices.md, "PCI configuration
//! space"), on QEMU (AMD SVM), whose `edu` teaching device is a PCI function with a memory
//! BAR and MSI: `owner` owns edu at 00:04.0 and enumerates exactly that function through
//! ports 0xCF8/0xCFC and through the ECAM window, reads edu's ID register through BAR0,
//! sizes the BAR, has a relocation and the expansion ROM refused, walks the capability
//! list, and receives edu's MSI on its own core, also when it aims the message at the
//! other partition's core (retargeted); `other` sees no function at all. The guest is
//! `guests/src/bin/test-pci.rs`; the expectations are the architectural answers of a
//! function as the board declares it (BAR0 1 MiB at 0xfea00000, edu's ID 0x010000ed).

use bulkhead_tests::{Emulator, Run};

fn edu(system: &str) -> Run {
    Run::new(Emulator::QemuBios)
        .cpus(3)
        .config(system)
        .qemu_args(["-device", "edu,addr=0x4"])
        .expect("dma = \"unprotected\": 1 PCI function(s) not confined by an IOMMU")
        .expect("pci: edu (00:04.0, 0x11e81234) assigned to owner")
        .expect("[owner] pci: cf8 scan: 00:04.0 id 0x11e81234")
        .expect("[owner] pci: cf8 scan: 1 function(s)")
        .expect("[owner] pci: ecam scan: 00:04.0 id 0x11e81234")
        .expect("[owner] pci: ecam scan: 1 function(s)")
        .expect("[owner] pci: ecam narrow reads: vendor 0x1234, header type 0x00")
        .expect("[owner] pci: BAR0 0xfea00000, edu ID register 0x010000ed")
        .expect("[owner] pci: BAR0 size 0x100000, restored 0xfea00000")
        .expect("[owner] pci: BAR0 relocation to 0xe0000000: reads 0xfea00000")
        .expect("partition owner: edu BAR0 write 0xe0000000 refused: relocation outside the board's declared window")
        .expect("[owner] pci: ROM BAR reads 0x0")
        .expect("[other] pci: cf8 scan: 0 function(s)")
        .expect("[other] pci: other sees 0 function(s)")
        .expect("[owner] pci: all checks passed")
        .expect("partition owner: reports PASS")
        .forbid("pci: FAIL")
        .forbid("[other] pci: cf8 scan: 00:")
        .forbid(": fault #")
}

#[test]
fn pci_owner_sees_only_its_function_with_msi_checked() {
    edu("tests/configs/qemu-pci.toml")
        .expect("[owner] pci: capabilities [5] (status bit 1)")
        .expect("[owner] pci: MSI to own APIC ID 1 vector 0x50: arrived (address reads 0xfee01000)")
        .expect("[owner] pci: MSI aimed at APIC ID 2 vector 0x51: arrived here (address reads 0xfee02000)")
        .expect("partition owner: edu MSI to APIC ID 2 (not one of its cores, or logical mode) retargeted to APIC ID 1")
        .execute()
        .assert_passed();
}

#[test]
fn pci_hidden_capability_is_absent_from_the_list() {
    edu("tests/configs/qemu-pci-hidden.toml")
        .expect("[owner] pci: capabilities [] (status bit 0)")
        .expect("[owner] pci: no MSI capability")
        .execute()
        .assert_passed();
}

#[test]
fn pci_function_whose_bar_differs_from_the_board_is_refused() {
    Run::new(Emulator::QemuBios)
        .cpus(3)
        .config("tests/configs/qemu-pci-wrong-bar.toml")
        .qemu_args(["-device", "edu,addr=0x4"])
        .allow_errors()
        .expect(
            "pci: edu: BAR0 is memory at 0xfea00000 in hardware, the board file says memory at 0xfeb00000; not assigned",
        )
        // (`partition owner: ... not assigned` follows when core 1 gets to it, which may be
        // after `other`'s verdict has ended the run.)
        .expect("[other] pci: other sees 0 function(s)")
        .expect("partition other: reports PASS")
        .forbid("assigned to owner")
        .forbid("[owner]")
        .execute()
        .assert_passed();
}
