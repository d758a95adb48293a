//! SynIC messaging: the HvCallPostMessage and HvCallSignalEvent input blocks, the message
//! (SIM) page and the event flags (SIEF) page (TLFS "Inter-Partition Communication",
//! datatypes/hv_message, hv_synic_event_flags; reference §4).
//!
//! All multi-byte fields are little-endian (x86). The `from_bytes`/`to_bytes` helpers let the
//! hypervisor move these blocks to and from guest memory as plain bytes, without `unsafe`.

use core::mem::{align_of, offset_of};

use super::hypercall::HvStatus;

/// Payload bytes a message can carry.
pub const MAX_PAYLOAD: usize = 240;
/// Size of one message and of one SIM slot.
pub const MESSAGE_SIZE: usize = 256;
/// Message type of an empty SIM slot; also not a type a guest may post.
pub const MESSAGE_TYPE_NONE: u32 = 0;
/// Message types with bit 31 set belong to the hypervisor (intercepts, timers); guests may not post them.
pub const MESSAGE_TYPE_HYPERVISOR_BIT: u32 = 1 << 31;
/// Connection and port ids are 24-bit; bits 31:24 of a connection id are RsvdZ
/// (TLFS datatypes/hv_connection_id).
pub const CONNECTION_ID_MASK: u32 = 0x00FF_FFFF;
/// `MessageHeader::message_flags` bit 0: another message is queued behind this one; the guest
/// must write the EOM MSR after emptying the slot (reference §4.3).
pub const MESSAGE_FLAG_PENDING: u8 = 1 << 0;
/// SIM and SIEF pages have one slot per SINT.
pub const SLOTS_PER_PAGE: usize = 16;
/// Bytes of one SIEF slot, and the event flags each slot holds.
pub const EVENT_FLAGS_SLOT_SIZE: usize = 256;
pub const EVENT_FLAGS_PER_SLOT: u16 = (EVENT_FLAGS_SLOT_SIZE * 8) as u16;

#[inline]
fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

#[inline]
fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

/// Input block of HvCallPostMessage (memory form only; reference §4.1). Aligned to 8 because
/// the TLFS requires 8-byte aligned input GPAs, so a guest can place it anywhere.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PostMessageInput {
    /// Bits 23:0 the connection id, 31:24 RsvdZ.
    pub connection_id: u32,
    /// RsvdZ.
    pub reserved: u32,
    /// Non-zero, bit 31 clear.
    pub message_type: u32,
    /// Bytes of `payload` that are sent, at most [`MAX_PAYLOAD`].
    pub payload_size: u32,
    pub payload: [u8; MAX_PAYLOAD],
}

const _: () = {
    assert!(size_of::<PostMessageInput>() == 256);
    assert!(align_of::<PostMessageInput>() == 8);
    assert!(offset_of!(PostMessageInput, connection_id) == 0);
    assert!(offset_of!(PostMessageInput, reserved) == 4);
    assert!(offset_of!(PostMessageInput, message_type) == 8);
    assert!(offset_of!(PostMessageInput, payload_size) == 12);
    assert!(offset_of!(PostMessageInput, payload) == 16);
};

impl PostMessageInput {
    pub const SIZE: usize = 256;

    /// A guest's request; `None` if `payload` is longer than [`MAX_PAYLOAD`].
    pub fn new(connection_id: u32, message_type: u32, payload: &[u8]) -> Option<Self> {
        let mut input = Self {
            connection_id,
            reserved: 0,
            message_type,
            payload_size: payload.len() as u32,
            payload: [0; MAX_PAYLOAD],
        };
        input.payload.get_mut(..payload.len())?.copy_from_slice(payload);
        Some(input)
    }

    /// The input checks of reference §4.1 ([`PostMessageHeader::check`]).
    pub const fn check(&self) -> Result<(), HvStatus> {
        self.header().check()
    }

    /// Everything but the payload.
    pub const fn header(&self) -> PostMessageHeader {
        PostMessageHeader {
            connection_id: self.connection_id,
            reserved: self.reserved,
            message_type: self.message_type,
            payload_size: self.payload_size,
        }
    }

