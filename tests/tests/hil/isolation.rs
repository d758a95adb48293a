//! Isolation on every backend (VT-x in Bochs, SVM in QEMU): an attacker partition tries, one test each, what it must
//! not be able to do; every attempt gets its defined answer and a log line, and the witness
//! partition on the other core is unaffected (its counter advances to the end and the
//! canary in its memory is unchanged, or it would report FAIL).

use bulkhead_tests::{Emulator, Report, Run, every_backend};

const ISOLATION: &str = "tests/configs/bochs-isolation.toml";
const RESTART: &str = "tests/configs/bochs-restart.toml";
const VERDICT: &str = "tests/configs/bochs-verdict.toml";
/// Host address of the witness's memory (first-fit placement, see the config), and of its
/// canary (guest 0x102000, printed by the witness).
const WITNESS_HOST: &str = "0x2000000";
const WITNESS_CANARY_HOST: &str = "0x2102000";

/// Witness cycles: long enough that the attack is over before the witness reports (QEMU
/// runs the witness far faster than Bochs, relative to the rest of the boot).
fn witness_cycles(emulator: Emulator) -> u64 {
    if emulator.is_qemu() { 200_000_000 } else { 8_000_000 }
}

fn attack(emulator: Emulator, config: &str, attack: &str, target: &str) -> Run {
    let cycles = witness_cycles(emulator);
    Run::new(emulator)
        .cpus(2)
        .scenario(config)
        .switch(format!("witness:cycles={cycles}"))
        .switch(format!("attacker:attack={attack}"))
        .switch(format!("attacker:target={target}"))
        // Partition faults are logged as errors; the run itself must still pass.
        .allow_errors()
        .expect("[attacker] attacker: attack")
        .expect(format!("[witness] witness: alive, cycle {cycles}, canary intact"))
        .expect("partition witness: reports PASS")
        .forbid("witness: fault")
        .forbid("exception #")
        .forbid("panicked")
}

fn passed(run: Run) -> Report {
    let report = run.execute();
    report.assert_passed();
    report
}

every_backend! {
    fn isolation_read_neighbour_memory_faults_attacker_only(emulator) {
        passed(
            attack(emulator, ISOLATION, "read-memory", WITNESS_HOST)
                .expect("partition attacker: fault #1: read at guest-physical 0x2000000, which the partition does not own")
                .expect("partition attacker: halted (policy halt); other partitions keep running")
                .forbid("NOT BLOCKED"),
        );
    }
}

every_backend! {
    fn isolation_write_neighbour_canary_faults_attacker_only(emulator) {
        passed(
            attack(emulator, ISOLATION, "write-memory", WITNESS_CANARY_HOST)
                .expect("partition attacker: fault #1: write at guest-physical 0x2102000, which the partition does not own")
                .expect("partition attacker: halted")
                .forbid("NOT BLOCKED"),
        );
    }
}

every_backend! {
    /// The hypervisor's own physical addresses name the attacker's own memory in its
    /// guest-physical space: it reads its own (zeroed) page, not the hypervisor image, and its
    /// write changes nothing of the hypervisor's (which keeps running the witness).
    fn isolation_hypervisor_memory_not_reachable(emulator) {
        passed(
            attack(emulator, ISOLATION, "hypervisor-memory", "0x200000")
                .expect("[attacker] attacker: at 0x200000 read 0x0 (hypervisor image not visible), wrote own memory")
                .forbid("HYPERVISOR VISIBLE")
                .forbid("partition attacker: fault"),
        );
    }
}

every_backend! {
    fn isolation_unassigned_port_reads_all_ones_and_drops_writes(emulator) {
        passed(
            attack(emulator, ISOLATION, "port", "0x2f8")
                .expect("[attacker] attacker: port 0x2f8 read 0xff, write done")
                .expect("partition attacker: read from unassigned port 0x2f8 (1 bytes): reads all-ones")
                .expect("partition attacker: write to unassigned port 0x2f8 (1 bytes): dropped"),
        );
    }
}

every_backend! {
    /// With `verdict_partition = "witness"`, the attacker's failing verdict on port 0xF4 is
    /// an unassigned port write, even under `exit=emulator`: the run ends with the witness's
    /// PASS (were the attacker's verdict taken, the run would end as a failure at once).
    fn isolation_only_the_verdict_partition_ends_the_run(emulator) {
        passed(
            attack(emulator, VERDICT, "verdict", "0")
                .expect("config: the verdict of partition witness (port 0xf4) ends the run")
                .expect("[attacker] attacker: failing verdict written")
                .expect("partition attacker: write to unassigned port 0xf4 (1 bytes): dropped")
                .forbid("partition attacker: reports"),
        );
    }
}

every_backend! {
    fn isolation_forbidden_msrs_get_gp(emulator) {
        passed(
            attack(emulator, ISOLATION, "msr", "0")
                .expect("[attacker] attacker: feature-control read Ok(1), write #GP; vmx-basic read #GP; apic-base relocation #GP")
                .expect("partition attacker: wrmsr 0x3a <- 0x5 refused (#GP)")
                .expect("partition attacker: rdmsr 0x480 refused (#GP)")
                .expect("partition attacker: wrmsr 0x1b <- 0xfe00")
                .forbid("partition attacker: fault"),
        );
    }
}

