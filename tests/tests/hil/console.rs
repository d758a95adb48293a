//! The text console (`console_format = "text"`): a kernel that prints readable lines is
//! judged by the harness as a defmt kernel is, prints what the defmt kernel's frames
//! decode to, writes nothing but printable lines after its marker, and a partition cannot
//! forge a hypervisor line on it.

use bulkhead_abi::run::{CONSOLE_SYNC, TEXT_CONSOLE_SYNC};
use bulkhead_tests::{Emulator, Line, Outcome, Report, Run, kernel};

/// The demo (`board/systems/demo.toml`) with a text console.
const TEXT_DEMO: &str = "tests/configs/text-console.toml";
/// Attacker and witness (`bochs-isolation.toml`) with a text console.
const TEXT_ISOLATION: &str = "tests/configs/bochs-text-isolation.toml";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a serial terminal would show after the text marker: valid UTF-8, no control
/// character but the CR LF that ends each line, every line a log line, and exactly the
/// log lines the harness decoded, in order. Any defmt frame (binary, zero-terminated)
/// fails this.
fn assert_printable_text_lines(report: &Report) {
    let raw = &report.serial;
    let marker = &TEXT_CONSOLE_SYNC[2..TEXT_CONSOLE_SYNC.len() - 2];
    let at = find(raw, marker).unwrap_or_else(|| panic!("no text marker in the capture:\n{}", report.diagnostic()));
    assert!(find(raw, &CONSOLE_SYNC[2..CONSOLE_SYNC.len() - 3]).is_none(), "a defmt marker on a text console");
    let after = &raw[at + marker.len()..];
    let text = std::str::from_utf8(after).unwrap_or_else(|e| panic!("not UTF-8 after the marker: {e}"));
    if let Some((i, c)) = text.char_indices().find(|(_, c)| c.is_control() && !matches!(c, '\r' | '\n')) {
        panic!("control character {c:?} at byte {i} after the marker: {:?}", &text[i.saturating_sub(80)..i + 1]);
    }
    let body = text.strip_prefix("\r\n").expect("the marker ends with CR LF");
    assert!(body.ends_with("\r\n"), "the last line is ended");
    let lines: Vec<&str> = body.split_terminator("\r\n").collect();
    assert!(lines.iter().all(|l| !l.contains(['\r', '\n'])), "a line end other than CR LF");
    let parsed: Vec<Line> =
        lines.iter().map(|l| Line::parse_text(l).unwrap_or_else(|| panic!("not a log line: {l:?}"))).collect();
    let decoded: Vec<&Line> = report.lines.iter().filter(|l| matches!(l, Line::Log { .. })).collect();
    assert_eq!(parsed.iter().collect::<Vec<_>>(), decoded, "the harness decoded exactly the printed lines");
    assert_eq!(report.malformed_frames, 0);
}

/// The demo with a text console passes with the demo's expectations.
fn text_demo(emulator: Emulator) -> Report {
    let backend = if emulator.is_vmx() {
        "backend: vmx (Intel VT-x, EPT)"
    } else {
        "backend: svm (AMD-V, NPT) (partitions' x2APIC emulated on the xAPIC)"
    };
    let report = Run::new(emulator)
        .cpus(2)
        .scenario(TEXT_DEMO)
        .expect(backend)
        .expect("INFO ] config: system text-console on board ")
        .expect("partition control: starting on cpu 1 at 0x100000")
        .expect("partition telemetry: starting on cpu 0 at 0x100000")
        .expect("[cpu1 INFO ] [control] started; periodic x2APIC timer, vector 0x40")
        .expect("[cpu0 INFO ] [telemetry] report 1 from control: tick ")
        .expect("[cpu1 INFO ] [control] telemetry acknowledged report 1")
        .expect("[cpu0 INFO ] [telemetry] control has seen acknowledgements up to report ")
        .expect("partition telemetry: reports PASS")
        .expect("INFO ] run ended: success")
        .forbid(": fault #")
        .execute();
    report.assert_passed();
    assert_printable_text_lines(&report);
    report
}

#[test]
fn text_console_demo_on_qemu_svm() {
    text_demo(Emulator::QemuBios);
}

#[test]
fn text_console_demo_on_bochs_vmx() {
    text_demo(Emulator::Bochs);
}

/// The boot CPU's lines up to the backend choice (before the partitions' timing-dependent
/// output), with numbers and addresses blanked (the two kernels differ in size, so the
/// boot modules land elsewhere, and the TSC calibration varies), and the system's name.
fn boot_lines(report: &Report, name: &str) -> Vec<String> {
    let blank_numbers = |s: &str| {
        let mut out = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                let hex = c == '0' && chars.peek() == Some(&'x');
                if hex {
                    chars.next();
                }
                while chars.peek().is_some_and(|d| if hex { d.is_ascii_hexdigit() } else { d.is_ascii_digit() }) {
                    chars.next();
                }
                out.push('#');
            } else {
                out.push(c);
            }
        }
        out
    };
    let mut lines = Vec::new();
    for line in &report.lines {
        let Line::Log { timestamp: Some(cpu), .. } = line else { continue };
        if cpu != "cpu0" {
            continue;
        }
        lines.push(blank_numbers(&line.to_string().replace(name, "SYSTEM")));
        if line.message().starts_with("backend: ") {
            return lines;
        }
    }
    panic!("no backend line:\n{}", report.diagnostic());
}

