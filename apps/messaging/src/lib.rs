//! Hyper-V messaging for Rust `std` programs in Bulkhead partitions (docs/unikernel.md,
//! "Messaging").
//!
//! A partition's connections come from the system file (`[[connection]]` with a `name`);
//! the runtime finds them in the boot information and owns the SynIC, and this crate opens
//! them by name:
//!
//! ```no_run
//! use bulkhead_messaging::{Receiver, Sender};
//! use std::time::Duration;
//!
//! let requests = Sender::open("requests").unwrap();
//! let replies = Receiver::open("replies").unwrap();
//! requests.send(1, b"ping").unwrap();
//! let message = replies.recv_timeout(Duration::from_millis(100)).unwrap();
//! println!("type {} payload {:?}", message.message_type, message.payload());
//! ```
//!
//! Sending is HvCallPostMessage (a full queue at the receiver is
//! [`Error::Hypervisor`] with [`HvStatus::InsufficientBuffers`]: try again later, see
//! [`Sender::send_retrying`]), receiving blocks the thread until the message interrupt
//! wakes it. Events: [`EventSender::signal`] (HvCallSignalEvent) and
//! [`EventReceiver::wait`]. Every handle is `Send + Sync`; any thread on any vCPU may use
//! it.

use std::fmt;
use std::time::{Duration, Instant};

/// The TLFS hypercall status codes ([`Error::Hypervisor`]), from Bulkhead's ABI crate.
pub use bulkhead_abi::hyperv::HvStatus;
/// The most bytes a message carries (TLFS: 240).
pub use bulkhead_abi::hyperv::message::MAX_PAYLOAD;

// hermit-abi's errno values the runtime returns (negated).
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const ETIMEDOUT: i32 = 110;

/// Bulkhead's own calls, exported by the runtime (runtime/src/messaging.rs).
#[repr(C)]
#[derive(Default)]
struct RawConnection {
    id: u32,
    kind: u8,
    incoming: u8,
    sint: u8,
    reserved: u8,
    flag: u16,
    queue_depth: u16,
}

unsafe extern "C" {
    fn bulkhead_connection(name: *const u8, len: usize, out: *mut RawConnection) -> i32;
    fn bulkhead_message_post(id: u32, message_type: u32, payload: *const u8, len: usize) -> i32;
    fn bulkhead_message_receive(id: u32, message_type: *mut u32, payload: *mut u8, timeout_ns: u64) -> i32;
    fn bulkhead_event_signal(id: u32) -> i32;
    fn bulkhead_event_wait(id: u32, timeout_ns: u64) -> i32;
}

/// Why a messaging call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The partition has no connection of that name.
    NotFound,
    /// The connection exists but is not of the kind or direction asked for.
    WrongKind,
    /// The payload is longer than [`MAX_PAYLOAD`].
    PayloadTooLong(usize),
    /// Nothing arrived within the timeout.
    Timeout,
    /// The partition has no SynIC or no boot information (an older hypervisor).
    Unsupported,
    /// The hypervisor refused the call with this TLFS status code ([`Error::status`]).
    Hypervisor(u16),
    /// An answer the runtime should not give (a negative errno).
    Runtime(i32),
}

impl Error {
    /// Whether the receiver's queue was full (INSUFFICIENT_BUFFERS): nothing was sent.
    pub fn is_queue_full(self) -> bool {
        self.status() == Some(HvStatus::InsufficientBuffers)
    }

    /// The hypervisor's status, where it refused the call and the code is one the TLFS
    /// names.
    pub fn status(self) -> Option<HvStatus> {
        match self {
            Error::Hypervisor(code) => HvStatus::from_code(code),
            _ => None,
        }
    }

