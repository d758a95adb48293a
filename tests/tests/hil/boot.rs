//! The hypervisor boots on every emulated machine and firmware, and reports what it found.

use bulkhead_tests::{Emulator, Run};

fn boots_on(emulator: Emulator) {
    // What each emulated CPU offers (see shared emulator notes): Bochs corei7_skylake_x is
    // VT-x with EPT, unrestricted guest, VPID and x2APIC; QEMU TCG `-cpu max` is SVM with
    // NPT, 16 ASIDs, no NRIPS and no x2APIC; Bochs ryzen is SVM with NRIPS and no x2APIC.
    let capabilities = match emulator {
        Emulator::Bochs => {
            "capabilities: vendor=intel vmx=true svm=false ept_npt=true unrestricted_guest=true vpid=true \
             apic_register_virtualization=true virtual_interrupt_delivery=true posted_interrupts=false x2apic=true"
        }
        Emulator::BochsRyzen => {
            "capabilities: vendor=amd vmx=false svm=true ept_npt=true unrestricted_guest=true vpid=false \
             apic_register_virtualization=false virtual_interrupt_delivery=false posted_interrupts=false \
             x2apic=false nrips=true asids=32768"
        }
        Emulator::QemuBios | Emulator::QemuUefi | Emulator::QemuEpyc => {
            "capabilities: vendor=amd vmx=false svm=true ept_npt=true unrestricted_guest=true vpid=false \
             apic_register_virtualization=false virtual_interrupt_delivery=false posted_interrupts=false \
             x2apic=false nrips=false asids=16"
        }
    };
    let backend = if emulator.is_vmx() {
        "backend: vmx (Intel VT-x, EPT)"
    } else {
        "backend: svm (AMD-V, NPT) (partitions' x2APIC emulated on the xAPIC)"
    };
    Run::new(emulator)
        .cpus(2)
        .expect(format!("[cpu0 INFO ] {capabilities}"))
        .expect(backend)
        .expect("memory map: ")
        .expect("paging: audit ok")
        .expect("board check: ok")
        // The kernel saw the command line GRUB was given.
        .expect("command line: exit=emulator")
        .expect("INFO ] run ended: success")
        .execute()
        .assert_passed();
}

#[test]
fn boot_qemu_bios() {
    boots_on(Emulator::QemuBios);
}

#[test]
fn boot_qemu_epyc() {
    boots_on(Emulator::QemuEpyc);
}

#[test]
fn boot_qemu_uefi() {
    boots_on(Emulator::QemuUefi);
}

#[test]
fn boot_bochs() {
    boots_on(Emulator::Bochs);
}

#[test]
fn boot_bochs_ryzen() {
    boots_on(Emulator::BochsRyzen);
}
