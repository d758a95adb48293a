//! `bulkhead-msg`: the command a Linux partition uses to talk to another partition through
//! the `bulkhead_msg` kernel module (linux/bulkhead-msg), which makes each of the
//! partition's connections a device `/dev/bulkhead/NAME` (docs/linux.md, "Messaging with the
//! real-time partition"). Built as a static binary for the busybox initramfs.
//!
//! `status`, `restart` and `halt` use the module's supervision devices (supervise.rs).
//! `xen-event-ping` is for a Linux partition with the Xen interface instead: it needs no
//! module of ours, only Linux's `/dev/xen/evtchn` (xen.rs).
//!
//! A PEER argument names the partition at the other end by the connection names the
//! Linux systems use: `to-PEER` and `from-PEER` (messages), `to-PEER-event` and
//! `from-PEER-event` (events). A CONN argument names one connection.
//!
//! Exit status: 0 when the command did what it says, 1 when a check failed (a wrong
//! answer, a lost message, a timeout), 2 for a usage or device error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bulkhead_abi::supervision::ControlAction;

mod flood;
mod supervise;
mod xen;

/// The largest message a connection carries (TLFS: 240 payload bytes).
pub const MAX_PAYLOAD: usize = 240;
/// How long `ping`, `wait` (with a count) and `flood` wait for an answer.
const TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "\
usage: bulkhead-msg COMMAND ...
  list                      the connections and their counters
  send CONN TEXT            post TEXT as one message
  recv CONN [COUNT]         print COUNT messages (default 1) as they arrive
  signal CONN               signal an event connection
  wait CONN [COUNT]         wait for COUNT signals (default 1)
  ping PEER [COUNT]         COUNT message round trips (default 1): `ping N` answered by `pong N`
  event-ping PEER [COUNT]   COUNT signal round trips (default 1)
  flood PEER COUNT [STALL_MS]
                            COUNT numbered messages of 4 to 240 bytes, each echoed by PEER:
                            checks every echo arrives, in order, intact; prints the counts
                            and the retries on a full queue. With STALL_MS, the echoes are
                            read only after that many milliseconds, so the queues fill
  burst PEER                messages without waiting (O_NONBLOCK) until the queues are full
                            (EAGAIN), then checks their echoes as flood does
  status                    the partition's own state and counters and, in the supervisor,
                            those of every partition it supervises (docs/supervision.md)
  restart NAME|ID           the supervisor restarts a partition it supervises
  halt NAME|ID              the supervisor halts a partition it supervises
  xen-event-ping DOMID OUT IN [COUNT]
                            in a Xen partition: COUNT event round trips (default 1) through
                            /dev/xen/evtchn with partition DOMID, sending on connection id
                            OUT and waiting for connection id IN";

/// A failure: a usage or device problem (2) or a failed check (1).
#[derive(Debug)]
enum Failure {
    Usage(String),
    Check(String),
}

type Result<T> = std::result::Result<T, Failure>;

fn usage<T>(text: impl Into<String>) -> Result<T> {
    Err(Failure::Usage(text.into()))
}

fn device_path(conn: &str) -> PathBuf {
    PathBuf::from("/dev/bulkhead").join(conn)
}

fn sysfs_dir(conn: &str) -> PathBuf {
    PathBuf::from("/sys/class/misc").join(format!("bulkhead-{conn}"))
}

/// A counter or property of connection `conn` from sysfs.
fn attribute(conn: &str, name: &str) -> Result<String> {
    let path = sysfs_dir(conn).join(name);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Failure::Usage(format!("{}: {e} (is bulkhead_msg loaded?)", path.display())))
}

fn counter(conn: &str, name: &str) -> Result<u64> {
    let text = attribute(conn, name)?;
    text.parse().map_err(|_| Failure::Usage(format!("{conn}/{name}: not a number: {text}")))
}

