//! `cargo xtask bench --memory`: the hypervisor's memory per system, from the linked ELF
//! (the `memory-footprint` case). Builds the demo systems (board/systems/*.toml) and the
//! 4-core, 3-partition reference system (tests/configs/footprint-4cpu.toml) and reads
//! each kernel's allocated sections: code and constant data, initialised data, zeroed
//! data (bss), and of the bss the page tables and hardware pages and the stacks (by
//! symbol). Two targets per system: the total is within the estimate `cargo xtask check`
//! printed (board/src/footprint.rs), and a system of at most 4 CPUs and 3 partitions needs
//! at most 2 MiB.

use anyhow::{Context, Result, bail};
use bulkhead_board::Footprint;
use bulkhead_tests::kernel;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{build_for, root};

/// The target for a system of at most [`SMALL_CPUS`] CPUs and [`SMALL_PARTITIONS`]
/// partitions (issue 19).
const SMALL_TARGET: u64 = 2 * 1024 * 1024;
const SMALL_CPUS: usize = 4;
const SMALL_PARTITIONS: usize = 3;

/// What a kernel ELF occupies once loaded, by kind (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ElfFootprint {
    /// Executable sections.
    pub text: u64,
    /// Read-only data.
    pub rodata: u64,
    /// Initialised writable data.
    pub data: u64,
    /// Zeroed data (`SHT_NOBITS`).
    pub bss: u64,
    /// Of the bss: page tables and VMCS/VMCB/bitmap pages (by symbol name).
    pub tables: u64,
    /// Of the bss: the CPUs' stacks (`CPU_STACKS`).
    pub stacks: u64,
}

impl ElfFootprint {
    pub fn total(&self) -> u64 {
        self.text + self.rodata + self.data + self.bss
    }
}

/// Statics that hold page tables or hardware pages (legacy-mangled names contain the
/// length-prefixed path segments).
const TABLE_SYMBOLS: &[&str] =
    &["13address_space9SLAT_POOL", "15PARTITION_PAGES", "10CORE_PAGES", "6paging4POOL", "5iommu6TABLES"];
const STACK_SYMBOL: &str = "CPU_STACKS";

const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;
const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The allocated sections of a little-endian ELF64 file (ELF-64 Object File Format 1.5,
/// "Sections" and "Symbol Table"), by kind.
pub fn elf_footprint(bytes: &[u8]) -> Option<ElfFootprint> {
    if bytes.get(..4)? != b"\x7fELF" || *bytes.get(4)? != 2 || *bytes.get(5)? != 1 {
        return None;
    }
    let shoff = usize::try_from(u64_at(bytes, 0x28)?).ok()?;
    let shentsize = usize::from(u16_at(bytes, 0x3a)?);
    let shnum = usize::from(u16_at(bytes, 0x3c)?);
    let section = |i: usize| -> Option<(u32, u64, u64, u64, u32, u64)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        // sh_type, sh_flags, sh_offset, sh_size, sh_link, sh_entsize
        Some((
            u32_at(bytes, at + 4)?,
            u64_at(bytes, at + 8)?,
            u64_at(bytes, at + 0x18)?,
            u64_at(bytes, at + 0x20)?,
            u32_at(bytes, at + 0x28)?,
            u64_at(bytes, at + 0x38)?,
        ))
    };
    let mut f = ElfFootprint::default();
    let mut symtab = None;
    for i in 0..shnum {
        let (kind, flags, offset, size, link, entsize) = section(i)?;
        if kind == SHT_SYMTAB {
            symtab = Some((offset, size, link, entsize));
        }
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        if kind == SHT_NOBITS {
            f.bss += size;
        } else if flags & SHF_EXECINSTR != 0 {
            f.text += size;
        } else if flags & SHF_WRITE != 0 {
            f.data += size;
        } else {
            f.rodata += size;
        }
    }
    if let Some((offset, size, link, entsize)) = symtab {
        let (_, _, str_offset, str_size, _, _) = section(usize::try_from(link).ok()?)?;
        let strings = bytes.get(usize::try_from(str_offset).ok()?..usize::try_from(str_offset + str_size).ok()?)?;
        let entsize = usize::try_from(entsize).ok()?.max(24);
        let start = usize::try_from(offset).ok()?;
        for at in (start..start + usize::try_from(size).ok()?).step_by(entsize) {
            let name_at = usize::try_from(u32_at(bytes, at)?).ok()?;
            let sym_size = u64_at(bytes, at + 16)?;
            let name = strings.get(name_at..)?;
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            let name = String::from_utf8_lossy(name);
            if TABLE_SYMBOLS.iter().any(|s| name.contains(s)) {
                f.tables += sym_size;
            } else if name == STACK_SYMBOL {
                f.stacks += sym_size;
            }
        }
    }
    Some(f)
}

