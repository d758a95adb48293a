//! Bulkhead's message ring ([`crate::xen::ring`], docs/xen.md "Message rings"): how a
//! `message` connection with a Xen end carries Hyper-V messages through a shared page.
//!
//! [`Ring`] is the page seen through a raw pointer, usable by every party: a Xen guest
//! (producer or consumer), the hypervisor (which initialises the header, produces for a
//! Hyper-V sender and consumes for a Hyper-V receiver) and the host tests. It trusts
//! nothing it reads: the page is shared with another partition, so the counters are
//! checked against the capacity before a slot is used, and the slots are copied with
//! volatile accesses (never referenced), so a peer writing at the same time can only give
//! wrong bytes, never undefined behaviour.
//!
//! Protocol (single producer, single consumer; u64 counters, slot `n % SLOTS`: they would
//! wrap after 2^64 messages, which no ring lives to see, so the slot sequence never breaks;
//! with u32 counters it would, 2^32 not being a multiple of SLOTS):
//! - producer: if `produced - consumed < capacity`, write message `produced` into slot
//!   `produced % SLOTS`, then store `produced + 1` with Release (the slot's bytes are
//!   visible before the new count); `consumed` is read with Acquire (the consumer has
//!   finished reading the slot before the producer overwrites it).
//! - consumer: read `produced` with Acquire; if it differs from `consumed`, copy slot
//!   `consumed % SLOTS`, then store `consumed + 1` with Release.

use crate::hyperv::Message;
use crate::xen::ring::{
    BYTES, MAGIC, OFF_CAPACITY, OFF_CONSUMED, OFF_MAGIC, OFF_PRODUCED, OFF_SLOTS, OFF_VERSION, SLOT_BYTES, SLOTS,
    SLOTS_OFFSET, VERSION,
};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Why a ring operation did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The header is not (yet) a valid ring: wrong magic, version or slot count, or a
    /// capacity of 0 or above [`SLOTS`]. The hypervisor writes it when an end (re)starts.
    NotReady,
    /// `capacity` messages are outstanding: the consumer has not caught up.
    Full,
    /// The counters say more messages are outstanding than the capacity allows: the
    /// other party wrote nonsense (or the ring was reset under this one).
    Corrupt { produced: u64, consumed: u64 },
}

/// The header fields, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub magic: u32,
    pub version: u32,
    pub slots: u32,
    pub capacity: u32,
}

/// One message ring page; see the module notes. Copying a `Ring` copies the pointer.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    page: *mut u8,
}

// SAFETY: every access to the page is atomic (the header and counters) or volatile (the
// slots), and `Ring::new`'s caller vouched that the page outlives every copy; the protocol
// is safe for one producer and one consumer on different cores.
unsafe impl Send for Ring {}
// SAFETY: as for `Send`.
unsafe impl Sync for Ring {}

impl Ring {
    /// The ring in the page at `page`.
    ///
    /// # Safety
    /// `page` is 4-byte aligned, points at [`BYTES`] bytes that stay mapped and writable
    /// for as long as this `Ring` or a copy of it is used, and nothing accesses them other
    /// than through atomic or volatile accesses (another partition, or another `Ring`).
    pub const unsafe fn new(page: *mut u8) -> Ring {
        Ring { page }
    }