fn open(conn: &str, write: bool) -> Result<File> {
    let path = device_path(conn);
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open(&path)
        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

/// One message to `file`; the driver retries while the receiver's queue is full.
fn post(file: &mut File, conn: &str, payload: &[u8]) -> Result<()> {
    match file.write(payload) {
        Ok(n) if n == payload.len() => Ok(()),
        Ok(n) => Err(Failure::Check(format!("{conn}: wrote {n} of {} bytes", payload.len()))),
        Err(e) => Err(Failure::Check(format!("{conn}: {e}"))),
    }
}

/// Reads messages from `conn` in a thread, handing each over a channel, so the caller can
/// wait with a timeout (the device's read blocks).
fn receiver(conn: &str, count: u64) -> Result<mpsc::Receiver<std::io::Result<Vec<u8>>>> {
    let mut file = open(conn, false)?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..count {
            let mut buf = [0u8; MAX_PAYLOAD];
            let result = file.read(&mut buf).map(|n| buf[..n].to_vec());
            let failed = result.is_err();
            if tx.send(result).is_err() || failed {
                return;
            }
        }
    });
    Ok(rx)
}

fn next(rx: &mpsc::Receiver<std::io::Result<Vec<u8>>>, conn: &str) -> Result<Vec<u8>> {
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(Failure::Check(format!("{conn}: {e}"))),
        Err(_) => Err(Failure::Check(format!("{conn}: nothing within {} s", TIMEOUT.as_secs()))),
    }
}

fn count_arg(args: &[String], at: usize, default: u64) -> Result<u64> {
    match args.get(at) {
        None => Ok(default),
        Some(text) => match text.parse() {
            Ok(n) => Ok(n),
            Err(_) => usage(format!("not a count: {text}")),
        },
    }
}

fn number_arg(args: &[String], at: usize, what: &str) -> Result<u32> {
    let text = arg(args, at, what)?;
    text.parse().or_else(|_| usage(format!("not a {what}: {text}")))
}

fn arg<'a>(args: &'a [String], at: usize, what: &str) -> Result<&'a str> {
    match args.get(at) {
        Some(a) => Ok(a),
        None => usage(format!("missing {what}\n{USAGE}")),
    }
}

fn list() -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/misc")
        .map_err(|e| Failure::Usage(format!("/sys/class/misc: {e}")))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_prefix("bulkhead-").map(String::from))
        .collect();
    names.sort();
    if names.is_empty() {
        return usage("no connections (is bulkhead_msg loaded?)");
    }
    for conn in names {
        let a = |n| attribute(&conn, n).unwrap_or_default();
        println!(
            "{conn}: {} {} id {} sint {}, sent {}, received {}, retries {}, refused {}",
            a("kind"),
            a("direction"),
            a("id"),
            a("sint"),
            a("sent"),
            a("received"),
            a("retries"),
            a("refused")
        );
    }
    Ok(())
}

/// The time-stamp counter. On hardware it counts at the TSC's rate (cycles of the nominal
/// frequency); on Bochs with `clock: sync=none` it advances once per instruction slot, so a
/// round trip's TSC difference is the instructions it took on that CPU (docs/performance.md).
fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the counter; Linux leaves CR4.TSD clear, so user mode may run it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The smallest, average and largest of a series of numbers.
#[derive(Default)]
struct Series {
    count: u64,
    min: u128,
    max: u128,
    sum: u128,
}

impl Series {
    fn add(&mut self, value: u128) {
        self.min = if self.count == 0 { value } else { self.min.min(value) };
        self.max = self.max.max(value);
        self.sum += value;
        self.count += 1;
    }

    fn summary(&self, unit: &str) -> String {
        let avg = self.sum / u128::from(self.count.max(1));
        format!("min {} {unit}, avg {avg} {unit}, max {} {unit}", self.min, self.max)
    }
}

/// Round-trip times in microseconds and in TSC ticks, for one summary line.
#[derive(Default)]
struct Times {
    us: Series,
    tsc: Series,
}

/// The start of one round trip.
struct Start {
    at: Instant,
    tsc: u64,
}

impl Start {
    fn now() -> Self {
        Start { at: Instant::now(), tsc: tsc() }
    }
}

impl Times {
    fn add(&mut self, start: Start) {
        // The TSC first: the clock read after it stays outside the count.
        let ticks = tsc().wrapping_sub(start.tsc);
        self.us.add(start.at.elapsed().as_micros());
        self.tsc.add(u128::from(ticks));
    }

    /// `min A us, avg B us, max C us; min D tsc, avg E tsc, max F tsc`.
    fn summary(&self) -> String {
        format!("{}; {}", self.us.summary("us"), self.tsc.summary("tsc"))
    }
}

