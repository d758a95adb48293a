//! Every CPU comes online.

use bulkhead_tests::{Emulator, Run};

/// The system configurations whose boards have exactly `cpus` CPUs on `emulator`.
fn config_for(emulator: Emulator, cpus: u8) -> &'static str {
    match (emulator, cpus) {
        (Emulator::Bochs, 2) => emulator.default_config(),
        (Emulator::QemuBios | Emulator::QemuUefi, 1) => "tests/configs/qemu-1cpu.toml",
        (Emulator::QemuBios | Emulator::QemuUefi, 2) => emulator.default_config(),
        (Emulator::QemuBios | Emulator::QemuUefi, 4) => "tests/configs/qemu-4cpu.toml",
        _ => panic!("no test configuration for {cpus} cpus on {emulator}"),
    }
}

fn all_cpus_online(emulator: Emulator, cpus: u8) {
    let mut run = Run::new(emulator).cpus(cpus).config(config_for(emulator, cpus));
    for n in 0..cpus {
        run = run.expect(format!("cpu {n} online: apic_id="));
    }
    run.expect(format!("smp: {cpus} of {cpus} cpus online"))
        // A CPU the machine does not have must not come online.
        .forbid(format!("cpu {cpus} online"))
        .expect("board check: ok")
        .execute()
        .assert_passed();
}

#[test]
fn smp_qemu_1_cpu() {
    all_cpus_online(Emulator::QemuBios, 1);
}

#[test]
fn smp_qemu_2_cpus() {
    all_cpus_online(Emulator::QemuBios, 2);
}

#[test]
fn smp_qemu_4_cpus() {
    all_cpus_online(Emulator::QemuBios, 4);
}

#[test]
fn smp_bochs_2_cpus() {
    all_cpus_online(Emulator::Bochs, 2);
}