    /// The bytes that are sent: the first `payload_size` bytes, capped at [`MAX_PAYLOAD`].
    pub fn payload(&self) -> &[u8] {
        &self.payload[..(self.payload_size as usize).min(MAX_PAYLOAD)]
    }

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        let mut payload = [0; MAX_PAYLOAD];
        payload.copy_from_slice(&bytes[16..]);
        Self {
            connection_id: read_u32(bytes, 0),
            reserved: read_u32(bytes, 4),
            message_type: read_u32(bytes, 8),
            payload_size: read_u32(bytes, 12),
            payload,
        }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut bytes = [0; Self::SIZE];
        bytes[0..4].copy_from_slice(&self.connection_id.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.reserved.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.message_type.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.payload_size.to_le_bytes());
        bytes[16..].copy_from_slice(&self.payload);
        bytes
    }
}

/// The first 16 bytes of a [`PostMessageInput`], which a hypervisor reads and checks
/// before it copies the payload (once, straight into the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PostMessageHeader {
    pub connection_id: u32,
    pub reserved: u32,
    pub message_type: u32,
    pub payload_size: u32,
}

impl PostMessageHeader {
    pub const SIZE: usize = 16;

    #[inline]
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            connection_id: read_u32(bytes, 0),
            reserved: read_u32(bytes, 4),
            message_type: read_u32(bytes, 8),
            payload_size: read_u32(bytes, 12),
        }
    }

    /// The input checks of reference §4.1, in this order:
    /// * `reserved` or connection id bits 31:24 set → INVALID_HYPERCALL_INPUT (RsvdZ fields, §3.3);
    /// * message type 0 or with bit 31 set → INVALID_PARAMETER (TLFS HvCallPostMessage);
    /// * payload size above 240 → INVALID_PARAMETER, as the TLFS lists it. (QEMU answers
    ///   INVALID_HYPERCALL_INPUT here; we follow the TLFS.)
    ///
    /// The TLFS leaves the precedence of errors undefined. Connection, port and SynIC state
    /// checks need the hypervisor's tables and are not done here.
    #[inline]
    pub const fn check(&self) -> Result<(), HvStatus> {
        if self.reserved != 0 || self.connection_id & !CONNECTION_ID_MASK != 0 {
            return Err(HvStatus::InvalidHypercallInput);
        }
        if self.message_type == MESSAGE_TYPE_NONE || self.message_type & MESSAGE_TYPE_HYPERVISOR_BIT != 0 {
            return Err(HvStatus::InvalidParameter);
        }
        if self.payload_size > MAX_PAYLOAD as u32 {
            return Err(HvStatus::InvalidParameter);
        }
        Ok(())
    }

    /// The header of the message this input becomes, sent from port `origination_id`
    /// (flags clear; the caller has run [`PostMessageHeader::check`]).
    #[inline]
    pub const fn message_header(&self, origination_id: u64) -> MessageHeader {
        MessageHeader {
            message_type: self.message_type,
            payload_size: self.payload_size as u8,
            message_flags: 0,
            reserved: 0,
            origination_id,
        }
    }
}

/// Input of HvCallSignalEvent (reference §4.2), 8 bytes: in memory at the input GPA, or in
/// RDX for the fast form as `connection_id | flag_number << 32` (Linux `vmbus_set_event`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SignalEventInput {
    /// Bits 23:0 the connection id, 31:24 RsvdZ.
    pub connection_id: u32,
    /// Flag to set, relative to the target port's base flag.
    pub flag_number: u16,
    /// RsvdZ.
    pub reserved: u16,
}

const _: () = {
    assert!(size_of::<SignalEventInput>() == 8);
    assert!(align_of::<SignalEventInput>() == 8);
    assert!(offset_of!(SignalEventInput, connection_id) == 0);
    assert!(offset_of!(SignalEventInput, flag_number) == 4);
    assert!(offset_of!(SignalEventInput, reserved) == 6);
};

