//! The compiled configuration at boot: its summary in the log, and the check that this
//! machine is the board it was compiled for.

use crate::boot::bootinfo::BootInfo;
use crate::boot::madt::CpuList;
use crate::config::SYSTEM;
use crate::log::{error, info};
use bulkhead_board::tables::*;

fn policy_name(policy: FaultPolicy) -> &'static str {
    match policy {
        FaultPolicy::Halt => "halt",
        FaultPolicy::Restart { .. } => "restart",
        FaultPolicy::ResetBoard => "reset-board",
    }
}

fn kind_name(kind: PayloadKind) -> &'static str {
    match kind {
        PayloadKind::Elf => "elf",
        PayloadKind::Flat => "flat",
        PayloadKind::BzImage => "bzimage",
        PayloadKind::Hermit => "hermit",
    }
}

/// A partition's configured watchdog as the summary shows it.
struct Watchdog(Option<bulkhead_board::tables::Watchdog>);

// Enforced by the monitor (`supervision/monitor.rs`).
crate::log::impl_format!(Watchdog, |watchdog, f| match watchdog.0 {
    None => crate::log::write!(f, "none"),
    Some(w) => crate::log::write!(f, "{=u32} ms after {=u32} ms grace", w.period_ms, w.grace_ms),
});

/// Logs the compiled configuration in one screen.
pub fn log_summary() {
    let s = &SYSTEM;
    info!(
        "config: system {=str} on board {=str}: {=usize} cpus, {=usize} partitions, {=usize} connections, {=usize} shared regions, {=usize} devices",
        s.name,
        s.board.name,
        s.board.cpus.len(),
        s.partitions.len(),
        s.connections.len(),
        s.shared_memory.len(),
        s.board.devices.len()
    );
    info!(
        "config: hypervisor reserves [{=u64:#x}, {=u64:#x})",
        s.hypervisor.reserved.base,
        s.hypervisor.reserved.end()
    );
    if let Some(id) = s.hypervisor.verdict_partition
        && let Some(p) = s.partitions.get(usize::from(id.0))
    {
        info!("config: the verdict of partition {=str} (port 0xf4) ends the run", p.name);
    }
    match s.hypervisor.monitor_core {
        Some(core) => info!(
            "config: monitor on core {=u32} (partition watchdogs, critical partitions, the hypervisor's cores)",
            core
        ),
        None => info!("config: no monitor (no partition watchdog, no critical partition, no board watchdog)"),
    }
    for p in s.partitions.iter().filter(|p| !p.supervises.is_empty()) {
        for id in p.supervises {
            if let Some(target) = s.partitions.get(usize::from(id.0)) {
                info!("config: partition {=str} supervises {=str}", p.name, target.name);
            }
        }
    }
    for p in s.partitions {
        let memory: u64 = p.memory.iter().map(|m| m.size).sum();
        let max_restarts = match p.fault_policy {
            FaultPolicy::Restart { max_restarts } => max_restarts,
            _ => 0,
        };
        info!(
            "config: partition {=u8} {=str}: cores {=[?]}, {=u64} KiB in {=usize} regions, payload {=str} {=str}, {=usize} devices, on fault {=str} (max restarts {=u32}), watchdog {}, interface {=str}",
            p.id.0,
            p.name,
            p.cores,
            memory >> 10,
            p.memory.len(),
            kind_name(p.payload.kind),
            p.payload.module,
            p.devices.len(),
            policy_name(p.fault_policy),
            max_restarts,
            Watchdog(p.watchdog),
            match p.interface {
                bulkhead_board::tables::GuestInterface::HyperV => "hyperv",
                bulkhead_board::tables::GuestInterface::Xen => "xen",
            }
        );
        for m in p.memory {
            info!(
                "config:   guest [{=u64:#x}, {=u64:#x}) -> host [{=u64:#x}, {=u64:#x}) r={=bool} w={=bool} x={=bool} large={=bool}",
                m.guest_base,
                m.guest_base + m.size,
                m.host_base,
                m.host_base + m.size,
                m.access.read,
                m.access.write,
                m.access.execute,
                m.large_pages
            );
        }
    }
    for c in s.connections {
        let (kind, detail) = match c.kind {
            ConnectionKind::Message { queue_depth } => ("message, queue depth", queue_depth),
            ConnectionKind::Event { flag } => ("event, flag", u32::from(flag)),
        };
        info!(
            "config: connection {=u32}: {=str} -> {=str} on sint {=u8} ({=str} {=u32})",
            c.id,
            SYSTEM.partitions[c.from.0 as usize].name,
            SYSTEM.partitions[c.to.0 as usize].name,
            c.sint,
            kind,
            detail
        );
    }
    for shared in s.shared_memory {
        info!(
            "config: shared memory {=str}: host [{=u64:#x}, {=u64:#x}), {=usize} sharers",
            shared.name,
            shared.host.base,
            shared.host.end(),
            shared.sharers.len()
        );
    }
}

