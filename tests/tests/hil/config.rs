//! The compiled configuration: summarised at boot, and checked against the machine.

use bulkhead_tests::{Emulator, Outcome, Run};

/// The demo system's tables reach the kernel intact: names, cores, placement, policies,
/// connections and shared memory as `board/systems/demo.toml` says (host bases are the
/// configuration tool's first-fit placement above the hypervisor's 16 MiB).
#[test]
fn demo_config_summary_at_boot() {
    Run::new(Emulator::QemuBios)
        .cpus(2)
        .expect("config: system demo on board qemu-q35: 2 cpus, 2 partitions, 2 connections, 1 shared regions")
        .expect("config: hypervisor reserves [0x100000, 0x1000000)")
        .expect("config: partition 0 control: cores [1], 16384 KiB in 1 regions, payload elf control, 0 devices, on fault restart (max restarts 3), watchdog none, interface hyperv")
        .expect("config:   guest [0x0, 0x1000000) -> host [0x1000000, 0x2000000) r=true w=true x=true large=true")
        .expect("config: partition 1 telemetry: cores [0], 16384 KiB in 1 regions, payload elf telemetry, 0 devices, on fault halt (max restarts 0), watchdog none, interface hyperv")
        .expect("config:   guest [0x0, 0x1000000) -> host [0x2000000, 0x3000000)")
        .expect("config: connection 1: control -> telemetry on sint 2 (message, queue depth 16)")
        .expect("config: connection 2: telemetry -> control on sint 3 (event, flag 0)")
        .expect("config: shared memory status: host [0x3000000, 0x3001000), 2 sharers")
        // Both payloads arrived as boot modules under their partitions' names.
        .expect("INFO ]   module [0x")
        .expect(") control")
        .expect(") telemetry")
        .expect("board check: ok, machine matches board qemu-q35 (2 cpus, 2 RAM ranges)")
        .execute()
        .assert_passed();
}

/// A configuration for a 4-CPU board booted on a 2-CPU machine: the kernel names each
/// missing CPU, starts no partition, and the run fails. It runs on Bochs (VT-x), where
/// the same partitions start when the board matches (see the isolation tests).
#[test]
fn board_mismatch_refuses_to_start_partitions() {
    let report = Run::new(Emulator::Bochs).cpus(2).config("tests/configs/bochs-4cpu.toml").allow_errors().execute();
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "a mismatched board must fail the run:\n{}",
        report.diagnostic()
    );
    for line in [
        "board check: core 2 (apic_id 2) is configured but this machine has no such cpu",
        "board check: core 3 (apic_id 3) is configured but this machine has no such cpu",
        "board check failed: 2 differences from board bochs-pc-4cpu; no partition will be started",
        "run ended: failure: this machine does not match the compiled board",
    ] {
        assert!(report.contains(line), "missing `{line}`:\n{}", report.diagnostic());
    }
    for never in ["board check: ok", "starting on cpu", "waits for INIT/SIPI", "] witness:", "] attacker:"] {
        assert!(!report.contains(never), "`{never}` with a mismatched board:\n{}", report.diagnostic());
    }
}