    fn from_code(code: i32) -> Error {
        match code {
            c if c > 0 => Error::Hypervisor(c as u16),
            c if c == -ENOENT => Error::NotFound,
            c if c == -EINVAL => Error::WrongKind,
            c if c == -ENOSYS => Error::Unsupported,
            c if c == -ETIMEDOUT => Error::Timeout,
            c => Error::Runtime(c),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => write!(f, "no connection of that name"),
            Error::WrongKind => write!(f, "the connection is not of that kind or direction"),
            Error::PayloadTooLong(len) => write!(f, "payload of {len} bytes (at most {MAX_PAYLOAD})"),
            Error::Timeout => write!(f, "timed out"),
            Error::Unsupported => write!(f, "the partition has no messaging (no SynIC or boot information)"),
            Error::Hypervisor(code) => match HvStatus::from_code(*code) {
                Some(status) => write!(f, "the hypervisor refused the call: {status:?} ({code:#x})"),
                None => write!(f, "the hypervisor refused the call (status {code:#x})"),
            },
            Error::Runtime(code) => write!(f, "runtime error {code}"),
        }
    }
}

impl std::error::Error for Error {}

fn check(code: i32) -> Result<(), Error> {
    if code == 0 { Ok(()) } else { Err(Error::from_code(code)) }
}

/// One of the partition's connections, as the system file describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The TLFS connection ID.
    pub id: u32,
    /// True for messages, false for events.
    pub messages: bool,
    /// True when this partition receives on it.
    pub incoming: bool,
    /// The receiver's SINT.
    pub sint: u8,
    /// The event flag (events).
    pub flag: u16,
    /// Messages that may wait at the receiver (messages).
    pub queue_depth: u16,
}

impl Connection {
    /// The connection named `name` in the system file.
    pub fn find(name: &str) -> Result<Connection, Error> {
        let mut raw = RawConnection::default();
        // SAFETY: `name` is `len` readable bytes, `raw` a writable RawConnection.
        check(unsafe { bulkhead_connection(name.as_ptr(), name.len(), &mut raw) })?;
        Ok(Connection {
            id: raw.id,
            messages: raw.kind == 0,
            incoming: raw.incoming != 0,
            sint: raw.sint,
            flag: raw.flag,
            queue_depth: raw.queue_depth,
        })
    }

    fn open(name: &str, messages: bool, incoming: bool) -> Result<Connection, Error> {
        let c = Connection::find(name)?;
        if c.messages != messages || c.incoming != incoming {
            return Err(Error::WrongKind);
        }
        Ok(c)
    }
}

/// A received message.
#[derive(Clone, Copy)]
pub struct Message {
    /// The sender's message type (1..=0x7FFF_FFFF).
    pub message_type: u32,
    len: usize,
    payload: [u8; MAX_PAYLOAD],
}

impl Message {
    pub fn payload(&self) -> &[u8] {
        &self.payload[..self.len]
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message").field("message_type", &self.message_type).field("payload", &self.payload()).finish()
    }
}

/// The sending end of a message connection.
#[derive(Clone, Copy, Debug)]
pub struct Sender {
    connection: Connection,
}

impl Sender {
    /// Opens the outgoing message connection `name`.
    pub fn open(name: &str) -> Result<Sender, Error> {
        Ok(Sender { connection: Connection::open(name, true, false)? })
    }

    pub fn connection(&self) -> Connection {
        self.connection
    }

    /// Posts a message of type `message_type` (1..=0x7FFF_FFFF; the hypervisor refuses
    /// others with INVALID_PARAMETER). When the receiver's queue is full nothing is sent
    /// and the error says so ([`Error::is_queue_full`]).
    pub fn send(&self, message_type: u32, payload: &[u8]) -> Result<(), Error> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::PayloadTooLong(payload.len()));
        }
        // SAFETY: `payload` is `len` readable bytes.
        check(unsafe { bulkhead_message_post(self.connection.id, message_type, payload.as_ptr(), payload.len()) })
    }

    /// [`send`](Self::send), trying again while the receiver's queue is full or its SynIC
    /// is not ready yet, for at most `timeout` (then the last error). Between tries the
    /// thread sleeps 10 µs (other threads run; an idle vCPU halts) rather than spending a
    /// hypercall per spin.
    pub fn send_retrying(&self, message_type: u32, payload: &[u8], timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            match self.send(message_type, payload) {
                Err(e)
                    if matches!(e.status(), Some(HvStatus::InsufficientBuffers | HvStatus::InvalidSynicState))
                        && start.elapsed() < timeout =>
                {
                    std::thread::sleep(RETRY_PAUSE)
                }
                other => return other,
            }
        }
    }
}