fn ping(peer: &str, count: u64) -> Result<()> {
    let (out, inc) = (format!("to-{peer}"), format!("from-{peer}"));
    let rx = receiver(&inc, count)?;
    let mut file = open(&out, true)?;
    let mut times = Times::default();
    for i in 1..=count {
        let start = Start::now();
        post(&mut file, &out, format!("ping {i}").as_bytes())?;
        let answer = next(&rx, &inc)?;
        let expected = format!("pong {i}");
        if answer != expected.as_bytes() {
            return Err(Failure::Check(format!(
                "{inc}: expected {expected:?}, got {:?}",
                String::from_utf8_lossy(&answer)
            )));
        }
        times.add(start);
    }
    println!("ping {peer}: {count} pings answered, {}", times.summary());
    Ok(())
}

fn wait(conn: &str, count: u64) -> Result<u64> {
    let mut file = open(conn, false)?;
    let (tx, rx) = mpsc::channel();
    let name = conn.to_string();
    thread::spawn(move || {
        let mut seen = 0;
        while seen < count {
            let mut buf = [0u8; 8];
            match file.read(&mut buf) {
                Ok(8) => seen += u64::from_le_bytes(buf),
                Ok(n) => {
                    let _ = tx.send(Err(format!("{name}: read {n} bytes")));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{name}: {e}")));
                    return;
                }
            }
        }
        let _ = tx.send(Ok(seen));
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(seen)) => Ok(seen),
        Ok(Err(e)) => Err(Failure::Check(e)),
        Err(_) => Err(Failure::Check(format!("{conn}: not signalled within {} s", TIMEOUT.as_secs()))),
    }
}

fn signal(conn: &str) -> Result<()> {
    let mut file = open(conn, true)?;
    post(&mut file, conn, &[1])
}

fn event_ping(peer: &str, count: u64) -> Result<()> {
    let (out, inc) = (format!("to-{peer}-event"), format!("from-{peer}-event"));
    let mut times = Times::default();
    for _ in 0..count {
        let start = Start::now();
        signal(&out)?;
        wait(&inc, 1)?;
        times.add(start);
    }
    println!("event-ping {peer}: {count} signals answered, {}", times.summary());
    Ok(())
}

/// Checks `count` echoes of flood messages on `inc`, read in a thread after `stall`.
fn collect_echoes(inc: &str, count: u64, stall: Duration) -> Result<thread::JoinHandle<flood::Check>> {
    let mut reader = open(inc, false)?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let collector = thread::spawn(move || {
        let mut check = flood::Check::new(count);
        while !check.complete() {
            match rx.recv_timeout(TIMEOUT + stall) {
                Ok(bytes) => check.received(&bytes),
                Err(_) => break,
            }
        }
        check
    });
    thread::spawn(move || {
        thread::sleep(stall);
        loop {
            let mut buf = [0u8; MAX_PAYLOAD];
            match reader.read(&mut buf) {
                Ok(n) if tx.send(buf[..n].to_vec()).is_ok() => {}
                _ => return,
            }
        }
    });
    Ok(collector)
}

/// O_NONBLOCK of Linux x86-64 (asm-generic/fcntl.h).
const O_NONBLOCK: i32 = 0o4000;

fn burst(peer: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let out = format!("to-{peer}");
    let inc = format!("from-{peer}");
    let path = device_path(&out);
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(O_NONBLOCK)
        .open(&path)
        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    let refused_before = counter(&out, "refused")?;
    let mut accepted = 0u32;
    loop {
        match file.write(&flood::payload(accepted)) {
            Ok(_) => accepted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(Failure::Check(format!("{out}: {e}"))),
        }
        if accepted == 100_000 {
            return Err(Failure::Check(format!("{out}: {accepted} messages and never EAGAIN")));
        }
    }
    let refused = counter(&out, "refused")? - refused_before;
    let check = collect_echoes(&inc, accepted.into(), Duration::ZERO)?
        .join()
        .map_err(|_| Failure::Check("burst: the checking thread panicked".into()))?;
    println!("burst {peer}: {accepted} accepted before EAGAIN ({refused} refused); {}", check.summary());
    if check.ok() && refused == 1 { Ok(()) } else { Err(Failure::Check(format!("burst {peer}: {}", check.summary()))) }
}