every_backend! {
    /// EFER as a CPU without virtualization extensions shows it: the partition never sees
    /// SVME (which the SVM backend must keep set in the VMCB, so it intercepts EFER there)
    /// and cannot set it, cannot leave long mode under paging, and cannot set reserved bits;
    /// the architectural bits stay its own. Before EFER was intercepted, the SVME bit was
    /// visible under SVM and clearing it made VMRUN fail (a partition fault).
    fn isolation_efer_hides_and_keeps_svme(emulator) {
        let run = attack(emulator, ISOLATION, "efer", "0")
            .expect("[attacker] attacker: efer lme=true svme=false; set SVME #GP; clear LME #GP; reserved bit 20 #GP")
            .expect("[attacker] attacker: efer toggle SCE allowed, reads back true; restore true")
            .forbid("partition attacker: fault");
        // VT-x passes EFER through (the CPU itself refuses); SVM answers and logs.
        let run = if emulator.is_vmx() { run } else { run.expect("partition attacker: wrmsr 0xc0000080 <- 0x1500 refused (#GP)") };
        passed(run);
    }
}

every_backend! {
    /// Partitions have no virtualization extensions: VMRUN, CLGI, STGI, VMLAUNCH and VMXOFF
    /// all raise #UD in the partition, as on a CPU without them. The backend's own
    /// instructions exit and are answered with #UD and a log line; the other vendor's are
    /// undefined on the CPU anyway.
    fn isolation_virtualization_instructions_get_ud(emulator) {
        passed(
            attack(emulator, ISOLATION, "virtualization", "0")
                .expect("[attacker] attacker: vmrun #UD; clgi #UD; stgi #UD; vmlaunch #UD; vmxoff #UD")
                .expect("partition attacker: virtualization instruction refused (#UD), rip")
                .forbid("partition attacker: fault"),
        );
    }
}

every_backend! {
    fn isolation_ipi_and_init_to_neighbour_core_get_gp(emulator) {
        passed(
            attack(emulator, ISOLATION, "ipi", "0")
                .expect("[attacker] attacker: fixed IPI to apic 0 #GP; INIT to apic 0 #GP")
                .expect("[attacker] attacker: NMI to own core #GP; broadcast allowed; broadcast INIT allowed; LINT0 NMI mode #GP; LINT0 masked allowed")
                .expect(
                    "partition attacker: LVT 0x835 <- 0x400 refused (#GP): delivery mode 4 is reserved for the hypervisor",
                )
                .expect("partition attacker: IPI refused (#GP): icr 0x40 (mode 0, shorthand 0) to apic_id 0")
                .expect("partition attacker: IPI refused (#GP): icr 0x4500 (mode 5, shorthand 0) to apic_id 0")
                .forbid("partition attacker: fault"),
        );
    }
}

every_backend! {
    /// XSETBV is executed by the hypervisor for the partition: valid XCR0 values are taken,
    /// invalid ones get #GP in the partition (and must never fault the hypervisor). QEMU 7.2
    /// TCG does not honour the SVM XSETBV intercept: there the CPU itself validates (the
    /// guest sees the same answers; XCR0 belongs to the partition's own core either way).
    fn isolation_xsetbv_is_validated(emulator) {
        let run = attack(emulator, ISOLATION, "xsetbv", "0")
            .expect("[attacker] attacker: xsetbv x87+SSE allowed; AVX without SSE #GP; unknown component #GP")
            .forbid("partition attacker: fault");
        let run = if emulator.is_qemu() { run } else { run.expect("partition attacker: xsetbv xcr0 <- 0x5 invalid (#GP)") };
        passed(run);
    }
}

every_backend! {
    /// The emulated xAPIC page's ICR follows the same rules as the x2APIC one: a fixed IPI
    /// and an INIT to another partition's core are dropped with a log line (an MMIO store
    /// cannot fault), and the witness on that core runs on.
    fn isolation_xapic_ipi_to_neighbour_is_dropped(emulator) {
        passed(
            attack(emulator, ISOLATION, "xapic", "0")
                .expect("[attacker] attacker: xAPIC id 1; fixed IPI and INIT to apic 0 through the xAPIC ICR written")
                .expect("partition attacker: IPI refused (#GP): icr 0x40 (mode 0, shorthand 0) to apic_id 0: not one of its cores")
                .expect("partition attacker: IPI refused (#GP): icr 0x4500 (mode 5, shorthand 0) to apic_id 0: not one of its cores")
                .forbid("partition attacker: fault"),
        );
    }
}

every_backend! {
    /// Policy `restart` with `max_restarts = 2`: the attacker triple-faults on every start, is
    /// restarted exactly twice (memory zeroed, payload reloaded), then halted; the witness
    /// never stops.
    fn restart_policy_restarts_max_times_then_halts(emulator) {
        let report = passed(
            attack(emulator, RESTART, "triple-fault", "0")
                .expect("[attacker] attacker: memory fresh")
                .forbid("NOT zeroed")
                .expect("partition attacker: fault #1: triple fault")
                .expect("partition attacker: restart 1 of 2 (memory zeroed, payload reloaded)")
                .expect("partition attacker: fault #2: triple fault")
                .expect("partition attacker: restart 2 of 2 (memory zeroed, payload reloaded)")
                .expect("partition attacker: fault #3: triple fault")
                .expect("partition attacker: halted (restart limit reached); other partitions keep running")
                .forbid("partition attacker: fault #4")
                .forbid("restart 3 of"),
        );
        let starts =
            report.lines.iter().filter(|l| l.to_string().contains("partition attacker: starting on cpu 1")).count();
        assert_eq!(starts, 3, "one start and exactly two restarts:\n{}", report.diagnostic());
    }
}