/// The pause between tries of [`Sender::send_retrying`].
const RETRY_PAUSE: Duration = Duration::from_micros(10);

/// The receiving end of a message connection.
#[derive(Clone, Copy, Debug)]
pub struct Receiver {
    connection: Connection,
}

/// The runtime's "for ever".
const FOREVER: u64 = u64::MAX;

impl Receiver {
    /// Opens the incoming message connection `name`. Messages that arrived before are
    /// waiting: the runtime keeps them from partition start on.
    pub fn open(name: &str) -> Result<Receiver, Error> {
        Ok(Receiver { connection: Connection::open(name, true, true)? })
    }

    pub fn connection(&self) -> Connection {
        self.connection
    }

    fn receive(&self, timeout_ns: u64) -> Result<Message, Error> {
        let mut message = Message { message_type: 0, len: 0, payload: [0; MAX_PAYLOAD] };
        // SAFETY: room for the type and 240 payload bytes.
        let len = unsafe {
            bulkhead_message_receive(
                self.connection.id,
                &mut message.message_type,
                message.payload.as_mut_ptr(),
                timeout_ns,
            )
        };
        if len < 0 {
            return Err(Error::from_code(len));
        }
        message.len = (len as usize).min(MAX_PAYLOAD);
        Ok(message)
    }

    /// The next message, waiting as long as it takes (the thread blocks; its vCPU runs
    /// other threads or halts).
    pub fn recv(&self) -> Result<Message, Error> {
        self.receive(FOREVER)
    }

    /// The next message, waiting at most `timeout` ([`Error::Timeout`] then).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, Error> {
        self.receive(u64::try_from(timeout.as_nanos()).unwrap_or(FOREVER - 1).min(FOREVER - 1))
    }

    /// The next message if one is there (`Ok(None)` if not).
    pub fn try_recv(&self) -> Result<Option<Message>, Error> {
        match self.receive(0) {
            Err(Error::Timeout) => Ok(None),
            other => other.map(Some),
        }
    }
}

/// The signalling end of an event connection.
#[derive(Clone, Copy, Debug)]
pub struct EventSender {
    connection: Connection,
}

impl EventSender {
    /// Opens the outgoing event connection `name`.
    pub fn open(name: &str) -> Result<EventSender, Error> {
        Ok(EventSender { connection: Connection::open(name, false, false)? })
    }

    pub fn connection(&self) -> Connection {
        self.connection
    }

    /// Sets the receiver's event flag (HvCallSignalEvent); signals coalesce while the
    /// flag is set. INVALID_SYNIC_STATE while the receiver's SINT is masked.
    pub fn signal(&self) -> Result<(), Error> {
        // SAFETY: no pointers.
        check(unsafe { bulkhead_event_signal(self.connection.id) })
    }
}

/// The waiting end of an event connection.
#[derive(Clone, Copy, Debug)]
pub struct EventReceiver {
    connection: Connection,
}

impl EventReceiver {
    /// Opens the incoming event connection `name`.
    pub fn open(name: &str) -> Result<EventReceiver, Error> {
        Ok(EventReceiver { connection: Connection::open(name, false, true)? })
    }

    pub fn connection(&self) -> Connection {
        self.connection
    }

    /// Waits until the flag is set, and clears it.
    pub fn wait(&self) -> Result<(), Error> {
        // SAFETY: no pointers.
        check(unsafe { bulkhead_event_wait(self.connection.id, FOREVER) })
    }

    /// Waits at most `timeout` for the flag ([`Error::Timeout`] then), and clears it.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), Error> {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(FOREVER - 1).min(FOREVER - 1);
        // SAFETY: no pointers.
        check(unsafe { bulkhead_event_wait(self.connection.id, ns) })
    }

    /// Takes the flag if it is set; whether it was.
    pub fn try_take(&self) -> Result<bool, Error> {
        match self.wait_timeout(Duration::ZERO) {
            Ok(()) => Ok(true),
            Err(Error::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
