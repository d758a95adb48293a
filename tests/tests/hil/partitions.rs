//! Partitions run under VT-x (Bochs `corei7_skylake_x`), each on its own core, each with
//! its own console.

use bulkhead_tests::{Emulator, Run};

/// The Bochs demo: "control" on core 1 and "telemetry" on core 0 both run their payloads
/// under EPT; telemetry sees the hypervisor bit and no VMX in CPUID, and reports PASS.
#[test]
fn vmx_two_partitions_run_and_print() {
    Run::new(Emulator::Bochs)
        .cpus(2)
        .expect("partition control: starting on cpu 1 at 0x100000")
        .expect("partition telemetry: starting on cpu 0 at 0x100000")
        .expect("[cpu1 INFO ] [control] started")
        .expect("[cpu1 INFO ] [control] cycle 2000000")
        .expect("[cpu0 INFO ] [telemetry] started; cpuid hypervisor=true vmx=false")
        .expect("[cpu0 INFO ] [telemetry] status 3 ok")
        .expect("partition telemetry: reports PASS")
        .forbid(": fault #")
        .execute()
        .assert_passed();
}
