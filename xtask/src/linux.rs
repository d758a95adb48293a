//! `cargo xtask linux-assets`: Debian's kernel, headers and busybox through apt, cached under
//! target/linux-assets/, and the initramfs built from them (`bulkhead_tests::linux_assets`,
//! `bulkhead_tests::initramfs`; docs/testing.md).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use bulkhead_tests::{initramfs, linux_assets};

use crate::display_path;

pub fn linux_assets() -> Result<ExitCode> {
    let started = Instant::now();
    let assets = linux_assets::fetch(&linux_assets::cache_root(), &mut |line| eprintln!("{line}"))?;
    assets.check_initramfs_support()?;
    let building = Instant::now();
    let initrd = assets.base_initramfs()?;
    let bytes = std::fs::read(&initrd)?;
    let entries = initramfs::parse(&bytes)?.len();
    eprintln!(
        "initramfs: {} entries, {} KiB, built in {} ms",
        entries,
        bytes.len() / 1024,
        building.elapsed().as_millis()
    );
    let s = &assets.selection;
    println!(
        "Linux {} ({}; {} in {:.1} s)",
        s.release,
        s.image,
        if assets.fetched { "fetched" } else { "cached" },
        started.elapsed().as_secs_f64()
    );
    let rows = [
        ("vmlinuz", assets.vmlinuz(), s.image.to_string()),
        ("config", assets.config(), s.image.to_string()),
        ("System.map", assets.system_map(), format!("{} (Debian ships a stub)", s.image)),
        ("busybox", assets.busybox(), s.busybox.to_string()),
        ("headers", assets.kbuild_dir(), format!("{}, {}, {}", s.headers, s.headers_common, s.kbuild)),
        ("initramfs", initrd, format!("newc cpio, /init prints `{}`", initramfs::INIT_MARKER)),
    ];
    for (what, path, from) in rows {
        let shown = if path.exists() { display_path(&path) } else { format!("{} (not shipped)", display_path(&path)) };
        println!("  {what:<10} {shown}\n  {:<10} {from}", "");
    }
    println!("  (a module builds with `make -C {} M=$PWD modules`)", display_path(&assets.kbuild_dir()));
    println!("  ({} links to this folder)", display_path(&linux_assets::cache_root().join(linux_assets::CURRENT_LINK)));
    Ok(ExitCode::SUCCESS)
}