impl SignalEventInput {
    pub const SIZE: usize = 8;

    pub const fn new(connection_id: u32, flag_number: u16) -> Self {
        Self { connection_id, flag_number, reserved: 0 }
    }

    /// Decodes the fast form's RDX; bits 63:48 land in `reserved`, so [`Self::check`] sees them.
    pub const fn from_fast(rdx: u64) -> Self {
        Self { connection_id: rdx as u32, flag_number: (rdx >> 32) as u16, reserved: (rdx >> 48) as u16 }
    }

    /// The value for RDX in the fast form (the same 8 bytes as the memory form).
    pub const fn fast_value(&self) -> u64 {
        self.connection_id as u64 | (self.flag_number as u64) << 32 | (self.reserved as u64) << 48
    }

    /// `reserved` or connection id bits 31:24 set → INVALID_HYPERCALL_INPUT (RsvdZ, reference
    /// §3.3; KVM and QEMU do the same for bits beyond the 24-bit id, §4.2). The flag number is
    /// checked against the port's flag count by the hypervisor (INVALID_PARAMETER).
    pub const fn check(&self) -> Result<(), HvStatus> {
        if self.reserved != 0 || self.connection_id & !CONNECTION_ID_MASK != 0 {
            return Err(HvStatus::InvalidHypercallInput);
        }
        Ok(())
    }

    pub const fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self::from_fast(u64::from_le_bytes(*bytes))
    }

    pub const fn to_bytes(&self) -> [u8; Self::SIZE] {
        self.fast_value().to_le_bytes()
    }
}

/// HV_MESSAGE_HEADER (reference §4.3), 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MessageHeader {
    /// [`MESSAGE_TYPE_NONE`] marks the slot empty; the guest writes it to free the slot.
    pub message_type: u32,
    pub payload_size: u8,
    /// Bit 0: [`MESSAGE_FLAG_PENDING`].
    pub message_flags: u8,
    pub reserved: u16,
    /// The port id for guest-posted messages, a partition id for intercepts, 0 for timers.
    pub origination_id: u64,
}

const _: () = {
    assert!(size_of::<MessageHeader>() == 16);
    assert!(offset_of!(MessageHeader, message_type) == 0);
    assert!(offset_of!(MessageHeader, payload_size) == 4);
    assert!(offset_of!(MessageHeader, message_flags) == 5);
    assert!(offset_of!(MessageHeader, reserved) == 6);
    assert!(offset_of!(MessageHeader, origination_id) == 8);
};

impl MessageHeader {
    pub const SIZE: usize = 16;

    #[inline]
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        Self {
            message_type: read_u32(bytes, 0),
            payload_size: bytes[4],
            message_flags: bytes[5],
            reserved: u16::from_le_bytes([bytes[6], bytes[7]]),
            origination_id: read_u64(bytes, 8),
        }
    }

    #[inline]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut bytes = [0; Self::SIZE];
        bytes[0..4].copy_from_slice(&self.message_type.to_le_bytes());
        bytes[4] = self.payload_size;
        bytes[5] = self.message_flags;
        bytes[6..8].copy_from_slice(&self.reserved.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.origination_id.to_le_bytes());
        bytes
    }

    pub const fn is_message_pending(&self) -> bool {
        self.message_flags & MESSAGE_FLAG_PENDING != 0
    }
}

/// HV_MESSAGE: one SIM slot (reference §4.3), 256 bytes.
///
/// A hypervisor delivering into a slot should store `message_type` last (after the rest of
/// the slot), so that a guest polling the slot never sees a type with a stale payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    pub header: MessageHeader,
    pub payload: [u8; MAX_PAYLOAD],
}

const _: () = {
    assert!(size_of::<Message>() == MESSAGE_SIZE);
    assert!(offset_of!(Message, header) == 0);
    assert!(offset_of!(Message, payload) == 16);
};

impl Message {
    pub const SIZE: usize = MESSAGE_SIZE;
    /// An empty slot: all zero.
    pub const EMPTY: Self = Self {
        header: MessageHeader { message_type: 0, payload_size: 0, message_flags: 0, reserved: 0, origination_id: 0 },
        payload: [0; MAX_PAYLOAD],
    };

