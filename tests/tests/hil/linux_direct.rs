//! Debian's kernel, obtained through apt, boots directly in QEMU (no hypervisor) with the
//! initramfs built in Rust, to its `/init` and a shell on the serial console. This checks
//! the Linux assets themselves, and is the baseline "the same kernel booted directly".

use std::time::Duration;

use bulkhead_tests::direct::DirectBoot;
use bulkhead_tests::initramfs::{INIT_MARKER, SHELL_PROMPT};
use bulkhead_tests::linux_assets;

#[test]
fn linux_direct_qemu_boots_debian_kernel_to_init_and_shell() {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    assets.check_initramfs_support().unwrap_or_else(|e| panic!("{e}"));
    let initrd = assets.base_initramfs().unwrap_or_else(|e| panic!("{e}"));
    let release = &assets.selection.release;
    // The marker line names the running kernel and its CPUs: Debian's kernel of the cached
    // version, both CPUs brought up.
    let marker = format!("{INIT_MARKER} (kernel {release}, 2 cpus)");
    let report = DirectBoot::new(assets.vmlinuz(), &initrd)
        .cpus(2)
        // TCG on a shared two-core host: the boot takes tens of seconds, give it minutes.
        .timeout(Duration::from_secs(300))
        .until(&[&format!("Linux version {release}"), "Run /init as init process", &marker, SHELL_PROMPT])
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    report.assert_reached();
    eprintln!(
        "{}: /init reached {:.1} s after QEMU started, shell prompt at {:.1} s",
        report.name,
        report.time_to(&marker).unwrap_or_default().as_secs_f64(),
        report.time_to(SHELL_PROMPT).unwrap_or_default().as_secs_f64()
    );
    assert!(!report.serial.contains("Kernel panic"), "{}", report.serial);
}
