//! Test-only: a deliberately hung hypervisor core (`hang_cpu=N`, `hang_after_ms=M` on the
//! kernel command line, boot/cmdline.rs), so that a test can watch the monitor notice it,
//! stop kicking the board watchdog and the watchdog reset the board.
//!
//! The CPU with index N, at its first VM exit once M ms have passed since the switch was
//! read, spins forever inside the hypervisor with interrupts disabled. The switch applies
//! only when the boot found no reset record: the boot after the watchdog's reset then
//! runs normally and can give its verdict (the same command line boots again). With no
//! reset record on the board it never applies, as the machine would hang and reset
//! forever.

use crate::boot::cmdline::HangSwitch;
use crate::cpu::time;
use crate::log::{error, warn};
use core::sync::atomic::{AtomicU64, Ordering};

/// The TSC value from which it hangs.
static FROM_TSC: AtomicU64 = AtomicU64::new(0);

/// Reads the switch (boot CPU, after the reset record was read). `Err(why)`: the switch
/// must not apply on this boot.
pub fn configure(allowed: Result<(), &'static str>) {
    let Some(boot) = crate::boot::bootinfo::get() else { return };
    let switch = match HangSwitch::parse(boot.command_line) {
        Ok(Some(switch)) => switch,
        Ok(None) => return,
        Err(word) => {
            error!("command line: {=str}: not a number; no cpu hangs", word);
            return;
        }
    };
    if let Err(why) = allowed {
        warn!("test: hang_cpu={=u32} not applied: {=str}", switch.cpu, why);
        return;
    }
    let cpus = crate::config::SYSTEM.board.cpus.len();
    if switch.cpu as usize >= cpus {
        error!("test: hang_cpu={=u32}: the board has {=usize} cpus; no cpu hangs", switch.cpu, cpus);
        return;
    }
    FROM_TSC.store(time::rdtsc() + time::ticks_per_ms() * switch.after_ms, Ordering::Relaxed);
    // The vCPU loop looks at it among its attention bits, so the switch costs the exit
    // path nothing on every other CPU (and when off).
    crate::cpu::percpu::cpu(switch.cpu as usize).request_test_hang();
    warn!(
        "test: cpu {=u32} will hang in the hypervisor at its first VM exit from {=u64} ms on (hang_cpu)",
        switch.cpu, switch.after_ms
    );
}

/// The CPU with the switch's attention bit, after a VM exit (its liveness count odd):
/// spins for good once the switch's time has come. Before its first exit it waits: a core
/// that has not entered its guest is not yet in an exit the monitor could time.
#[cold]
#[inline(never)]
pub fn hang_if_due(cpu: &crate::cpu::percpu::PerCpu) {
    if cpu.liveness() & 1 == 0 || time::rdtsc() < FROM_TSC.load(Ordering::Relaxed) {
        return;
    }
    let me = cpu.index();
    warn!("test: cpu {=u32} hangs in the hypervisor on purpose (interrupts off)", me);
    x86_64::instructions::interrupts::disable();
    loop {
        core::hint::spin_loop();
    }
}