/// Compares the machine with the compiled board; logs every difference. Returns how many
/// there are (0 = the machine is the board).
pub fn check_board(boot: &BootInfo, cpus: &CpuList) -> usize {
    let board = &SYSTEM.board;
    let mut differences = 0;
    for cpu in board.cpus {
        if !cpus.apic_ids.contains(&cpu.apic_id) {
            error!(
                "board check: core {=u32} (apic_id {=u32}) is configured but this machine has no such cpu",
                cpu.core, cpu.apic_id
            );
            differences += 1;
        }
    }
    for ram in board.ram {
        if !boot.is_usable(ram.base, ram.end()) {
            error!(
                "board check: RAM [{=u64:#x}, {=u64:#x}) is configured but is not usable memory in this machine's memory map",
                ram.base,
                ram.end()
            );
            differences += 1;
        }
    }
    differences += check_memory_use(boot);
    for &apic_id in cpus.apic_ids.iter() {
        if !board.cpus.iter().any(|c| c.apic_id == apic_id) {
            crate::log::warn!(
                "board check: cpu with apic_id {=u32} is not in the board file; it is not started",
                apic_id
            );
        }
    }
    if differences == 0 {
        info!(
            "board check: ok, machine matches board {=str} ({=usize} cpus, {=usize} RAM ranges)",
            board.name,
            board.cpus.len(),
            board.ram.len()
        );
    } else {
        error!(
            "board check failed: {=usize} differences from board {=str}; no partition will be started",
            differences, board.name
        );
    }
    differences
}

/// What the hypervisor occupies at boot (its image and the boot modules) must stay out of
/// partition memory, and every partition's payload module must be there. Returns the
/// number of problems, each logged.
fn check_memory_use(boot: &BootInfo) -> usize {
    let mut problems = 0;
    let reserved = SYSTEM.hypervisor.reserved;
    let image = crate::boot::paging::kernel_image();
    if image.base < reserved.base || image.end() > reserved.end() {
        error!(
            "board check: the hypervisor image [{=u64:#x}, {=u64:#x}) does not fit its reserved memory [{=u64:#x}, {=u64:#x})",
            image.base,
            image.end(),
            reserved.base,
            reserved.end()
        );
        problems += 1;
    }
    // The check's estimate (`cargo xtask check`) is what reserved_memory was checked
    // against; an image beyond it means the estimate's allowances need raising.
    if image.size > crate::config::MEMORY_BUDGET {
        crate::log::warn!(
            "board check: the hypervisor image takes {=u64} KiB, more than the {=u64} KiB the build estimated (board/src/footprint.rs)",
            image.size / 1024,
            crate::config::MEMORY_BUDGET / 1024
        );
    }
    let owned = SYSTEM
        .partitions
        .iter()
        .flat_map(|p| p.memory.iter().map(move |m| (p.name, PhysRange { base: m.host_base, size: m.size })))
        .chain(SYSTEM.shared_memory.iter().map(|s| (s.name, s.host)));
    for (owner, range) in owned {
        for m in &boot.modules {
            let module = PhysRange { base: m.start, size: m.end - m.start };
            if module.overlaps(&range) {
                error!(
                    "board check: boot module {=str} at [{=u64:#x}, {=u64:#x}) lies in memory of {=str}; enlarge the hypervisor's reserved memory",
                    m.name, m.start, m.end, owner
                );
                problems += 1;
            }
        }
    }
    for p in SYSTEM.partitions {
        let wanted = core::iter::once(p.payload.module).chain(p.payload.initrd_module);
        for name in wanted {
            if !boot.modules.iter().any(|m| m.name == name) {
                error!(
                    "board check: partition {=str} needs boot module {=str}, which the bootloader did not load",
                    p.name, name
                );
                problems += 1;
            }
        }
    }
    problems
}
