//! A Linux partition drives an assigned PCI function with Debian's unmodified driver: QEMU's
//! e1000e (Intel 82574L) at 00:05.0 is given to the Linux partition of
//! tests/configs/qemu-linux-nic.toml, whose ACPI tables carry an MCFG for the board's ECAM
//! window (reserved in its e820 map). Debian's `e1000e` module, from the kernel's own
//! package, binds to the function; the link comes up, the partition sends ARP and ICMP
//! frames, and the NIC interrupts its owner. QEMU captures what the NIC sends
//! (`-object filter-dump`), and the test finds the frames from the NIC's address there
//! (docs/linux.md, "Assigned PCI functions").

use std::path::PathBuf;
use std::time::Duration;

use bulkhead_tests::initramfs::{INIT_MARKER, insmod_lines};
use bulkhead_tests::kernel::{target_dir, workspace_root};
use bulkhead_tests::{Emulator, Run, linux_assets};

/// The system file: Linux on cores 0 and 1 owning `nic`.
const SYSTEM: &str = "tests/configs/qemu-linux-nic.toml";
/// The NIC's address (QEMU `mac=`).
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The packet capture QEMU writes in the run folder.
const PCAP: &str = "nic.pcap";
/// The NIC's PCI address as Linux names it.
const FUNCTION: &str = "0000:00:05.0";
/// The partition's address and a neighbour that does not exist (TEST-NET-1, RFC 5737):
/// ARP requests and ICMP echo requests go out unanswered.
const ADDRESS: &str = "192.0.2.1/24";
const PEER: &str = "192.0.2.2";

/// What `/init` prefixes its reports with, in the kernel log.
const PREFIX: &str = "bulkhead-test:";

/// `/init`: after the pause linux.rs explains (the console's rate limit refills after
/// Linux's boot lines), loads the modules, reports which function the driver bound and
/// every function Linux enumerated, brings the interface up with an address, waits for
/// the carrier, counts the interface's interrupts (/proc/interrupts) before and after
/// sending ARP and ICMP requests, and gives the verdict on port 0xf4: pass when the
/// modules loaded, the driver bound the NIC, the carrier came up, frames went out and
/// interrupts came in.
fn init_script(release: &str, modules: &[String]) -> String {
    format!(
        "#!/bin/sh\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         sleep 3\n\
         fail=0\n\
         say() {{ echo \"{PREFIX} $*\" > /dev/kmsg; }}\n\
         irqs() {{ awk -v i=\"$1\" '$NF == i || $NF ~ (\"^\" i \"-\") {{ for (f = 2; f <= NF && $f ~ /^[0-9]+$/; f++) s += $f }} END {{ print s + 0 }}' /proc/interrupts; }}\n\
         {insmod}\
         sleep 1\n\
         say \"bound: $(ls /sys/bus/pci/drivers/e1000e 2>/dev/null | grep : | tr '\\n' ' ')\"\n\
         say \"functions: $(ls /sys/bus/pci/devices | tr '\\n' ' ')\"\n\
         ifc=$(ls /sys/bus/pci/devices/{FUNCTION}/net 2>/dev/null | head -n 1)\n\
         say \"interface: $ifc\"\n\
         [ -n \"$ifc\" ] || {{ ifc=eth0; fail=1; }}\n\
         ip link set \"$ifc\" up || fail=1\n\
         ip addr add {ADDRESS} dev \"$ifc\" || fail=1\n\
         for i in $(seq 1 20); do [ \"$(cat /sys/class/net/$ifc/carrier 2>/dev/null)\" = 1 ] && break; sleep 1; done\n\
         carrier=$(cat /sys/class/net/$ifc/carrier 2>/dev/null)\n\
         say \"carrier: $carrier\"\n\
         say \"operstate: $(cat /sys/class/net/$ifc/operstate 2>/dev/null)\"\n\
         [ \"$carrier\" = 1 ] || fail=1\n\
         before=$(irqs \"$ifc\")\n\
         arping -c 3 -I \"$ifc\" {PEER} > /dev/null 2>&1\n\
         ping -c 2 -W 1 {PEER} > /dev/null 2>&1\n\
         sleep 1\n\
         after=$(irqs \"$ifc\")\n\
         say \"interrupts: $before -> $after\"\n\
         [ \"$after\" -gt \"$before\" ] || fail=1\n\
         tx=$(cat /sys/class/net/$ifc/statistics/tx_packets 2>/dev/null)\n\
         say \"tx packets: $tx\"\n\
         [ \"${{tx:-0}}\" -gt 0 ] || fail=1\n\
         say \"msi irqs: $(ls /sys/bus/pci/devices/{FUNCTION}/msi_irqs 2>/dev/null | tr '\\n' ' ')\"\n\
         say \"msi mode: $(cat /sys/bus/pci/devices/{FUNCTION}/msi_irqs/* 2>/dev/null | sort -u | tr '\\n' ' ')\"\n\
         grep \"$ifc\" /proc/interrupts | while read -r line; do say \"irq line: $line\"; done\n\
         dmesg | grep -i -e e1000e -e 'PCI: ' -e mmconfig -e ECAM | while read -r line; do say \"dmesg: $line\"; done\n\
         echo \"{INIT_MARKER} (kernel $(uname -r), $(nproc) cpus)\" > /dev/kmsg\n\
         if [ $fail = 0 ]; then verdict='\\0'; else verdict='\\1'; fi\n\
         echo -ne \"$verdict\" | dd of=/dev/port bs=1 seek=244 count=1\n\
         while true; do sleep 1; done\n",
        insmod = insmod_lines(release, modules),
    )
}

