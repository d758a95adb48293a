//! The human summary of a validated system (`cargo xtask check PATH`): where every
//! partition's memory lands, which cores it runs on, and who talks to whom.

use crate::board::show_size;
use crate::codegen::{access_text, hex};
use crate::model::{IommuScope, System};
use crate::tables::{
    BoardWatchdogKind, ConnectionKind, ConsoleFormat, DmaProtection, FaultPolicy, Interrupt, PartitionId, PayloadKind,
    RESET_RECORD_BYTES, ResetRecord,
};

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut text = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            text.push_str(cell);
            let pad = w.saturating_sub(cell.chars().count()) + 2;
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str("  ");
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn count(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

fn name(system: &System, id: PartitionId) -> &str {
    system.partitions.get(usize::from(id.0)).map_or("?", |p| p.name.as_str())
}

fn span(base: u64, size: u64) -> String {
    let end = base.saturating_add(size);
    format!("{}..{}", hex(base), hex(end))
}

/// A few screens of text describing `system`.
pub fn summary(system: &System) -> String {
    let b = &system.board;
    let hv = &system.hypervisor.reserved;
    let mut out = format!(
        "system `{}` ({}) on board `{}`: {}, {}, {}, {}\n",
        system.name,
        system.file.display(),
        b.name,
        count(b.cpus.len(), "CPU"),
        count(system.partitions.len(), "partition"),
        count(system.connections.len(), "connection"),
        count(system.shared_memory.len(), "shared region")
    );
    out.push_str(&format!(
        "hypervisor: reserved {} ({}), console port {}, console format {}, log level {}\n",
        span(hv.base, hv.size),
        show_size(hv.size),
        hex(u64::from(system.console_port)),
        match system.hypervisor.console_format {
            ConsoleFormat::Defmt => "defmt",
            ConsoleFormat::Text => "text",
        },
        format!("{:?}", system.hypervisor.log_level).to_lowercase()
    ));
    if let Some(id) = system.hypervisor.verdict_partition {
        out.push_str(&format!(
            "run verdict: partition `{}` (port 0xf4) ends the run\n",
            system.partitions[usize::from(id.0)].name
        ));
    }

    if let Some(id) = system.hypervisor.console_input {
        out.push_str(&format!(
            "console input: partition `{}` (its UART at 0x3f8 receives what is typed on the console)\n",
            system.partitions[usize::from(id.0)].name
        ));
    }

    supervision(&mut out, system);

    out.push_str("\npartitions\n");
    let mut rows = Vec::new();
    for (i, p) in system.partitions.iter().enumerate() {
        let cores: Vec<String> = p.cores.iter().map(u32::to_string).collect();
        let policy = match p.fault_policy {
            FaultPolicy::Halt => "halt".to_owned(),
            FaultPolicy::Restart { max_restarts } => format!("restart (max {max_restarts})"),
            FaultPolicy::ResetBoard => "reset-board".to_owned(),
        };
        let kind = match p.payload.kind {
            PayloadKind::Elf => "elf",
            PayloadKind::Flat => "flat",
            PayloadKind::BzImage => "linux",
            PayloadKind::Hermit => "hermit",
        };
        let devices: Vec<&str> =
            p.devices.iter().filter_map(|d| b.devices.get(usize::from(d.0)).map(|d| d.name.as_str())).collect();
        let watchdog = p.watchdog.map_or_else(
            || "-".to_owned(),
            |w| match w.grace_ms {
                0 => format!("{} ms", w.period_ms),
                grace => format!("{} ms (grace {grace} ms)", w.period_ms),
            },
        );
        let supervises: Vec<&str> = p.supervises.iter().map(|&id| name(system, id)).collect();
        rows.push(vec![
            i.to_string(),
            p.name.clone(),
            cores.join(","),
            format!("{kind} {}", p.payload.source),
            if devices.is_empty() { "-".to_owned() } else { devices.join(",") },
            policy,
            watchdog,
            if p.critical { "yes" } else { "-" }.to_owned(),
            if supervises.is_empty() { "-".to_owned() } else { supervises.join(",") },
        ]);
    }
    out.push_str(&table(
        &["id", "name", "cores", "payload", "devices", "on fault", "watchdog", "critical", "supervises"],
        &rows,
    ));

    devices(&mut out, system);

    out.push_str("\nmemory (guest -> host)\n");
    let mut rows = Vec::new();
    for p in &system.partitions {
        for m in &p.memory {
            rows.push(vec![
                p.name.clone(),
                span(m.guest_base, m.size),
                span(m.host_base, m.size),
                show_size(m.size),
                access_text(&m.access),
                if m.large_pages { "2M" } else { "4K" }.to_owned(),
            ]);
        }
    }
    for s in &system.shared_memory {
        for sh in &s.sharers {
            rows.push(vec![
                format!("{} (shared `{}`)", name(system, sh.partition), s.name),
                span(sh.guest_base, s.host.size),
                span(s.host.base, s.host.size),
                show_size(s.host.size),
                access_text(&sh.access),
                "4K".to_owned(),
            ]);
        }
    }
    out.push_str(&table(&["partition", "guest", "host", "size", "access", "pages"], &rows));

    out.push_str("\nconnections\n");
    if system.connections.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = system
            .connections
            .iter()
            .map(|c| {
                let (kind, mut detail) = match c.kind {
                    ConnectionKind::Message { queue_depth } => ("message", format!("queue depth {queue_depth}")),
                    ConnectionKind::Event { flag } => ("event", format!("flag {flag}")),
                };
                // A ring is the first page of its own shared region (validate.rs).
                if let Some(ring) = &c.ring {
                    let region = system.shared_memory.iter().find(|s| s.host.base == ring.base);
                    detail.push_str(&format!(
                        ", ring `{}` host {}",
                        region.map_or("?", |s| s.name.as_str()),
                        span(ring.base, ring.size)
                    ));
                }
                vec![
                    c.id.to_string(),
                    c.name.clone().unwrap_or_else(|| "-".to_owned()),
                    kind.to_owned(),
                    format!("{} -> {}", name(system, c.from), name(system, c.to)),
                    c.sint.to_string(),
                    detail,
                ]
            })
            .collect();
        out.push_str(&table(&["id", "name", "kind", "from -> to", "sint", ""], &rows));
    }

    let footprint = crate::footprint::Footprint::of(system);
    let budget = footprint.budget();
    let room = system.hypervisor.reserved.end().saturating_sub(crate::system::KERNEL_LINK_ADDRESS);
    out.push_str(&format!(
        "\nhypervisor memory (estimate; reserved_memory holds {} KiB from 0x20_0000)\n",
        room / 1024
    ));
    out.push_str(&budget.table(&footprint));

    out.push_str("\ncores\n");
    let rows: Vec<Vec<String>> = b
        .cpus
        .iter()
        .map(|c| {
            let owner = system.partitions.iter().find(|p| p.cores.contains(&c.core)).map_or(
                if system.hypervisor.monitor_core == Some(c.core) {
                    "(hypervisor monitor)"
                } else {
                    "(hypervisor only)"
                },
                |p| p.name.as_str(),
            );
            vec![
                c.core.to_string(),
                c.apic_id.to_string(),
                if c.boot { "boot" } else { "" }.to_owned(),
                owner.to_owned(),
            ]
        })
        .collect();
    out.push_str(&table(&["core", "apic", "", "partition"], &rows));
    out
}