/// The systems measured: the demo systems and the 4-core, 3-partition reference.
fn systems() -> Result<Vec<PathBuf>> {
    let dir = root().join("board/systems");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files.push(root().join("tests/configs/footprint-4cpu.toml"));
    Ok(files)
}

/// One measured system.
struct Row {
    name: String,
    footprint: Footprint,
    estimate: u64,
    elf: ElfFootprint,
}

impl Row {
    /// The 2 MiB target, for a system small enough to have it.
    fn small_target(&self) -> Option<u64> {
        (self.footprint.cpus <= SMALL_CPUS && self.footprint.partitions <= SMALL_PARTITIONS).then_some(SMALL_TARGET)
    }

    /// What it misses, if anything.
    fn missed(&self) -> Vec<String> {
        let total = self.elf.total();
        let mut missed = Vec::new();
        if total > self.estimate {
            missed.push(format!(
                "{}: {} KiB linked, above the check's estimate {} KiB",
                self.name,
                kib(total),
                kib(self.estimate)
            ));
        }
        if let Some(target) = self.small_target().filter(|&t| total > t) {
            missed.push(format!("{}: {} KiB, above the {} KiB target", self.name, kib(total), kib(target)));
        }
        missed
    }
}

fn kib(n: u64) -> u64 {
    n.div_ceil(1024)
}

fn measure(config: &Path) -> Result<Row> {
    // The build first: it prepares what the system's payloads need (`@linux/` assets).
    let image = build_for(config)?;
    let loaded = bulkhead_board::load_system(config, &kernel::load_options());
    let system = loaded.result.map_err(|d| anyhow::anyhow!("{}: invalid configuration:\n{d}", config.display()))?;
    let footprint = Footprint::of(&system);
    let estimate = footprint.budget().total();
    let bytes = std::fs::read(&image.elf).with_context(|| format!("reading {}", image.elf.display()))?;
    let Some(elf) = elf_footprint(&bytes) else { bail!("{} is not an ELF64 file", image.elf.display()) };
    let name = config.file_stem().map_or_else(|| "?".into(), |s| s.to_string_lossy().into_owned());
    Ok(Row { name, footprint, estimate, elf })
}