    /// The message a posted input turns into, sent from port `origination_id`, flags clear.
    /// Only the first `payload_size` bytes are copied (capped at [`MAX_PAYLOAD`]; the caller
    /// has run [`PostMessageInput::check`]).
    pub fn from_post(input: &PostMessageInput, origination_id: u64) -> Self {
        let sent = input.payload();
        let mut message = Self::EMPTY;
        message.header = input.header().message_header(origination_id);
        message.header.payload_size = sent.len() as u8;
        message.payload[..sent.len()].copy_from_slice(sent);
        message
    }

    /// The first `payload_size` bytes of the payload, capped at [`MAX_PAYLOAD`].
    pub fn payload(&self) -> &[u8] {
        &self.payload[..(self.header.payload_size as usize).min(MAX_PAYLOAD)]
    }

    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> Self {
        let mut payload = [0; MAX_PAYLOAD];
        payload.copy_from_slice(&bytes[16..]);
        let mut header = [0; MessageHeader::SIZE];
        header.copy_from_slice(&bytes[..16]);
        Self { header: MessageHeader::from_bytes(&header), payload }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut bytes = [0; Self::SIZE];
        bytes[..16].copy_from_slice(&self.header.to_bytes());
        bytes[16..].copy_from_slice(&self.payload);
        bytes
    }
}

/// The SynIC message page a guest places with the SIMP MSR: slot n belongs to SINTn.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessagePage {
    pub slots: [Message; SLOTS_PER_PAGE],
}

const _: () = {
    assert!(size_of::<MessagePage>() == 4096);
    assert!(align_of::<MessagePage>() == 4096);
    assert!(offset_of!(MessagePage, slots) == 0);
};

impl MessagePage {
    /// All slots empty, as the TLFS requires at VP creation and reset.
    pub const EMPTY: Self = Self { slots: [Message::EMPTY; SLOTS_PER_PAGE] };

    /// Byte offset of SINTn's slot within the page.
    pub const fn slot_offset(sint: u8) -> usize {
        sint as usize * MESSAGE_SIZE
    }
}

/// The SynIC event flags page a guest places with the SIEFP MSR: slot n holds SINTn's 2048
/// flags (reference §4.4).
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventFlagsPage {
    pub slots: [[u8; EVENT_FLAGS_SLOT_SIZE]; SLOTS_PER_PAGE],
}

const _: () = {
    assert!(size_of::<EventFlagsPage>() == 4096);
    assert!(align_of::<EventFlagsPage>() == 4096);
    assert!(offset_of!(EventFlagsPage, slots) == 0);
};

impl EventFlagsPage {
    /// All flags clear.
    pub const EMPTY: Self = Self { slots: [[0; EVENT_FLAGS_SLOT_SIZE]; SLOTS_PER_PAGE] };

    /// Where flag `flag` lives in its slot: byte `flag / 8`, bit `flag % 8`, least significant
    /// bit first (reference §4.4; the same bits as x86 `bts` on the slot). `None` if the flag
    /// is past the slot's 2048 flags.
    pub const fn bit(flag: u16) -> Option<(usize, u8)> {
        if flag >= EVENT_FLAGS_PER_SLOT {
            return None;
        }
        Some(((flag / 8) as usize, 1 << (flag % 8)))
    }