/// The frames of a classic pcap file (the format QEMU's filter-dump writes: a 24-byte
/// global header, then per frame a 16-byte record header whose third word is the captured
/// length; the magic number's byte order is the file's). Written here because the test
/// needs only the frames' bytes, a few lines, where a crate would add a dependency tree.
fn pcap_frames(file: &[u8]) -> Result<Vec<&[u8]>, String> {
    let word = |at: usize, le: bool| -> Option<u32> {
        let b: [u8; 4] = file.get(at..at + 4)?.try_into().ok()?;
        Some(if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let le = match word(0, true) {
        Some(0xa1b2_c3d4 | 0xa1b2_3c4d) => true,
        Some(0xd4c3_b2a1 | 0x4d3c_b2a1) => false,
        other => return Err(format!("not a pcap file (magic {other:x?})")),
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at < file.len() {
        let len = word(at + 8, le).ok_or_else(|| format!("record header cut at {at}"))? as usize;
        let frame = file.get(at + 16..at + 16 + len).ok_or_else(|| format!("frame cut at {at}"))?;
        frames.push(frame);
        at += 16 + len;
    }
    Ok(frames)
}

#[test]
fn pcap_frames_are_read_back() {
    let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    file.extend([0; 16]);
    for frame in [&[1u8, 2, 3][..], &[4u8; 60][..]] {
        file.extend([0; 8]);
        file.extend((frame.len() as u32).to_le_bytes());
        file.extend((frame.len() as u32).to_le_bytes());
        file.extend(frame);
    }
    assert_eq!(pcap_frames(&file).unwrap(), [&[1u8, 2, 3][..], &[4u8; 60][..]]);
    assert!(pcap_frames(&file[..file.len() - 1]).unwrap_err().contains("frame cut"));
    assert!(pcap_frames(b"not a capture at all....").is_err());
}

/// The system file with the test's initramfs and the board's absolute path, under
/// `target/bulkhead-configs/linux/`.
fn system_file(initrd: &std::path::Path) -> PathBuf {
    let source = workspace_root().join(SYSTEM);
    let text = std::fs::read_to_string(&source).unwrap();
    let board = source.parent().unwrap().join("boards/qemu-q35-nic.toml");
    let text = text
        .replace("initrd = \"@linux/shell-initramfs\"", &format!("initrd = {:?}", initrd.display().to_string()))
        .replace("board = \"boards/qemu-q35-nic.toml\"", &format!("board = {:?}", board.display().to_string()));
    assert!(text.contains(&initrd.display().to_string()), "{SYSTEM} names no @linux/shell-initramfs");
    let path = initrd.with_file_name("linux-nic.qemu.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn linux_nic_qemu_debian_e1000e_drives_the_assigned_nic() {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    let release = &assets.selection.release;
    let modules = assets.modules(&["e1000e"]).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    let dir = target_dir().join("bulkhead-configs/linux");
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initramfs-nic.cpio");
    let mut fs = assets.initramfs().unwrap_or_else(|e| panic!("{e}")).modules(release, &modules);
    for applet in ["ip", "arping", "ping", "awk", "tr", "seq"] {
        fs = fs.symlink(&format!("bin/{applet}"), "busybox");
    }
    fs.file("init", init_script(release, &names).into_bytes(), 0o755).write(&initrd).unwrap();
    let mac = MAC.map(|b| format!("{b:02x}")).join(":");
    let report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config(system_file(&initrd))
        .qemu_args([
            // The VT-d unit first, before the PCI devices it translates.
            "-device".to_string(),
            "intel-iommu".into(),
            "-netdev".into(),
            "hubport,id=n0,hubid=0".into(),
            "-device".into(),
            format!("e1000e,netdev=n0,addr=0x5,mac={mac}"),
            "-object".into(),
            format!("filter-dump,id=d0,netdev=n0,file={PCAP}"),
        ])
        .collect(PCAP)
        .expect("iommu dmar0: 00:05.0 (nic) in the domain of partition linux")
        .expect("iommu dmar0 at 0xfed90000: DMA remapping on")
        .forbid("not confined by an IOMMU")
        .forbid("DMA fault:")
        .expect("partition linux: iommu: DMA faults 0 ")
        // BAR3 holds the MSI-X table (5 entries) at its start: that page is emulated.
        .expect("pci: nic: MSI-X table at 0xfebd0000 (5 entries) emulated, pages 0xfebd0000-0xfebd0fff trapped")
        .forbid("MSI-X table refused")
        .timeout(Duration::from_secs(400))
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    let console = report.partition_console("linux");
    for line in console.iter().filter(|l| l.contains(PREFIX)) {
        eprintln!("  {line}");
    }
    let value = |key: &str| -> Option<String> {
        let needle = format!("{PREFIX} {key}: ");
        console.iter().find_map(|l| l.split_once(&needle).map(|(_, v)| v.trim().to_string()))
    };
    // Linux found the MCFG the hypervisor wrote (buses 0 and 1 of the board's window), and
    // uses the window for the extended configuration space because the e820 map reserves
    // it; it found bus 0 through the MCFG's bus range (its peer-bus scan), without any
    // `pci=` option.
    for text in [
        "ACPI: MCFG 0x",
        "PCI: MMCONFIG at [mem 0xb0000000-0xb01fffff] reserved in E820",
        "PCI: Discovered peer bus 00",
    ] {
        assert!(console.iter().any(|l| l.contains(text)), "not in Linux's log: {text}\n{}", report.diagnostic());
    }
    for name in &names {
        let loaded = format!("bulkhead-initramfs: insmod {name}: exit 0");
        assert!(console.iter().any(|l| l.ends_with(&loaded)), "{loaded:?} not logged\n{}", report.diagnostic());
    }
    assert_eq!(value("bound").as_deref(), Some(FUNCTION), "e1000e did not bind the NIC\n{}", report.diagnostic());
    assert_eq!(value("carrier").as_deref(), Some("1"), "{}", report.diagnostic());
    assert_eq!(value("operstate").as_deref(), Some("up"), "{}", report.diagnostic());
    let interrupts = value("interrupts").unwrap_or_default();
    let counts: Vec<u64> = interrupts.split(" -> ").filter_map(|n| n.parse().ok()).collect();
    assert!(
        matches!(counts[..], [before, after] if after > before),
        "the NIC's interrupt count did not grow: {interrupts:?}\n{}",
        report.diagnostic()
    );
    // The driver uses MSI-X (its table emulated by the hypervisor), one vector per queue:
    // the transmit queue's vector took the interrupts of the frames sent.
    assert_eq!(value("msi mode").as_deref(), Some("msix"), "e1000e must use MSI-X\n{}", report.diagnostic());
    let tx_interrupts: u64 = console
        .iter()
        .filter_map(|l| l.split_once(&format!("{PREFIX} irq line: ")).map(|(_, v)| v))
        .filter(|v| v.contains("PCI-MSI") && v.ends_with("-tx-0"))
        .flat_map(|v| v.split_whitespace().skip(1).map_while(|n| n.parse::<u64>().ok()))
        .sum();
    assert!(tx_interrupts > 0, "no interrupt on the MSI-X transmit vector\n{}", report.diagnostic());
    let functions = value("functions").unwrap_or_default();
    // The hypervisor filters configuration space: Linux enumerates its own function only.
    assert_eq!(functions, FUNCTION, "Linux must enumerate exactly its own function");
    report.assert_passed();

    // What the NIC put on the wire: frames from its address, ARP among them.
    let pcap = report.collected(PCAP).unwrap_or_else(|| panic!("QEMU wrote no {PCAP}\n{}", report.diagnostic()));
    let frames = pcap_frames(pcap).unwrap_or_else(|e| panic!("{PCAP}: {e}"));
    let ours: Vec<&&[u8]> = frames.iter().filter(|f| f.get(6..12) == Some(&MAC[..])).collect();
    let arp = ours.iter().filter(|f| f.get(12..14) == Some(&[0x08, 0x06][..])).count();
    eprintln!("{PCAP}: {} frames, {} from {mac}, {arp} ARP", frames.len(), ours.len());
    assert!(arp >= 1, "no ARP frame from {mac} in {PCAP} ({} frames)", frames.len());
}