/// The hypervisor's monitor, the board watchdog it kicks and where a reset's reason is kept,
/// one line each when the system has them.
fn supervision(out: &mut String, system: &System) {
    let b = &system.board;
    if let Some(core) = system.hypervisor.monitor_core {
        out.push_str(&format!(
            "monitor: core {core} (checks partition watchdogs and the hypervisor's cores{})\n",
            if b.watchdog.is_some() { ", kicks the board watchdog" } else { "" }
        ));
    }
    if let Some(w) = b.watchdog {
        let kind = match w.kind {
            BoardWatchdogKind::I6300esb => "i6300esb",
        };
        let device = b.devices.get(usize::from(w.device.0));
        out.push_str(&format!(
            "board watchdog: {kind} `{}` ({}), timeout {} ms\n",
            device.map_or("?", |d| d.name.as_str()),
            device.and_then(|d| d.pci.as_ref()).map_or_else(|| "-".to_owned(), crate::board::show_bdf),
            w.timeout_ms
        ));
    }
    if let Some(ResetRecord::Cmos { offset }) = b.reset_record {
        let end = u64::from(offset) + u64::from(RESET_RECORD_BYTES);
        out.push_str(&format!("reset record: CMOS RAM {}\n", span(u64::from(offset), end - u64::from(offset))));
    }
}

/// The assigned devices: owner, PCI address, interrupts and how their DMA is confined.
fn devices(out: &mut String, system: &System) {
    let b = &system.board;
    let mut rows = Vec::new();
    for p in &system.partitions {
        for id in &p.devices {
            let Some(d) = b.devices.get(usize::from(id.0)) else { continue };
            let irqs: Vec<String> = d
                .interrupts
                .iter()
                .map(|i| match i {
                    Interrupt::Line(gsi) => format!("GSI {gsi}"),
                    Interrupt::Msi { messages } => format!("MSI x{messages}"),
                })
                .collect();
            let dma = match (d.pci, p.dma) {
                (None, _) => "-".to_owned(),
                (Some(_), DmaProtection::Unprotected) => "UNPROTECTED".to_owned(),
                (Some(_), DmaProtection::Iommu) => b
                    .iommus
                    .iter()
                    .find(|i| match &i.scope {
                        IommuScope::All => true,
                        IommuScope::Devices(ids) => ids.contains(id),
                    })
                    .map_or_else(|| "?".to_owned(), |i| format!("IOMMU {}", i.name)),
            };
            rows.push(vec![
                d.name.clone(),
                p.name.clone(),
                d.pci.as_ref().map_or_else(|| "-".to_owned(), crate::board::show_bdf),
                if irqs.is_empty() { "-".to_owned() } else { irqs.join(",") },
                dma,
            ]);
        }
    }
    if !rows.is_empty() {
        out.push_str("\nassigned devices\n");
        out.push_str(&table(&["device", "partition", "pci", "interrupts", "dma"], &rows));
    }
}