/// `cargo xtask bench --memory`: builds and measures every system; fails (non-zero) when
/// one misses a target, naming it.
pub fn memory_bench(json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for config in systems()? {
        rows.push(measure(&config)?);
    }
    if json {
        let cases: Vec<String> = rows
            .iter()
            .map(|r| {
                let (target, met) = match r.small_target() {
                    Some(t) => (t.to_string(), (r.elf.total() <= t).to_string()),
                    None => ("null".into(), "null".into()),
                };
                format!(
                    "{{\"case\":\"memory-footprint/{}\",\"cpus\":{},\"partitions\":{},\"text\":{},\"rodata\":{},\"data\":{},\"bss\":{},\"tables\":{},\"stacks\":{},\"value\":{},\"unit\":\"bytes\",\"estimate\":{},\"target_max\":{target},\"met\":{met}}}",
                    r.name,
                    r.footprint.cpus,
                    r.footprint.partitions,
                    r.elf.text,
                    r.elf.rodata,
                    r.elf.data,
                    r.elf.bss,
                    r.elf.tables,
                    r.elf.stacks,
                    r.elf.total(),
                    r.estimate
                )
            })
            .collect();
        println!("{{\"cases\":[{}]}}", cases.join(","));
    } else {
        println!(
            "{:<34} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}  target",
            "case (KiB)", "cpus", "part", "text", "data", "bss", "tables", "stacks", "total", "estimate"
        );
        for r in &rows {
            let e = &r.elf;
            let target = match r.small_target() {
                Some(t) => format!("<= {} ({})", kib(t), if e.total() <= t { "met" } else { "MISSED" }),
                None => "-".to_owned(),
            };
            println!(
                "{:<34} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}  {target}",
                format!("memory-footprint/{}", r.name),
                r.footprint.cpus,
                r.footprint.partitions,
                kib(e.text + e.rodata),
                kib(e.data),
                kib(e.bss),
                kib(e.tables),
                kib(e.stacks),
                kib(e.total()),
                kib(r.estimate),
            );
        }
        println!("text = code + read-only data; tables and stacks are part of bss");
    }
    let missed: Vec<String> = rows.iter().flat_map(Row::missed).map(|m| format!("memory-footprint/{m}")).collect();
    Ok(crate::bench::verdict(&missed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: a null section, .text, .data, .bss, .symtab, .strtab.
    fn elf(symbols: &[(&str, u64)]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        for (name, size) in symbols {
            let at = strtab.len() as u32;
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
            let mut sym = vec![0u8; 24];
            sym[..4].copy_from_slice(&at.to_le_bytes());
            sym[16..24].copy_from_slice(&size.to_le_bytes());
            symtab.extend(sym);
        }
        let mut out = vec![0u8; 64];
        out[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let symtab_at = out.len() as u64;
        out.extend(&symtab);
        let strtab_at = out.len() as u64;
        out.extend(&strtab);
        let shoff = out.len() as u64;
        // (type, flags, offset, size, link, entsize)
        let sections: [(u32, u64, u64, u64, u32, u64); 6] = [
            (0, 0, 0, 0, 0, 0),
            (1, SHF_ALLOC | SHF_EXECINSTR, 0, 1000, 0, 0),
            (1, SHF_ALLOC | SHF_WRITE, 0, 200, 0, 0),
            (SHT_NOBITS, SHF_ALLOC | SHF_WRITE, 0, 30_000, 0, 0),
            (SHT_SYMTAB, 0, symtab_at, symtab.len() as u64, 5, 24),
            (3, 0, strtab_at, strtab.len() as u64, 0, 0),
        ];
        for (kind, flags, offset, size, link, entsize) in sections {
            let mut h = vec![0u8; 64];
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[8..16].copy_from_slice(&flags.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&offset.to_le_bytes());
            h[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            h[0x28..0x2c].copy_from_slice(&link.to_le_bytes());
            h[0x38..0x40].copy_from_slice(&entsize.to_le_bytes());
            out.extend(h);
        }
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&6u16.to_le_bytes());
        out
    }

    #[test]
    fn sections_and_symbols_are_counted_by_kind() {
        let bytes = elf(&[
            ("_ZN15bulkhead_kernel7backend13address_space9SLAT_POOL17h0123456789abcdefE", 8192),
            ("_ZN15bulkhead_kernel4boot6paging4POOL17h0123456789abcdefE", 4096),
            ("CPU_STACKS", 16_384),
            ("_ZN15bulkhead_kernel3idt3IDT17h0123456789abcdefE", 4096),
        ]);
        let f = elf_footprint(&bytes).expect("a valid ELF");
        assert_eq!(
            f,
            ElfFootprint { text: 1000, rodata: 0, data: 200, bss: 30_000, tables: 8192 + 4096, stacks: 16_384 }
        );
        assert_eq!(f.total(), 31_200);
    }

    #[test]
    fn not_an_elf_is_none() {
        assert_eq!(elf_footprint(b"\x7fELF\x01\x01"), None);
        assert_eq!(elf_footprint(b"MZ"), None);
        let mut truncated = elf(&[]);
        truncated.truncate(100);
        assert_eq!(elf_footprint(&truncated), None);
    }

    fn row(cpus: usize, partitions: usize, total: u64, estimate: u64) -> Row {
        let footprint = Footprint {
            cpus,
            partitions,
            devices: 0,
            connections: 1,
            queue_depth: 1,
            slat_tables: vec![3; partitions],
            iommu_domains: 0,
            iommu: false,
            boot_page_tables: 14,
        };
        let elf = ElfFootprint { text: total, ..ElfFootprint::default() };
        Row { name: "s".into(), footprint, estimate, elf }
    }

    #[test]
    fn a_missed_target_is_named() {
        assert!(row(4, 3, SMALL_TARGET, SMALL_TARGET).missed().is_empty());
        let over = row(4, 3, SMALL_TARGET + 1, SMALL_TARGET + 1).missed();
        assert_eq!(over.len(), 1, "{over:?}");
        assert!(over[0].contains("above the 2048 KiB target"), "{over:?}");
        // Bigger systems have no size target, but the estimate holds for every system.
        assert!(row(5, 3, SMALL_TARGET + 1, SMALL_TARGET + 1).missed().is_empty());
        let under = row(2, 2, 900 * 1024, 800 * 1024).missed();
        assert_eq!(under.len(), 1, "{under:?}");
        assert!(under[0].contains("above the check's estimate"), "{under:?}");
    }

    #[test]
    fn the_reference_system_is_measured() {
        let files = systems().unwrap();
        assert!(files.iter().any(|f| f.ends_with("board/systems/demo.toml")));
        assert!(files.last().unwrap().ends_with("tests/configs/footprint-4cpu.toml"));
    }
}
