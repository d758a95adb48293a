//! DMA isolation with the IOMMU (QEMU q35 with `-device intel-iommu`, SVM backend): QEMU's
//! `edu` device is assigned to partition `dma` (tests/configs/qemu-dma.toml), whose payload
//! (guests/src/bin/test-dma.rs) drives its DMA engine. DMA within its own memory works;
//! DMA aimed at the witness's canary and at the hypervisor image is blocked by the VT-d
//! unit: the fault is logged with the requester's BDF and counted for the partition, and
//! the witness's canary stays intact (it reports FAIL otherwise).

use bulkhead_tests::{Emulator, Run};

const SYSTEM: &str = "tests/configs/qemu-dma.toml";
/// The witness's canary: its memory starts at host 0x1200000 (first-fit placement, see
/// the system file) and the canary lies at guest 0x102000 (the witness prints it).
const WITNESS_CANARY_HOST: u64 = 0x130_2000;
/// The hypervisor image starts here (kernel/linker.ld `KERNEL_BASE`), outside the dma
/// partition's 2 MiB.
const HYPERVISOR: u64 = 0x20_0000;
/// Witness cycles: the three DMAs (100 ms of QEMU time each) are over long before.
const CYCLES: u64 = 600_000_000;

fn dma_run(iommu: &str) -> Run {
    Run::new(Emulator::QemuBios)
        .cpus(2)
        .config(SYSTEM)
        // The IOMMU before the PCI devices it translates (docs/devices.md).
        .qemu_args(["-device", iommu, "-device", "edu,addr=04.0"])
        .switch(format!("witness:cycles={CYCLES}"))
        .switch(format!("dma:neighbour={WITNESS_CANARY_HOST:#x}"))
        .switch(format!("dma:hypervisor={HYPERVISOR:#x}"))
}

/// QEMU's default unit: 39-bit guest addresses, 3-level tables.
#[test]
fn dma_edu_confined_to_its_partition_by_the_iommu() {
    confined("intel-iommu", "39-bit (3-level)");
}

/// `aw-bits=48`: the unit offers 4-level tables, which the kernel then uses.
#[test]
fn dma_edu_confined_with_four_level_tables() {
    confined("intel-iommu,aw-bits=48", "48-bit (4-level)");
}

fn confined(iommu: &str, tables: &str) {
    let report = dma_run(iommu)
        .expect("iommu dmar0: 00:04.0 (edu) in the domain of partition dma")
        .expect(format!("iommu dmar0 at 0xfed90000: DMA remapping on: {tables} tables, 1 function(s) in domains"))
        .expect("[witness] witness: canary at 0x102000")
        .expect("[dma] dma: round trip ok (2048 bytes")
        .expect(format!("[dma] dma: write to neighbour at {WITNESS_CANARY_HOST:#x} issued (device done)"))
        .expect(format!("[dma] dma: write to hypervisor at {HYPERVISOR:#x} issued (device done)"))
        .expect(format!(
            "iommu dmar0: DMA fault: device 00:04.0 (edu, partition dma) write at {WITNESS_CANARY_HOST:#x} blocked: reason 0x05"
        ))
        .expect(format!(
            "iommu dmar0: DMA fault: device 00:04.0 (edu, partition dma) write at {HYPERVISOR:#x} blocked: reason 0x05"
        ))
        .expect(format!("[witness] witness: alive, cycle {CYCLES}, canary intact"))
        .expect("partition witness: reports PASS")
        .expect("partition dma: iommu: DMA faults 2 (fault event NMIs on its cores 2)")
        .forbid("round trip FAILED")
        .forbid("canary CHANGED")
        .forbid("TIMEOUT")
        .expect("partition dma: nmis: stop signals 0, unexpected 0")
        .forbid("unexpected NMI")
        .forbid("partition dma: fault")
        .execute();
    report.assert_passed();
}

/// The same board without `-device intel-iommu`: the unit cannot be enabled, so the edu
/// function is not assigned (its partition does not start) while the witness runs on.
#[test]
fn dma_function_refused_when_its_iommu_is_missing() {
    let report = Run::new(Emulator::QemuBios)
        .cpus(2)
        .config(SYSTEM)
        .qemu_args(["-device", "edu,addr=04.0"])
        .switch("witness:cycles=1000000")
        .allow_errors()
        .expect("iommu dmar0 at 0xfed90000: not enabled: no VT-d unit answers at this address")
        .expect("partition dma: PCI device edu: no enabled IOMMU confines its DMA")
        .expect("partition witness: reports PASS")
        .forbid("[dma] dma:")
        .forbid("DMA remapping on")
        .execute();
    report.assert_passed();
}

/// `dma = "unprotected"` without the IOMMU: the function is assigned unconfined, its DMA
/// works with host-physical addresses (the partition's memory starts at host 0x1000000),
/// and the boot log warns once for the partition.
#[test]
fn dma_unprotected_function_assigned_with_a_warning() {
    let report = Run::new(Emulator::QemuBios)
        .cpus(2)
        .config("tests/configs/qemu-dma-unprotected.toml")
        .qemu_args(["-device", "edu,addr=04.0"])
        .switch(format!("witness:cycles={CYCLES}"))
        .switch("dma:offset=0x1000000")
        .allow_errors()
        .expect("iommu dmar0 at 0xfed90000: not enabled")
        .expect("partition dma: dma = \"unprotected\": 1 PCI function(s) not confined by an IOMMU")
        .expect("[dma] dma: round trip ok (2048 bytes")
        .expect("partition witness: reports PASS")
        .forbid("no enabled IOMMU confines")
        .execute();
    report.assert_passed();
    let warnings = report.lines.iter().filter(|l| l.to_string().contains("dma = \"unprotected\"")).count();
    assert_eq!(warnings, 1, "one warning for the partition:\n{}", report.diagnostic());
}