    /// The page's address.
    pub fn page(&self) -> *mut u8 {
        self.page
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= SLOTS_OFFSET && offset.is_multiple_of(4));
        // SAFETY: `new`'s contract: the page is mapped, aligned and only accessed
        // atomically at these offsets; the offset is inside the header.
        unsafe { AtomicU32::from_ptr(self.page.add(offset).cast::<u32>()) }
    }

    fn counter(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset == OFF_PRODUCED || offset == OFF_CONSUMED);
        // SAFETY: `new`'s contract (the page is 8-byte aligned: a page); the counters sit
        // at 8-byte aligned offsets inside the header and are only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.page.add(offset).cast::<u64>()) }
    }

    /// The header as it is now.
    pub fn header(&self) -> Header {
        Header {
            magic: self.word(OFF_MAGIC).load(Ordering::Acquire),
            version: self.word(OFF_VERSION).load(Ordering::Relaxed),
            slots: self.word(OFF_SLOTS).load(Ordering::Relaxed),
            capacity: self.word(OFF_CAPACITY).load(Ordering::Relaxed),
        }
    }

    /// The capacity if the header is a valid ring.
    pub fn capacity(&self) -> Result<u32, RingError> {
        let header = self.header();
        let valid = header.magic == MAGIC
            && header.version == VERSION
            && header.slots == SLOTS
            && (1..=SLOTS).contains(&header.capacity);
        if valid { Ok(header.capacity) } else { Err(RingError::NotReady) }
    }

    /// Whether the header is a valid ring.
    pub fn is_ready(&self) -> bool {
        self.capacity().is_ok()
    }

    /// (Re)initialises the ring (the hypervisor's part, when an end starts): no message
    /// outstanding, `capacity` (capped to 1..=[`SLOTS`]) messages at most. The magic is
    /// cleared first and written last, so a reader never sees a half-written header as
    /// valid. Returns the capacity written.
    pub fn init(&self, capacity: u32) -> u32 {
        let capacity = capacity.clamp(1, SLOTS);
        self.word(OFF_MAGIC).store(0, Ordering::Release);
        self.word(OFF_VERSION).store(VERSION, Ordering::Relaxed);
        self.word(OFF_SLOTS).store(SLOTS, Ordering::Relaxed);
        self.word(OFF_CAPACITY).store(capacity, Ordering::Relaxed);
        self.counter(OFF_PRODUCED).store(0, Ordering::Relaxed);
        self.counter(OFF_CONSUMED).store(0, Ordering::Relaxed);
        self.word(OFF_MAGIC).store(MAGIC, Ordering::Release);
        capacity
    }

    /// Messages written so far (Acquire: the slots up to it are visible).
    pub fn produced(&self) -> u64 {
        self.counter(OFF_PRODUCED).load(Ordering::Acquire)
    }

    /// Messages consumed so far (Acquire: the consumer is done with their slots).
    pub fn consumed(&self) -> u64 {
        self.counter(OFF_CONSUMED).load(Ordering::Acquire)
    }

    /// (produced, consumed, outstanding), checked against the capacity.
    fn counters(&self) -> Result<(u64, u64, u32), RingError> {
        let capacity = self.capacity()?;
        let produced = self.produced();
        let consumed = self.consumed();
        let outstanding = produced.wrapping_sub(consumed);
        if outstanding > u64::from(capacity) {
            return Err(RingError::Corrupt { produced, consumed });
        }
        Ok((produced, consumed, outstanding as u32))
    }

    /// Messages written and not yet consumed.
    pub fn outstanding(&self) -> Result<u32, RingError> {
        self.counters().map(|(_, _, outstanding)| outstanding)
    }

    /// Whether the producer may write another message now.
    pub fn has_room(&self) -> Result<bool, RingError> {
        Ok(self.outstanding()? < self.capacity()?)
    }

    fn slot(&self, index: u64) -> *mut u64 {
        let offset = SLOTS_OFFSET + (index % u64::from(SLOTS)) as usize * SLOT_BYTES;
        debug_assert!(offset + SLOT_BYTES <= BYTES);
        // SAFETY: inside the page (`index % SLOTS` < SLOTS); the slot offsets are multiples
        // of 256, so the u64 accesses are aligned if the page is.
        unsafe { self.page.add(offset).cast::<u64>() }
    }

    /// Producer: writes `message` as message number `produced` and publishes it. Returns
    /// the new `produced`. `Full` when `capacity` messages are outstanding.
    pub fn push(&self, message: &Message) -> Result<u64, RingError> {
        let (produced, _, outstanding) = self.counters()?;
        if outstanding >= self.capacity()? {
            return Err(RingError::Full);
        }
        let bytes = message.to_bytes();
        let slot = self.slot(produced);
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            // SAFETY: inside the slot (256 bytes = 32 words); volatile because the peer may
            // read the page at any time (a well-behaved one not this slot).
            unsafe { slot.add(i).write_volatile(word) };
        }
        let next = produced.wrapping_add(1);
        self.counter(OFF_PRODUCED).store(next, Ordering::Release);
        Ok(next)
    }

    /// Consumer: the next message without consuming it (the hypervisor keeps it in the
    /// ring when the Hyper-V receiver's queue is full). `None` when the ring is empty.
    pub fn peek(&self) -> Result<Option<Message>, RingError> {
        let (_, consumed, outstanding) = self.counters()?;
        if outstanding == 0 {
            return Ok(None);
        }
        let slot = self.slot(consumed);
        let mut bytes = [0u8; Message::SIZE];
        for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
            // SAFETY: inside the slot, see `push`.
            let word = unsafe { slot.add(i).read_volatile() };
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        Ok(Some(Message::from_bytes(&bytes)))
    }

    /// Consumer: marks the message [`peek`](Self::peek) returned as consumed (its slot
    /// may be written again). Returns the new `consumed`; `Ok` with no change when the
    /// ring is empty.
    pub fn discard(&self) -> Result<u64, RingError> {
        let (_, consumed, outstanding) = self.counters()?;
        if outstanding == 0 {
            return Ok(consumed);
        }
        let next = consumed.wrapping_add(1);
        self.counter(OFF_CONSUMED).store(next, Ordering::Release);
        Ok(next)
    }

    /// Consumer: takes the next message (peek, then discard). `None` when empty.
    pub fn pop(&self) -> Result<Option<Message>, RingError> {
        let message = self.peek()?;
        if message.is_some() {
            self.discard()?;
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::hyperv::MessageHeader;
    use std::boxed::Box;
    use std::vec::Vec;

    #[repr(C, align(4096))]
    struct Page([u8; BYTES]);

    fn page() -> *mut u8 {
        Box::leak(Box::new(Page([0; BYTES]))).0.as_mut_ptr()
    }

    fn message(seq: u64) -> Message {
        let mut message = Message::EMPTY;
        message.header =
            MessageHeader { message_type: 1, payload_size: 8, message_flags: 0, reserved: 0, origination_id: 3 };
        message.payload[..8].copy_from_slice(&seq.to_le_bytes());
        message
    }

    fn seq(message: &Message) -> u64 {
        u64::from_le_bytes(message.payload()[..8].try_into().unwrap())
    }

    fn word(page: *mut u8, offset: usize) -> u32 {
        // SAFETY: a test page, no other user at this point.
        unsafe { page.add(offset).cast::<u32>().read() }
    }

    #[test]
    fn a_zero_page_is_not_ready_and_init_writes_the_documented_header() {
        let page = page();
        // SAFETY: a leaked page, used only through `Ring`s.
        let ring = unsafe { Ring::new(page) };
        assert_eq!(ring.push(&message(0)), Err(RingError::NotReady));
        assert_eq!(ring.pop(), Err(RingError::NotReady));
        assert!(!ring.is_ready());
        assert_eq!(ring.init(5), 5);
        assert_eq!(word(page, OFF_MAGIC), 0x524D_4842);
        assert_eq!(&[word(page, 0), word(page, 4), word(page, 8), word(page, 12)], &[MAGIC, 1, 15, 5]);
        assert_eq!((word(page, 64), word(page, 128)), (0, 0));
        assert_eq!(ring.init(0), 1);
        assert_eq!(ring.init(100), SLOTS);
        assert_eq!(ring.header(), Header { magic: MAGIC, version: VERSION, slots: SLOTS, capacity: SLOTS });
    }

    #[test]
    fn messages_arrive_in_order_through_every_slot() {
        let page = page();
        // SAFETY: as above.
        let (producer, consumer) = unsafe { (Ring::new(page), Ring::new(page)) };
        producer.init(4);
        // Start at an arbitrary count (a ring that has been running a while), here across
        // 2^32, where u32 counters would have broken the slot sequence (2^32 is not a
        // multiple of SLOTS).
        let start: u64 = (1 << 32) - 7;
        for offset in [OFF_PRODUCED, OFF_CONSUMED] {
            // SAFETY: a test page.
            unsafe { page.add(offset).cast::<u64>().write(start) };
        }
        let mut next = 0u64;
        let mut got = Vec::new();
        for round in 0..60u64 {
            // Fill in bursts of 1..=4, then drain partly.
            for _ in 0..=(round % 4) {
                if producer.has_room() == Ok(true) {
                    producer.push(&message(next)).unwrap();
                    next += 1;
                }
            }
            for _ in 0..=(round % 3) {
                if let Some(m) = consumer.pop().unwrap() {
                    got.push(seq(&m));
                }
            }
        }
        while let Some(m) = consumer.pop().unwrap() {
            got.push(seq(&m));
        }
        assert_eq!(got, (0..next).collect::<Vec<_>>());
        assert!(next > 2 * u64::from(SLOTS));
        assert_eq!(producer.produced(), start + next);
        assert_eq!(consumer.consumed(), producer.produced());
    }

    #[test]
    fn message_n_is_in_slot_n_mod_15_laid_out_as_hv_message() {
        let page = page();
        // SAFETY: as above.
        let ring = unsafe { Ring::new(page) };
        ring.init(15);
        for n in 0..17u64 {
            ring.push(&message(n)).unwrap();
            ring.pop().unwrap();
        }
        // Message 16 went to slot 1.
        let slot = SLOTS_OFFSET + SLOT_BYTES;
        assert_eq!(word(page, slot), 1);
        // SAFETY: a test page.
        let bytes = unsafe { core::slice::from_raw_parts(page.add(slot), SLOT_BYTES) };
        assert_eq!(bytes[4], 8);
        assert_eq!(bytes[8..16], 3u64.to_le_bytes());
        assert_eq!(bytes[16..24], 16u64.to_le_bytes());
    }

    /// Slot `n % SLOTS` with u64 counters: past 2^32 the slot sequence goes on (with u32
    /// counters messages 2^32 - 1 and 2^32 would both have used slot 0).
    #[test]
    fn the_slot_sequence_goes_on_past_2_to_the_32() {
        let n: u64 = u64::from(u32::MAX);
        assert_eq!(n % u64::from(SLOTS), 0);
        assert_eq!((n + 1) % u64::from(SLOTS), 1);
    }

    #[test]
    fn the_producer_stops_at_capacity_and_peek_keeps_the_message() {
        let page = page();
        // SAFETY: as above.
        let ring = unsafe { Ring::new(page) };
        ring.init(3);
        for n in 0..3 {
            assert_eq!(ring.push(&message(n)), Ok(n + 1));
        }
        assert_eq!(ring.has_room(), Ok(false));
        assert_eq!(ring.push(&message(3)), Err(RingError::Full));
        assert_eq!(ring.outstanding(), Ok(3));
        assert_eq!(ring.peek().unwrap().map(|m| seq(&m)), Some(0));
        assert_eq!(ring.peek().unwrap().map(|m| seq(&m)), Some(0));
        assert_eq!(ring.discard(), Ok(1));
        assert_eq!(ring.push(&message(3)), Ok(4));
        let rest: Vec<u64> = core::iter::from_fn(|| ring.pop().unwrap()).map(|m| seq(&m)).collect();
        assert_eq!(rest, [1, 2, 3]);
        assert_eq!(ring.discard(), Ok(4));
        assert_eq!(ring.pop(), Ok(None));
    }

    #[test]
    fn counters_beyond_the_capacity_are_corrupt_and_a_bad_header_not_ready() {
        let page = page();
        // SAFETY: as above.
        let ring = unsafe { Ring::new(page) };
        ring.init(2);
        // SAFETY: a test page: a peer that writes nonsense.
        unsafe { page.add(OFF_PRODUCED).cast::<u32>().write(7) };
        assert_eq!(ring.pop(), Err(RingError::Corrupt { produced: 7, consumed: 0 }));
        assert_eq!(ring.push(&message(0)), Err(RingError::Corrupt { produced: 7, consumed: 0 }));
        ring.init(2);
        assert_eq!(ring.pop(), Ok(None));
        for (offset, value) in [(OFF_VERSION, 2), (OFF_SLOTS, 16), (OFF_CAPACITY, 0), (OFF_CAPACITY, 16)] {
            ring.init(2);
            // SAFETY: a test page.
            unsafe { page.add(offset).cast::<u32>().write(value) };
            assert_eq!(ring.push(&message(0)), Err(RingError::NotReady), "offset {offset} = {value}");
        }
    }

    #[test]
    fn a_producer_and_a_consumer_on_two_threads_lose_nothing() {
        let address = page() as usize;
        // SAFETY: a leaked page, used only through `Ring`s.
        let ring = unsafe { Ring::new(address as *mut u8) };
        ring.init(15);
        const COUNT: u64 = 20_000;
        let producer = std::thread::spawn(move || {
            let mut n = 0;
            while n < COUNT {
                match ring.push(&message(n)) {
                    Ok(_) => n += 1,
                    Err(RingError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        let mut expected = 0;
        while expected < COUNT {
            match ring.pop().unwrap() {
                Some(m) => {
                    assert_eq!(seq(&m), expected);
                    expected += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(ring.outstanding(), Ok(0));
    }
}