    /// Byte offset of SINTn's slot within the page.
    pub const fn slot_offset(sint: u8) -> usize {
        sint as usize * EVENT_FLAGS_SLOT_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_post() -> PostMessageInput {
        PostMessageInput::new(0x12_3456, 1, b"hello").unwrap()
    }

    #[test]
    fn post_message_layout_in_bytes() {
        let bytes = valid_post().to_bytes();
        assert_eq!(bytes[0..4], [0x56, 0x34, 0x12, 0]);
        assert_eq!(bytes[4..8], [0; 4]);
        assert_eq!(bytes[8..12], [1, 0, 0, 0]);
        assert_eq!(bytes[12..16], [5, 0, 0, 0]);
        assert_eq!(&bytes[16..21], b"hello");
        assert!(bytes[21..].iter().all(|b| *b == 0));
    }

    #[test]
    fn post_message_bytes_round_trip() {
        let mut input = valid_post();
        input.reserved = 0xDEAD_BEEF;
        input.payload[239] = 0xAA;
        let decoded = PostMessageInput::from_bytes(&input.to_bytes());
        assert_eq!(decoded, input);
    }

    #[test]
    fn post_message_new() {
        let input = valid_post();
        assert_eq!(input.payload(), b"hello");
        assert_eq!(input.check(), Ok(()));
        assert!(PostMessageInput::new(1, 1, &[7; MAX_PAYLOAD]).is_some());
        assert!(PostMessageInput::new(1, 1, &[7; MAX_PAYLOAD + 1]).is_none());
        assert_eq!(PostMessageInput::new(1, 1, &[]).unwrap().payload(), b"");
    }

    #[test]
    fn post_message_reserved_fields() {
        let mut input = valid_post();
        input.reserved = 1;
        assert_eq!(input.check(), Err(HvStatus::InvalidHypercallInput));
        for bit in 24..32 {
            let mut input = valid_post();
            input.connection_id |= 1 << bit;
            assert_eq!(input.check(), Err(HvStatus::InvalidHypercallInput), "bit {bit}");
        }
        let mut input = valid_post();
        input.connection_id = CONNECTION_ID_MASK;
        assert_eq!(input.check(), Ok(()));
    }

    #[test]
    fn post_message_type() {
        let mut input = valid_post();
        input.message_type = MESSAGE_TYPE_NONE;
        assert_eq!(input.check(), Err(HvStatus::InvalidParameter));
        input.message_type = 0x8000_0001;
        assert_eq!(input.check(), Err(HvStatus::InvalidParameter));
        input.message_type = 0x7FFF_FFFF;
        assert_eq!(input.check(), Ok(()));
    }

    #[test]
    fn post_message_payload_size() {
        let mut input = valid_post();
        input.payload_size = 240;
        assert_eq!(input.check(), Ok(()));
        assert_eq!(input.payload().len(), 240);
        input.payload_size = 241;
        assert_eq!(input.check(), Err(HvStatus::InvalidParameter));
        assert_eq!(input.payload().len(), 240);
        input.payload_size = u32::MAX;
        assert_eq!(input.check(), Err(HvStatus::InvalidParameter));
    }

    #[test]
    fn signal_event_fast_value() {
        let input = SignalEventInput::new(2, 0);
        assert_eq!(input.fast_value(), 2);
        let input = SignalEventInput::new(0x00AB_CDEF, 0x1234);
        assert_eq!(input.fast_value(), 0x0000_1234_00AB_CDEF);
        assert_eq!(SignalEventInput::from_fast(input.fast_value()), input);
        assert_eq!(input.to_bytes(), [0xEF, 0xCD, 0xAB, 0, 0x34, 0x12, 0, 0]);
        assert_eq!(SignalEventInput::from_bytes(&input.to_bytes()), input);
    }

    #[test]
    fn signal_event_reserved_fields() {
        assert_eq!(SignalEventInput::from_fast(0x0000_0005_00FF_FFFF).check(), Ok(()));
        for bit in (24..32).chain(48..64) {
            let input = SignalEventInput::from_fast(2 | 1 << bit);
            assert_eq!(input.check(), Err(HvStatus::InvalidHypercallInput), "bit {bit}");
            assert_eq!(input.fast_value(), 2 | 1 << bit);
        }
        let input = SignalEventInput::from_fast(0xFFFF_0000_0000_0001);
        assert_eq!((input.connection_id, input.flag_number, input.reserved), (1, 0, 0xFFFF));
    }

    #[test]
    fn message_header_flags() {
        let mut header = MessageHeader::default();
        assert!(!header.is_message_pending());
        header.message_flags = MESSAGE_FLAG_PENDING;
        assert!(header.is_message_pending());
        header.message_flags = 0xFE;
        assert!(!header.is_message_pending());
    }

    #[test]
    fn post_header_is_the_first_16_bytes_and_checked_alone() {
        let input = valid_post();
        let bytes = input.to_bytes();
        let header = PostMessageHeader::from_bytes(bytes[..16].try_into().unwrap());
        assert_eq!(header, input.header());
        assert_eq!(header.check(), Ok(()));
        let mut bad = header;
        bad.payload_size = 241;
        assert_eq!(bad.check(), Err(HvStatus::InvalidParameter));
        let message = header.message_header(9);
        assert_eq!(message.to_bytes()[..], Message::from_post(&input, 9).to_bytes()[..16]);
    }

    #[test]
    fn message_from_post() {
        let message = Message::from_post(&valid_post(), 0x77);
        assert_eq!(message.header.message_type, 1);
        assert_eq!(message.header.payload_size, 5);
        assert_eq!(message.header.origination_id, 0x77);
        assert!(!message.header.is_message_pending());
        assert_eq!(message.payload(), b"hello");
        assert!(message.payload[5..].iter().all(|b| *b == 0));

        let full = PostMessageInput::new(3, 9, &[0x5A; MAX_PAYLOAD]).unwrap();
        let message = Message::from_post(&full, 0);
        assert_eq!(message.header.payload_size, 240);
        assert_eq!(message.payload, [0x5A; MAX_PAYLOAD]);
    }

    #[test]
    fn message_bytes_round_trip() {
        let mut message = Message::from_post(&valid_post(), 0x0102_0304_0506_0708);
        message.header.message_flags = MESSAGE_FLAG_PENDING;
        message.header.reserved = 0xBEEF;
        let bytes = message.to_bytes();
        assert_eq!(bytes[0..4], [1, 0, 0, 0]);
        assert_eq!(bytes[4..8], [5, 1, 0xEF, 0xBE]);
        assert_eq!(bytes[8..16], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[16..21], b"hello");
        assert_eq!(Message::from_bytes(&bytes), message);
        assert_eq!(Message::EMPTY.to_bytes(), [0; MESSAGE_SIZE]);
        assert_eq!(Message::EMPTY.header.message_type, MESSAGE_TYPE_NONE);
    }

    #[test]
    fn pages() {
        assert!(MessagePage::EMPTY.slots.iter().all(|slot| *slot == Message::EMPTY));
        assert_eq!(MessagePage::slot_offset(0), 0);
        assert_eq!(MessagePage::slot_offset(15), 15 * 256);
        assert_eq!(EventFlagsPage::slot_offset(2), 512);
        assert!(EventFlagsPage::EMPTY.slots.iter().flatten().all(|b| *b == 0));
    }

    #[test]
    fn event_flag_bits() {
        assert_eq!(EventFlagsPage::bit(0), Some((0, 0x01)));
        assert_eq!(EventFlagsPage::bit(7), Some((0, 0x80)));
        assert_eq!(EventFlagsPage::bit(8), Some((1, 0x01)));
        assert_eq!(EventFlagsPage::bit(13), Some((1, 0x20)));
        assert_eq!(EventFlagsPage::bit(2047), Some((255, 0x80)));
        assert_eq!(EventFlagsPage::bit(2048), None);
        assert_eq!(EventFlagsPage::bit(u16::MAX), None);
    }

    #[test]
    fn event_flag_bits_match_little_endian_words() {
        // Guests index a slot as an array of u64 and use `bts`: flag k is bit k%64 of word k/64.
        for flag in [0u16, 1, 63, 64, 100, 2047] {
            let (byte, mask) = EventFlagsPage::bit(flag).unwrap();
            let mut slot = [0u8; EVENT_FLAGS_SLOT_SIZE];
            slot[byte] |= mask;
            let word_index = flag as usize / 64;
            let word = read_u64(&slot, word_index * 8);
            assert_eq!(word, 1 << (flag % 64));
        }
    }
}