fn flood(peer: &str, count: u64, stall: Duration) -> Result<()> {
    let (out, inc) = (format!("to-{peer}"), format!("from-{peer}"));
    let retries_before = counter(&out, "retries")?;
    let mut file = open(&out, true)?;
    let start = Instant::now();
    // The echoes, read while the messages go out: Linux's own receive ring and the
    // hypervisor's queues are small, so sending all first would stall both directions.
    let collector = collect_echoes(&inc, count, stall)?;
    // The messages go out from a thread of their own: when the echoes stop (a broken
    // peer or driver), a blocking write may retry for ever, while the checker gives up
    // after TIMEOUT and the command ends (which ends the writer too).
    let writer = thread::spawn(move || -> Result<()> {
        for seq in 0..count {
            post(&mut file, &out, &flood::payload(seq as u32))?;
        }
        Ok(())
    });
    let check = collector.join().map_err(|_| Failure::Check("flood: the checking thread panicked".into()))?;
    if writer.is_finished() {
        writer.join().map_err(|_| Failure::Check("flood: the sending thread panicked".into()))??;
    }
    let out = format!("to-{peer}");
    let retries = counter(&out, "retries")? - retries_before;
    let elapsed = start.elapsed();
    println!("flood {peer}: {}, {retries} retries (queue full), {} ms", check.summary(), elapsed.as_millis());
    if check.ok() { Ok(()) } else { Err(Failure::Check(format!("flood {peer}: {}", check.summary()))) }
}

fn run(args: &[String]) -> Result<()> {
    let command = arg(args, 0, "command")?;
    match command {
        "list" => list(),
        "send" => {
            let conn = arg(args, 1, "connection")?;
            let text = arg(args, 2, "text")?;
            if text.len() > MAX_PAYLOAD {
                return usage(format!("a message holds at most {MAX_PAYLOAD} bytes"));
            }
            post(&mut open(conn, true)?, conn, text.as_bytes())
        }
        "recv" => {
            let conn = arg(args, 1, "connection")?;
            let mut file = open(conn, false)?;
            for _ in 0..count_arg(args, 2, 1)? {
                let mut buf = [0u8; MAX_PAYLOAD];
                let n = file.read(&mut buf).map_err(|e| Failure::Check(format!("{conn}: {e}")))?;
                println!("{}", String::from_utf8_lossy(&buf[..n]));
            }
            Ok(())
        }
        "signal" => signal(arg(args, 1, "connection")?),
        "wait" => {
            let conn = arg(args, 1, "connection")?;
            let seen = wait(conn, count_arg(args, 2, 1)?)?;
            println!("{conn}: {seen} signals");
            Ok(())
        }
        "ping" => ping(arg(args, 1, "peer")?, count_arg(args, 2, 1)?),
        "event-ping" => event_ping(arg(args, 1, "peer")?, count_arg(args, 2, 1)?),
        "flood" => {
            let stall = Duration::from_millis(count_arg(args, 3, 0)?);
            flood(arg(args, 1, "peer")?, count_arg(args, 2, 1000)?, stall)
        }
        "burst" => burst(arg(args, 1, "peer")?),
        "status" => supervise::print_status(),
        "restart" => supervise::control(ControlAction::Restart, arg(args, 1, "partition")?),
        "halt" => supervise::control(ControlAction::Halt, arg(args, 1, "partition")?),
        "xen-event-ping" => xen::event_ping(
            number_arg(args, 1, "partition id")?,
            number_arg(args, 2, "outgoing connection id")?,
            number_arg(args, 3, "incoming connection id")?,
            count_arg(args, 4, 1)?,
        ),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => usage(format!("unknown command {other}\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Check(text)) => {
            eprintln!("bulkhead-msg: {text}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(text)) => {
            eprintln!("bulkhead-msg: {text}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keeps_min_average_and_max() {
        let mut series = Series::default();
        for v in [30, 10, 20, 41] {
            series.add(v);
        }
        assert_eq!(series.summary("tsc"), "min 10 tsc, avg 25 tsc, max 41 tsc");
    }

    #[test]
    fn times_report_microseconds_then_tsc_ticks() {
        let mut times = Times::default();
        let start = Start::now();
        times.add(start);
        let summary = times.summary();
        let (us, ticks) = summary.split_once("; ").unwrap();
        assert!(us.starts_with("min ") && us.ends_with(" us"), "{summary}");
        assert!(ticks.starts_with("min ") && ticks.ends_with(" tsc"), "{summary}");
        // Two RDTSCs in a row on one thread: the counter moved forward, by little.
        assert!(times.tsc.min > 0 && times.tsc.max < 1 << 40, "{summary}");
    }
}
