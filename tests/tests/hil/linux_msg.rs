//! Linux messages the real-time partition: Debian's kernel on two vCPUs with the
//! `bulkhead_msg` module (built against the cached headers) and the `bulkhead-msg` command,
//! beside `linux-control` on its own core, over two message and two event connections
//! (docs/linux.md, "Messaging with the real-time partition").

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulkhead_tests::initramfs::{INIT_MARKER, INIT_SETUP, step_function};
use bulkhead_tests::kernel::{target_dir, workspace_root};
use bulkhead_tests::linux_system::{TEST_CMDLINE, linux_partition_toml};
use bulkhead_tests::{Emulator, Report, Run, linux_assets, linux_msg};

/// Messages of the flood, Linux → control → Linux.
const FLOOD: u64 = 10_000;
/// Milliseconds the flood leaves the echoes unread at its start, so that the queues fill
/// and the driver must retry on INSUFFICIENT_BUFFERS.
const FLOOD_STALL_MS: u64 = 1000;
/// Message and signal round trips.
const PINGS: u64 = 3;
const EVENT_PINGS: u64 = 100;

/// What /init prints before each command's output lines, into the kernel log.
const PREFIX: &str = "bulkhead-test:";

/// `/init`: after the pause linux.rs explains (the console's rate limit refills after
/// Linux's boot lines), loads the module and runs the commands, each one's output and exit
/// status into the kernel log (`/dev/kmsg`, so they reach the console), then the verdict
/// on port 0xf4: pass only when every command succeeded.
fn init_script(commands: &[String]) -> String {
    let module = linux_msg::INITRAMFS_MODULE;
    let step = step_function(PREFIX);
    let mut script = format!(
        "#!/bin/sh\n\
         {INIT_SETUP}\
         sleep 3\n\
         fail=0\n\
         {step}\
         step insmod /{module}\n\
         step ls /dev/bulkhead\n"
    );
    for command in commands {
        script.push_str(&format!("step {command}\n"));
    }
    script.push_str(&format!(
        "echo \"{INIT_MARKER} (kernel $(uname -r), $(nproc) cpus)\" > /dev/kmsg\n\
         if [ $fail = 0 ]; then verdict='\\0'; else verdict='\\1'; fi\n\
         echo -ne \"$verdict\" | dd of=/dev/port bs=1 seek=244 count=1\n\
         while true; do sleep 1; done\n"
    ));
    script
}

/// The commands of the test against `linux-control`: every `bulkhead-msg` command, then
/// the module unloaded and loaded again.
fn control_commands() -> Vec<String> {
    let module = linux_msg::INITRAMFS_MODULE;
    vec![
        format!("bulkhead-msg ping control {PINGS}"),
        "bulkhead-msg burst control".into(),
        format!("bulkhead-msg flood control {FLOOD} {FLOOD_STALL_MS}"),
        format!("bulkhead-msg event-ping control {EVENT_PINGS}"),
        "bulkhead-msg list".into(),
        // Unloading disables the SynIC; loaded again, the module sets it up anew.
        "rmmod bulkhead_msg".into(),
        format!("insmod /{module}"),
        "bulkhead-msg ping control 1".into(),
    ]
}

/// The bare-metal real-time partition, `linux-control`.
const LINUX_CONTROL: &str = "kind = \"elf\"\npath = \"@guests/linux-control\"\ncmdline = \"status_every=2000\"\n";