/// A text kernel's failures read as a defmt kernel's: an exception names its vector and
/// registers, a panic its place and message (through `Display2Format`), and the harness
/// fails the run on them.
#[test]
fn text_console_reports_exceptions_and_panics() {
    for (switch, needles) in [
        ("test=ud", ["[cpu0 ERROR] exception #UD (vector 6) on cpu 0: error_code=0x0 rip=0x", "rflags=0x"]),
        ("test=panic", ["[cpu0 ERROR] panicked at kernel/src/", ": test: panic on purpose"]),
    ] {
        let report = Run::new(Emulator::QemuBios)
            .name(format!("text_console_reports_{switch}"))
            .cpus(2)
            .scenario(TEXT_DEMO)
            .switch(switch)
            .execute();
        let diagnostic = report.diagnostic();
        assert!(matches!(report.outcome, Outcome::Failed(_)), "{diagnostic}");
        for needle in needles.iter().chain(&["ERROR] run ended: failure: "]) {
            assert!(report.contains(needle), "no {needle:?}:\n{diagnostic}");
        }
        assert_printable_text_lines(&report);
    }
}

/// Both console formats print the same messages: the text kernel's lines equal what the
/// defmt kernel's frames decode to (the config summary covers `{=[?]}`, hex, booleans and
/// a value with a format impl of its own, the watchdog).
#[test]
fn text_and_defmt_consoles_print_the_same_lines() {
    let text = text_demo(Emulator::QemuBios);
    let defmt = Run::new(Emulator::QemuBios).cpus(2).config("board/systems/demo.toml").execute();
    defmt.assert_passed();
    let (text, defmt) = (boot_lines(&text, "text-console"), boot_lines(&defmt, "demo"));
    assert!(text.len() > 20, "{text:#?}");
    // The first difference, then both lists (a CI log keeps only the ends of long output).
    if let Some(i) = (0..text.len().max(defmt.len())).find(|&i| text.get(i) != defmt.get(i)) {
        panic!(
            "line {i} differs: text {:?}, defmt {:?}\ntext: {text:#?}\ndefmt: {defmt:#?}",
            text.get(i),
            defmt.get(i)
        );
    }
}

/// The text demo differs from the demo only in its name, comments and console format, so
/// the text-console tests stand for the demo.
#[test]
fn text_console_config_is_the_demo() {
    let significant = |path: &str| -> Vec<String> {
        let text = std::fs::read_to_string(kernel::workspace_root().join(path)).unwrap();
        text.lines()
            .map(|l| l.split('#').next().unwrap().trim().to_string())
            .filter(|l| !l.is_empty() && !l.starts_with("name =") && !l.starts_with("console_format ="))
            .collect()
    };
    assert_eq!(significant(TEXT_DEMO), significant("board/systems/demo.toml"));
    assert!(
        std::fs::read_to_string(kernel::workspace_root().join(TEXT_DEMO))
            .unwrap()
            .contains("console_format = \"text\"")
    );
}

/// A partition's console text cannot become a hypervisor line: its line end only ends its
/// own line (the forged success line stays prefixed with the partition's name and is not
/// the run's verdict), and control characters reach the console as `?`.
fn guest_cannot_forge_lines(emulator: Emulator) {
    // The witness outlasts the attack (QEMU runs it far faster than Bochs).
    let cycles: u64 = if emulator.is_qemu() { 200_000_000 } else { 8_000_000 };
    let report = Run::new(emulator)
        .cpus(2)
        .scenario(TEXT_ISOLATION)
        .switch(format!("witness:cycles={cycles}"))
        .switch("attacker:attack=console")
        .expect("[cpu1 INFO ] [attacker] attacker: forging")
        .expect("[cpu1 INFO ] [attacker] [cpu0 INFO ] run ended: success")
        .expect("[cpu1 INFO ] [attacker] attacker: control ?[2J??over")
        .expect("partition witness: reports PASS")
        .execute();
    report.assert_passed();
    assert_printable_text_lines(&report);
    let verdicts: Vec<&Line> = report.lines.iter().filter(|l| l.is_run_success()).collect();
    assert_eq!(verdicts.len(), 1, "only the hypervisor's own run-end line: {verdicts:?}");
    let forged = report.lines.iter().find(|l| l.message().contains("] run ended: success")).unwrap();
    assert_eq!(forged.partition_console(), Some("attacker"));
}

#[test]
fn text_console_guest_cannot_forge_lines_on_qemu_svm() {
    guest_cannot_forge_lines(Emulator::QemuBios);
}

#[test]
fn text_console_guest_cannot_forge_lines_on_bochs_vmx() {
    guest_cannot_forge_lines(Emulator::Bochs);
}
