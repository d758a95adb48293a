//! `xen-event-ping`: event round trips from a Linux partition with the Xen interface
//! (`interface = "xen"`), through Linux's own `/dev/xen/evtchn` (Debian's module
//! `xen-evtchn`), not through `bulkhead_msg`: in a Xen partition a configured event
//! connection is an interdomain event channel (docs/xen.md), so Linux's standard device
//! reaches it unchanged.
//!
//! The device's interface (include/uapi/xen/evtchn.h): `IOCTL_EVTCHN_BIND_INTERDOMAIN
//! {remote_domain, remote_port}` binds a local port and returns its number;
//! `IOCTL_EVTCHN_NOTIFY {port}` sends on it; `read()` gives the numbers of ports that fired
//! (native-endian `u32` each; the driver masks a port when it fires) and `write()` of port
//! numbers unmasks them; `IOCTL_EVTCHN_UNBIND {port}` closes one. On Bulkhead the remote
//! domain is the peer's partition id and the remote port the connection's id.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;

use crate::{Failure, Result, Start, TIMEOUT, Times};

/// The device of Linux's `xen-evtchn` module.
pub const DEVICE: &str = "/dev/xen/evtchn";

/// Linux's `_IOC(_IOC_NONE, 'E', nr, size)` (include/uapi/asm-generic/ioctl.h): nr in bits
/// 0..8, type 8..16, size 16..30, no direction bits (the evtchn ioctls declare none).
const fn ioc_none(nr: u64, size: usize) -> u64 {
    (size as u64) << 16 | (b'E' as u64) << 8 | nr
}

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
struct BindInterdomain {
    remote_domain: u32,
    remote_port: u32,
}

/// `struct ioctl_evtchn_notify` and `struct ioctl_evtchn_unbind`: one port.
#[repr(C)]
struct Port {
    port: u32,
}

pub const IOCTL_BIND_INTERDOMAIN: u64 = ioc_none(1, size_of::<BindInterdomain>());
pub const IOCTL_UNBIND: u64 = ioc_none(3, size_of::<Port>());
pub const IOCTL_NOTIFY: u64 = ioc_none(4, size_of::<Port>());

unsafe extern "C" {
    /// The C library's ioctl(2).
    fn ioctl(fd: i32, request: u64, ...) -> i32;
}

/// One ioctl with a pointer argument; its non-negative result.
fn call<T>(file: &File, request: u64, arg: &mut T) -> io::Result<i32> {
    // SAFETY: `arg` is a live, exclusively borrowed value of the layout the evtchn driver's
    // ioctl `request` reads (BindInterdomain or Port, mirrored from include/uapi/xen/evtchn.h).
    let rc = unsafe { ioctl(file.as_raw_fd(), request, core::ptr::from_mut(arg)) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// The ports in bytes read from the device (native-endian `u32`s; a trailing partial one
/// is ignored, the driver never returns one).
pub fn ports(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
}

/// An open `/dev/xen/evtchn` with the ports bound through it.
struct Evtchn {
    file: File,
}

impl Evtchn {
    fn open() -> Result<Evtchn> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEVICE)
            .map(|file| Evtchn { file })
            .map_err(|e| Failure::Usage(format!("{DEVICE}: {e} (is xen-evtchn loaded, in a Xen partition?)")))
    }

    /// Binds connection `conn` to partition `domid`; the local port.
    fn bind(&self, domid: u32, conn: u32) -> Result<u32> {
        let mut arg = BindInterdomain { remote_domain: domid, remote_port: conn };
        call(&self.file, IOCTL_BIND_INTERDOMAIN, &mut arg)
            .map(|port| port as u32)
            .map_err(|e| Failure::Check(format!("bind connection {conn} of partition {domid}: {e}")))
    }

    fn notify(&self, port: u32) -> Result<()> {
        call(&self.file, IOCTL_NOTIFY, &mut Port { port })
            .map(drop)
            .map_err(|e| Failure::Check(format!("notify port {port}: {e}")))
    }

    fn unbind(&self, port: u32) -> Result<()> {
        call(&self.file, IOCTL_UNBIND, &mut Port { port })
            .map(drop)
            .map_err(|e| Failure::Check(format!("unbind port {port}: {e}")))
    }

    /// Unmasks `port` again after it fired.
    fn unmask(&self, port: u32) -> Result<()> {
        (&self.file).write_all(&port.to_ne_bytes()).map_err(|e| Failure::Check(format!("unmask port {port}: {e}")))
    }

    /// Reads fired ports in a thread (the device's read blocks), each over a channel, so
    /// the caller can wait with a timeout.
    fn fired(&self) -> Result<mpsc::Receiver<io::Result<u32>>> {
        let mut file = self.file.try_clone().map_err(|e| Failure::Usage(format!("{DEVICE}: {e}")))?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            loop {
                let mut buf = [0u8; 64];
                match file.read(&mut buf) {
                    Ok(n) => {
                        if ports(&buf[..n]).any(|port| tx.send(Ok(port)).is_err()) {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// `count` event round trips with partition `domid`: binds connection `out` (this
/// partition sends) and `inc` (the peer sends), then each time notifies `out` and waits
/// for `inc` to fire, and unmasks it. A port other than `inc` firing, or nothing within
/// [`TIMEOUT`], fails the check. The ports are unbound at the end, so the command can run
/// again.
pub fn event_ping(domid: u32, out: u32, inc: u32, count: u64) -> Result<()> {
    let evtchn = Evtchn::open()?;
    let out_port = evtchn.bind(domid, out)?;
    let in_port = evtchn.bind(domid, inc)?;
    println!("xen-event-ping {domid}: connection {out} is port {out_port}, connection {inc} is port {in_port}");
    let fired = evtchn.fired()?;
    let mut times = Times::default();
    for i in 1..=count {
        let start = Start::now();
        evtchn.notify(out_port)?;
        let port = match fired.recv_timeout(TIMEOUT) {
            Ok(Ok(port)) => port,
            Ok(Err(e)) => return Err(Failure::Check(format!("{DEVICE}: {e}"))),
            Err(_) => {
                return Err(Failure::Check(format!(
                    "round trip {i}: port {in_port} (connection {inc}) did not fire within {} s",
                    TIMEOUT.as_secs()
                )));
            }
        };
        if port != in_port {
            return Err(Failure::Check(format!("round trip {i}: port {port} fired, expected {in_port}")));
        }
        times.add(start);
        evtchn.unmask(in_port)?;
    }
    evtchn.unbind(out_port)?;
    evtchn.unbind(in_port)?;
    println!("xen-event-ping {domid}: {count} round trips answered, {}", times.summary());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_linuxs() {
        // _IOC(_IOC_NONE, 'E', nr, size) as Linux 6.1's headers expand them.
        assert_eq!(IOCTL_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_UNBIND, 0x0004_4503);
        assert_eq!(IOCTL_NOTIFY, 0x0004_4504);
    }

    #[test]
    fn fired_ports_are_u32s_in_native_order() {
        let mut bytes = Vec::new();
        for port in [2u32, 7, 255] {
            bytes.extend_from_slice(&port.to_ne_bytes());
        }
        bytes.push(9); // a partial entry, never returned by the driver, is ignored
        assert_eq!(ports(&bytes).collect::<Vec<_>>(), [2, 7, 255]);
    }
}
