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

/// The cached headers are those of the cached kernel: a module built against them (`make -C
/// kbuild_dir M=...`) loads into the kernel booted directly, which prints its release from
/// the module. A header set of another build would fail at `insmod` (vermagic, symbol
/// versions).
#[test]
fn linux_direct_qemu_loads_a_module_built_against_the_cached_headers() {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    let release = &assets.selection.release;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bulkhead_probe.c"),
        "#include <linux/module.h>\n#include <linux/utsname.h>\n\
         static int __init probe_init(void)\n{\n\tpr_info(\"bulkhead_probe: loaded into %s\\n\", utsname()->release);\n\treturn 0;\n}\n\
         module_init(probe_init);\nMODULE_LICENSE(\"GPL\");\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("Kbuild"), "obj-m := bulkhead_probe.o\n").unwrap();
    let output = std::process::Command::new("make")
        .arg("-C")
        .arg(assets.kbuild_dir())
        .arg(format!("M={}", dir.path().display()))
        .arg("modules")
        .output()
        .unwrap_or_else(|e| panic!("cannot run make ({e}); `cargo xtask test` installs it"));
    assert!(
        output.status.success(),
        "building a module against {} failed:\n{}{}",
        assets.kbuild_dir().display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let module = std::fs::read(dir.path().join("bulkhead_probe.ko")).unwrap();

    // A module the kernel refuses powers the machine off, so the run fails at once.
    let init = "#!/bin/sh\nexport PATH=/bin\nmount -t proc proc /proc\n\
                insmod /lib/modules/bulkhead_probe.ko || { echo \"probe: insmod failed\"; poweroff -f; }\n\
                echo \"probe: insmod ok\"\n\
                grep -q '^bulkhead_probe ' /proc/modules && echo \"probe: listed in /proc/modules\"\n\
                exec sh\n";
    let initrd = dir.path().join("initramfs.cpio");
    assets
        .initramfs()
        .unwrap_or_else(|e| panic!("{e}"))
        .file("lib/modules/bulkhead_probe.ko", module, 0o644)
        .file("init", init.as_bytes().to_vec(), 0o755)
        .write(&initrd)
        .unwrap();
    let loaded = format!("bulkhead_probe: loaded into {release}");
    DirectBoot::new(assets.vmlinuz(), &initrd)
        .timeout(Duration::from_secs(300))
        .until(&[&loaded, "probe: insmod ok", "probe: listed in /proc/modules"])
        .run()
        .unwrap_or_else(|e| panic!("{e}"))
        .assert_reached();
}