/// Linux on cores 0 and 1 (the memory of linux.rs's systems), partition `control` on core
/// 2 with `payload` (a `[partition.payload]` table's keys), and the four connections by the
/// names `bulkhead-msg` expects for peer `control`; the message queues hold 4, so a flood
/// fills them. Written as `NAME.qemu.toml` in `dir`.
fn system_file(dir: &Path, name: &str, vmlinuz: &Path, initrd: &Path, payload: &str) -> PathBuf {
    let board = workspace_root().join("tests/configs/boards/qemu-q35-3cpu.toml");
    let text = format!(
        "name = \"{name}\"\n\
         board = {board:?}\n\
         [hypervisor]\n\
         reserved_memory = {{ base = 0x100000, size = \"31 MiB\" }}\n\
         verdict_partition = \"linux\"\n\
         {linux}\
         [[partition]]\n\
         name = \"control\"\n\
         cores = [2]\n\
         [[partition.memory]]\n\
         guest_base = 0x0\n\
         size = \"16 MiB\"\n\
         large_pages = true\n\
         [partition.payload]\n\
         {payload}\
         [[connection]]\n\
         id = 11\n\
         name = \"to-control\"\n\
         from = \"linux\"\n\
         to = \"control\"\n\
         kind = \"message\"\n\
         sint = 2\n\
         queue_depth = 4\n\
         [[connection]]\n\
         id = 21\n\
         name = \"from-control\"\n\
         from = \"control\"\n\
         to = \"linux\"\n\
         kind = \"message\"\n\
         sint = 2\n\
         queue_depth = 4\n\
         [[connection]]\n\
         id = 13\n\
         name = \"to-control-event\"\n\
         from = \"linux\"\n\
         to = \"control\"\n\
         kind = \"event\"\n\
         sint = 3\n\
         flag = 0\n\
         [[connection]]\n\
         id = 23\n\
         name = \"from-control-event\"\n\
         from = \"control\"\n\
         to = \"linux\"\n\
         kind = \"event\"\n\
         sint = 3\n\
         flag = 0\n",
        board = board.display().to_string(),
        linux = linux_partition_toml("linux", "[0, 1]", "", vmlinuz, initrd, TEST_CMDLINE),
    );
    let path = dir.join(format!("{name}.qemu.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Boots Linux with the module and an `/init` running `commands`, beside partition
/// `control` with `payload`; the system `NAME.qemu.toml`.
fn run(name: &str, commands: &[String], payload: &str) -> Report {
    let assets = linux_assets::shared().unwrap_or_else(|e| panic!("{e}"));
    let dir = target_dir().join("bulkhead-configs/linux");
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join(format!("initramfs-{name}.cpio"));
    let initramfs = assets.initramfs().unwrap_or_else(|e| panic!("{e}"));
    linux_msg::add_to_initramfs(assets, initramfs)
        .unwrap_or_else(|e| panic!("{e}"))
        .file("init", init_script(commands).into_bytes(), 0o755)
        .write(&initrd)
        .unwrap();
    let config = system_file(&dir, name, &assets.vmlinuz(), &initrd, payload);
    let report = Run::new(Emulator::QemuBios)
        .cpus(3)
        .config(&config)
        // TCG on a shared two-core host: tens of seconds to /init, then the flood.
        .timeout(Duration::from_secs(600))
        .forbid("control: fault")
        .forbid("[control] panic:")
        .execute();
    eprintln!("{}: verdict after {:.1} s", report.name, report.elapsed.as_secs_f64());
    report
}

/// The number after `key` in `line` (`"… 12 retries …"` with key `" retries"` reads 12).
fn number_before(line: &str, key: &str) -> Option<u64> {
    let head = &line[..line.find(key)?];
    head.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The module finds the four connections in the hypervisor's BHCN table and makes them
/// devices; through them Linux pings the control partition, fills the queues without
/// blocking until EAGAIN, floods 10 000 messages that all come back in order and intact
/// with the driver retrying on full queues (counted), and exchanges signals both ways; the
/// module unloads and loads again and still pings; the control partition's timer ticks
/// throughout.
#[test]
fn linux_msg_qemu_module_messages_the_control_partition() {
    let report = run("linux-msg", &control_commands(), LINUX_CONTROL);
    let console = report.partition_console("linux");
    let ours: Vec<&String> = console.iter().filter(|l| l.contains(PREFIX) || l.contains("bulkhead_msg:")).collect();
    for line in &ours {
        eprintln!("  {line}");
    }
    let line_with = |text: &str| console.iter().find(|l| l.contains(text)).cloned();
    let need = |text: &str| {
        line_with(text)
            .unwrap_or_else(|| panic!("not on the linux partition's console: {text}\n{}", report.diagnostic()))
    };
    // Linux installed the hypervisor's BHCN table (its early boot lines list every table),
    // and the module's load lines show each connection with what the table says of it.
    for text in [
        "ACPI: BHCN 0x",
        "bulkhead_msg: /dev/bulkhead/to-control: message connection 0xb, outgoing, SINT 2, queue depth 4",
        "bulkhead_msg: /dev/bulkhead/from-control: message connection 0x15, incoming, SINT 2, queue depth 4",
        "bulkhead_msg: /dev/bulkhead/to-control-event: event connection 0xd, outgoing, SINT 3, flag 0",
        "bulkhead_msg: /dev/bulkhead/from-control-event: event connection 0x17, incoming, SINT 3, flag 0",
        "bulkhead_msg: 4 connections; SynIC enabled on CPU 0 (VP 0), SINT mask 0xc, vector 0xf3",
    ] {
        need(text);
    }
    need(&format!("{PREFIX} insmod /{}: exit 0", linux_msg::INITRAMFS_MODULE));
    for command in ["bulkhead-msg ping", "bulkhead-msg burst", "bulkhead-msg flood", "bulkhead-msg event-ping"] {
        need(&format!("{PREFIX} {command}: exit 0"));
    }
    need(&format!("{PREFIX} ping control: {PINGS} pings answered"));
    need(&format!("{PREFIX} event-ping control: {EVENT_PINGS} signals answered"));
    need(&format!("{PREFIX} rmmod bulkhead_msg: exit 0"));
    need("bulkhead_msg: unloaded; SynIC of CPU 0 disabled");
    need(&format!("{PREFIX} ping control: 1 pings answered"));
    // The burst met a full queue without blocking, and every message it got in came back.
    let burst = need(&format!("{PREFIX} burst control: "));
    let accepted = number_before(&burst, " accepted before EAGAIN").unwrap_or(0);
    assert!(accepted > 0, "{burst}");
    assert!(burst.ends_with(&format!("{accepted} echoed, 0 lost, 0 out of order, 0 corrupt, 0 duplicates")), "{burst}");
    // The flood: all back, in order, intact; the driver retried on full queues.
    let flood = need(&format!("{PREFIX} flood control: "));
    assert!(
        flood.contains(&format!("{FLOOD} sent, {FLOOD} echoed, 0 lost, 0 out of order, 0 corrupt, 0 duplicates, ")),
        "{flood}"
    );
    let retries = number_before(&flood, " retries (queue full)").unwrap_or(0);
    assert!(retries > 0, "no INSUFFICIENT_BUFFERS retry counted: {flood}");
    eprintln!("flood: {FLOOD} messages, {retries} retries; burst: {accepted} messages before EAGAIN");
    // The control partition's timer kept ticking: status lines at different ticks.
    let control = report.partition_console("control");
    let ticks: Vec<u64> =
        control.iter().filter_map(|l| l.strip_prefix("tick ")?.split(':').next()?.parse().ok()).collect();
    assert!(ticks.windows(2).any(|w| w[1] > w[0]), "control's status lines: {ticks:?}\n{}", report.diagnostic());
    report.assert_passed();
}

/// The same module and command against a Rust std program instead of the bare-metal
/// `linux-control`: `apps/linux-peer`, which answers with the `bulkhead-messaging` crate
/// on the Bulkhead runtime. Linux pings it, floods 10 000 messages that all come back in
/// order and intact (the flood checks each; its first second leaves the echoes unread, so
/// the queues fill and both sides meet INSUFFICIENT_BUFFERS) and exchanges 100 signals.
#[test]
fn linux_msg_qemu_module_messages_a_std_program() {
    let commands = [
        format!("bulkhead-msg ping control {PINGS}"),
        format!("bulkhead-msg flood control {FLOOD} {FLOOD_STALL_MS}"),
        format!("bulkhead-msg event-ping control {EVENT_PINGS}"),
    ];
    let peer = "kind = \"hermit\"\npath = \"@apps/linux-peer\"\ncmdline = \"status_every=2000\"\n";
    let report = run("linux-msg-std", &commands, peer);
    let need = |text: &str| report.console_line("linux", text);
    for command in ["bulkhead-msg ping", "bulkhead-msg flood", "bulkhead-msg event-ping"] {
        need(&format!("{PREFIX} {command}: exit 0"));
    }
    need(&format!("{PREFIX} ping control: {PINGS} pings answered"));
    let flood = need(&format!("{PREFIX} flood control: "));
    assert!(
        flood.contains(&format!("{FLOOD} sent, {FLOOD} echoed, 0 lost, 0 out of order, 0 corrupt, 0 duplicates, ")),
        "{flood}"
    );
    need(&format!("{PREFIX} event-ping control: {EVENT_PINGS} signals answered"));
    // The std program answered them all: its status lines count the flood's messages.
    let peer = report.partition_console("control");
    assert!(
        peer.iter().any(|l| l == "linux-peer: 10000 messages answered"),
        "the std program's count: {peer:?}\n{}",
        report.diagnostic()
    );
    report.assert_passed();
}
