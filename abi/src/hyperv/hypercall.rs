//! Hypercall calling convention: the input value in RCX, the result in RAX, status codes and
//! the parameter-block placement rules (TLFS "Hypercall Interface"; reference §3).
//!
//! Memory ("slow") form: RCX = [`HypercallInput`], RDX = input block GPA, R8 = output block GPA.
//! Fast form: RDX and R8 carry the input itself. RAX returns a [`HypercallResult`].

/// Call codes (bits 15:0 of the input value; reference §3.5).
pub mod code {
    /// HvCallPostMessage: simple call, memory form only (input: `message::PostMessageInput`).
    /// QEMU answers the fast form with INVALID_HYPERCALL_CODE (reference §4.1).
    pub const POST_MESSAGE: u16 = 0x005C;
    /// HvCallSignalEvent: simple call, fast or memory form (input: `message::SignalEventInput`).
    pub const SIGNAL_EVENT: u16 = 0x005D;

    /// First of Bulkhead's own call codes, `0x8000..=0x80FF`: far above every code the TLFS
    /// defines, so no Hyper-V guest issues one by accident. A hypervisor without them (and
    /// Bulkhead for a code in the range it does not define) answers INVALID_HYPERCALL_CODE.
    pub const BULKHEAD_FIRST: u16 = 0x8000;
    /// Last of Bulkhead's own call codes.
    pub const BULKHEAD_LAST: u16 = 0x80FF;
    /// Bulkhead console write: simple call, memory form only. Input block
    /// ([`super::ConsoleWriteInput`]): length (4 bytes), reserved (4 bytes, 0), then that
    /// many bytes of text, at most [`super::CONSOLE_WRITE_MAX`]. The bytes go to the
    /// partition's console exactly as if written to its virtual UART one by one (the same
    /// line assembly, `[name]` prefix and rate limit), in one exit instead of one per byte.
    /// Status: SUCCESS; INVALID_PARAMETER for a length above the maximum or a reserved
    /// field not 0; the input block rules of every memory-form call otherwise.
    pub const BULKHEAD_CONSOLE_WRITE: u16 = 0x8001;
    /// Bulkhead watchdog check-in: simple call, fast form only, RDX = R8 = 0. Resets the
    /// caller's watchdog deadline to one period from now (`crate::supervision`).
    pub const BULKHEAD_WATCHDOG_CHECK_IN: u16 = 0x8002;
    /// Bulkhead partition status: simple call, memory form only; input block
    /// `crate::supervision::STATUS_INPUT_SIZE` bytes (partition id as u32, 4 reserved
    /// bytes), output block `crate::supervision::PartitionStatus`.
    pub const BULKHEAD_PARTITION_STATUS: u16 = 0x8003;
    /// Bulkhead partition control (the supervisor): simple call, fast form only, RDX = the
    /// partition id, R8 = a `crate::supervision::ControlAction`.
    pub const BULKHEAD_PARTITION_CONTROL: u16 = 0x8004;
}

/// The most text bytes one [`code::BULKHEAD_CONSOLE_WRITE`] carries: a page less the
/// 8-byte header.
pub const CONSOLE_WRITE_MAX: usize = 4096 - 8;

/// Input block of [`code::BULKHEAD_CONSOLE_WRITE`] (8-byte aligned, within one page).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct ConsoleWriteInput {
    /// Bytes of `text` that count.
    pub len: u32,
    /// 0.
    pub reserved: u32,
    /// The text (only the first `len` bytes are read).
    pub text: [u8; CONSOLE_WRITE_MAX],
}

const _: () = assert!(core::mem::size_of::<ConsoleWriteInput>() == 4096);

/// HV_STATUS, bits 15:0 of RAX. Numbers from Linux `hvgdk_mini.h`, since the TLFS status page
/// gives none (reference §3.4).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HvStatus {
    Success = 0x0000,
    /// Unknown or unsupported call code.
    InvalidHypercallCode = 0x0002,
    /// Malformed input value or block: a RsvdZ bit set, a rep count on a simple call, a
    /// variable header on a call that takes none (TLFS; reference §3.3).
    InvalidHypercallInput = 0x0003,
    /// Parameter block GPA misaligned, crossing a page or outside the partition (§3.3).
    InvalidAlignment = 0x0004,
    /// A field has a value the call does not accept.
    InvalidParameter = 0x0005,
    /// The caller lacks the privilege (CPUID 0x4000_0003) for the call.
    AccessDenied = 0x0006,
    InvalidPartitionState = 0x0007,
    OperationDenied = 0x0008,
    /// No partition has this id (Bulkhead's supervision calls).
    InvalidPartitionId = 0x000D,
    /// The target virtual processor does not exist.
    InvalidVpIndex = 0x000E,
    /// The port behind a connection is gone, inactive or of the wrong type.
    InvalidPortId = 0x0011,
    /// No connection with this id exists for the caller.
    InvalidConnectionId = 0x0012,
    /// The target port has no free message buffer (PostMessage only).
    InsufficientBuffers = 0x0013,
    /// The target's SynIC, SIMP/SIEFP or SINT is disabled. Not in current Linux headers: the
    /// value comes from older Microsoft-derived headers (Linux staging `hv_api.h`, VirtualBox
    /// GIM), which agree on it (reference §3.4).
    InvalidSynicState = 0x0018,
}

impl HvStatus {
    /// The raw HV_STATUS value.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The status with this raw value, if it is one this interface defines.
    pub const fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            0x0000 => Self::Success,
            0x0002 => Self::InvalidHypercallCode,
            0x0003 => Self::InvalidHypercallInput,
            0x0004 => Self::InvalidAlignment,
            0x0005 => Self::InvalidParameter,
            0x0006 => Self::AccessDenied,
            0x0007 => Self::InvalidPartitionState,
            0x0008 => Self::OperationDenied,
            0x000D => Self::InvalidPartitionId,
            0x000E => Self::InvalidVpIndex,
            0x0011 => Self::InvalidPortId,
            0x0012 => Self::InvalidConnectionId,
            0x0013 => Self::InsufficientBuffers,
            0x0018 => Self::InvalidSynicState,
            _ => return None,
        })
    }
}

/// The hypercall input value passed in RCX (reference §3.1):
/// 15:0 call code, 16 fast, 26:17 variable header size (8-byte units), 30:27 RsvdZ,
/// 31 nested, 43:32 rep count, 47:44 RsvdZ, 59:48 rep start index, 63:60 RsvdZ.
///
/// Bool setters take the field's name (`fast`), number setters `with_`; bool getters `is_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HypercallInput(u64);

impl HypercallInput {
    const CODE_MASK: u64 = 0xFFFF;
    const FAST: u64 = 1 << 16;
    const VARIABLE_HEADER_SHIFT: u32 = 17;
    const VARIABLE_HEADER_MASK: u64 = 0x3FF;
    const NESTED: u64 = 1 << 31;
    const REP_COUNT_SHIFT: u32 = 32;
    const REP_START_SHIFT: u32 = 48;
    const REP_MASK: u64 = 0xFFF;
    /// The RsvdZ bits: 30:27, 47:44 and 63:60. Any of them set → INVALID_HYPERCALL_INPUT.
    pub const RESERVED_MASK: u64 = 0xF000_F000_7800_0000;
    /// Largest rep count and rep start index (12-bit fields).
    pub const MAX_REPS: u16 = 0xFFF;

    /// A memory-form, simple call with this code: every other field 0.
    pub const fn new(code: u16) -> Self {
        Self(code as u64)
    }

    /// Takes the RCX value as the guest passed it, reserved bits included.
    pub const fn decode(rcx: u64) -> Self {
        Self(rcx)
    }

    /// The value for RCX.
    pub const fn value(self) -> u64 {
        self.0
    }

    /// Fast (register) form instead of memory form.
    pub const fn fast(self, fast: bool) -> Self {
        Self(if fast { self.0 | Self::FAST } else { self.0 & !Self::FAST })
    }

    /// Nested: route to the L0 hypervisor (only meaningful under nesting).
    pub const fn nested(self, nested: bool) -> Self {
        Self(if nested { self.0 | Self::NESTED } else { self.0 & !Self::NESTED })
    }

    /// Variable header size in 8-byte units; only the low 10 bits are kept.
    pub const fn with_variable_header_size(self, qwords: u16) -> Self {
        let mask = Self::VARIABLE_HEADER_MASK << Self::VARIABLE_HEADER_SHIFT;
        Self((self.0 & !mask) | ((qwords as u64 & Self::VARIABLE_HEADER_MASK) << Self::VARIABLE_HEADER_SHIFT))
    }

    /// Rep count and rep start index of a rep call; only the low 12 bits of each are kept.
    pub const fn with_reps(self, count: u16, start_index: u16) -> Self {
        let mask = (Self::REP_MASK << Self::REP_COUNT_SHIFT) | (Self::REP_MASK << Self::REP_START_SHIFT);
        let count = (count as u64 & Self::REP_MASK) << Self::REP_COUNT_SHIFT;
        let start = (start_index as u64 & Self::REP_MASK) << Self::REP_START_SHIFT;
        Self((self.0 & !mask) | count | start)
    }

    pub const fn code(self) -> u16 {
        (self.0 & Self::CODE_MASK) as u16
    }

    pub const fn is_fast(self) -> bool {
        self.0 & Self::FAST != 0
    }

    /// Variable header size in 8-byte units.
    pub const fn variable_header_size(self) -> u16 {
        ((self.0 >> Self::VARIABLE_HEADER_SHIFT) & Self::VARIABLE_HEADER_MASK) as u16
    }

    pub const fn is_nested(self) -> bool {
        self.0 & Self::NESTED != 0
    }

    pub const fn rep_count(self) -> u16 {
        ((self.0 >> Self::REP_COUNT_SHIFT) & Self::REP_MASK) as u16
    }

    pub const fn rep_start_index(self) -> u16 {
        ((self.0 >> Self::REP_START_SHIFT) & Self::REP_MASK) as u16
    }

    pub const fn reserved_bits_set(self) -> bool {
        self.0 & Self::RESERVED_MASK != 0
    }

    /// The input-value checks for a simple call without a variable header (PostMessage,
    /// SignalEvent): a RsvdZ bit, a rep count or rep start index, or a variable header size
    /// → INVALID_HYPERCALL_INPUT (TLFS; reference §3.3; KVM treats a non-zero start index on
    /// a simple call the same way).
    pub const fn check_simple_call(self) -> Result<(), HvStatus> {
        if self.reserved_bits_set() || self.rep_count() != 0 || self.rep_start_index() != 0 {
            return Err(HvStatus::InvalidHypercallInput);
        }
        if self.variable_header_size() != 0 {
            return Err(HvStatus::InvalidHypercallInput);
        }
        Ok(())
    }
}

/// The hypercall result returned in RAX (reference §3.2): 15:0 HV_STATUS, 43:32 reps completed
/// (absolute, not relative to the start index); all other bits 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HypercallResult(u64);

impl HypercallResult {
    const REPS_SHIFT: u32 = 32;
    const REPS_MASK: u64 = 0xFFF;

    /// `reps_completed` keeps its low 12 bits only (the field's width).
    pub const fn new(status: HvStatus, reps_completed: u16) -> Self {
        Self(status.code() as u64 | ((reps_completed as u64 & Self::REPS_MASK) << Self::REPS_SHIFT))
    }

    /// Takes RAX as the hypervisor returned it.
    pub const fn decode(rax: u64) -> Self {
        Self(rax)
    }

    /// The value for RAX.
    pub const fn value(self) -> u64 {
        self.0
    }

    /// The raw status, which may be one this interface does not define.
    pub const fn status_code(self) -> u16 {
        self.0 as u16
    }

    pub const fn status(self) -> Option<HvStatus> {
        HvStatus::from_code(self.status_code())
    }

    pub const fn is_success(self) -> bool {
        self.status_code() == HvStatus::Success.code()
    }

    pub const fn reps_completed(self) -> u16 {
        ((self.0 >> Self::REPS_SHIFT) & Self::REPS_MASK) as u16
    }
}

/// Placement of the parameter blocks of the memory form (TLFS; reference §3.3).
pub const PAGE_SIZE: u64 = 4096;
/// Input and output block GPAs must be 8-byte aligned.
pub const BLOCK_ALIGN: u64 = 8;

/// Checks a memory-form parameter block at `gpa` of `len` bytes: it must be 8-byte aligned
/// and lie within one 4 KiB page, else INVALID_ALIGNMENT (TLFS; reference §3.3). Whether the
/// GPA lies inside the partition (also INVALID_ALIGNMENT) is the caller's check.
pub const fn input_gpa_ok(gpa: u64, len: u64) -> Result<(), HvStatus> {
    if !gpa.is_multiple_of(BLOCK_ALIGN) {
        return Err(HvStatus::InvalidAlignment);
    }
    // Written as a subtraction so that no `len` can overflow.
    if len > PAGE_SIZE - gpa % PAGE_SIZE {
        return Err(HvStatus::InvalidAlignment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [HvStatus; 14] = [
        HvStatus::Success,
        HvStatus::InvalidHypercallCode,
        HvStatus::InvalidHypercallInput,
        HvStatus::InvalidAlignment,
        HvStatus::InvalidParameter,
        HvStatus::AccessDenied,
        HvStatus::InvalidPartitionState,
        HvStatus::OperationDenied,
        HvStatus::InvalidPartitionId,
        HvStatus::InvalidVpIndex,
        HvStatus::InvalidPortId,
        HvStatus::InvalidConnectionId,
        HvStatus::InsufficientBuffers,
        HvStatus::InvalidSynicState,
    ];

    #[test]
    fn status_values() {
        let expected = [0, 2, 3, 4, 5, 6, 7, 8, 0x0D, 0x0E, 0x11, 0x12, 0x13, 0x18];
        for (status, code) in ALL.iter().zip(expected) {
            assert_eq!(status.code(), code);
        }
    }

    #[test]
    fn status_round_trip_and_unknown() {
        for status in ALL {
            assert_eq!(HvStatus::from_code(status.code()), Some(status));
        }
        for code in [1, 9, 0x0C, 0x10, 0x14, 0x17, 0x19, 0xFFFF] {
            assert_eq!(HvStatus::from_code(code), None);
        }
    }

    #[test]
    fn call_codes() {
        assert_eq!(code::POST_MESSAGE, 0x5C);
        assert_eq!(code::SIGNAL_EVENT, 0x5D);
    }

    #[test]
    fn input_decode_fields() {
        // code 0x5D, fast, var header 0x3FF, nested, rep count 0xABC, rep start 0x123.
        let rcx = 0x5D | 1 << 16 | 0x3FF << 17 | 1 << 31 | 0xABC << 32 | 0x123 << 48;
        let input = HypercallInput::decode(rcx);
        assert_eq!(input.code(), 0x5D);
        assert!(input.is_fast());
        assert_eq!(input.variable_header_size(), 0x3FF);
        assert!(input.is_nested());
        assert_eq!(input.rep_count(), 0xABC);
        assert_eq!(input.rep_start_index(), 0x123);
        assert!(!input.reserved_bits_set());
        assert_eq!(input.value(), rcx);
    }

    #[test]
    fn input_plain_simple_call() {
        let input = HypercallInput::decode(0x5C);
        assert_eq!(input.code(), code::POST_MESSAGE);
        assert!(!input.is_fast() && !input.is_nested());
        assert_eq!((input.variable_header_size(), input.rep_count(), input.rep_start_index()), (0, 0, 0));
        assert_eq!(input.check_simple_call(), Ok(()));
    }

    #[test]
    fn input_each_reserved_bit() {
        let reserved_bits = (27..=30).chain(44..=47).chain(60..=63);
        let mut count = 0;
        for bit in reserved_bits {
            let input = HypercallInput::decode(0x5D | 1 << bit);
            assert!(input.reserved_bits_set(), "bit {bit}");
            assert_eq!(input.check_simple_call(), Err(HvStatus::InvalidHypercallInput));
            count += 1;
        }
        assert_eq!(count, 12);
        assert_eq!(HypercallInput::RESERVED_MASK.count_ones(), 12);
        // No defined bit is reserved.
        for bit in (0..=26).chain([31]).chain(32..=43).chain(48..=59) {
            assert!(!HypercallInput::decode(1 << bit).reserved_bits_set(), "bit {bit}");
        }
    }

    #[test]
    fn simple_call_rejects_reps_and_variable_header() {
        let base = HypercallInput::new(code::SIGNAL_EVENT);
        assert_eq!(base.fast(true).check_simple_call(), Ok(()));
        assert_eq!(base.nested(true).check_simple_call(), Ok(()));
        assert_eq!(base.with_reps(1, 0).check_simple_call(), Err(HvStatus::InvalidHypercallInput));
        assert_eq!(base.with_reps(0, 1).check_simple_call(), Err(HvStatus::InvalidHypercallInput));
        assert_eq!(base.with_variable_header_size(1).check_simple_call(), Err(HvStatus::InvalidHypercallInput));
    }

    #[test]
    fn input_builder_round_trip() {
        let input = HypercallInput::new(0x0014).fast(true).nested(true).with_variable_header_size(3).with_reps(7, 5);
        assert_eq!(input.value(), 0x14 | 1 << 16 | 3 << 17 | 1 << 31 | 7 << 32 | 5 << 48);
        let decoded = HypercallInput::decode(input.value());
        assert_eq!(decoded, input);
        assert_eq!(
            (decoded.code(), decoded.is_fast(), decoded.variable_header_size(), decoded.is_nested()),
            (0x14, true, 3, true)
        );
        assert_eq!((decoded.rep_count(), decoded.rep_start_index()), (7, 5));
        // Clearing and replacing fields.
        let cleared = input.fast(false).nested(false).with_variable_header_size(0).with_reps(0, 0);
        assert_eq!(cleared, HypercallInput::new(0x0014));
        assert_eq!(HypercallInput::new(code::SIGNAL_EVENT).fast(true).value(), 0x1_005D);
    }

    #[test]
    fn input_builder_truncates_to_field_width() {
        let input = HypercallInput::new(1).with_reps(u16::MAX, u16::MAX).with_variable_header_size(u16::MAX);
        assert_eq!(input.rep_count(), HypercallInput::MAX_REPS);
        assert_eq!(input.rep_start_index(), HypercallInput::MAX_REPS);
        assert_eq!(input.variable_header_size(), 0x3FF);
        assert!(!input.reserved_bits_set());
        assert_eq!(input.code(), 1);
    }

    #[test]
    fn result_encoding() {
        assert_eq!(HypercallResult::new(HvStatus::Success, 0).value(), 0);
        assert_eq!(HypercallResult::new(HvStatus::InvalidSynicState, 0).value(), 0x18);
        assert_eq!(HypercallResult::new(HvStatus::InsufficientBuffers, 0xFFF).value(), 0x0000_0FFF_0000_0013);
        // Reps beyond 12 bits cannot leak into reserved bits.
        assert_eq!(HypercallResult::new(HvStatus::Success, 0x1001).value(), 1 << 32);
    }

    #[test]
    fn result_decode_round_trip() {
        for status in ALL {
            for reps in [0, 1, 0x800, 0xFFF] {
                let result = HypercallResult::decode(HypercallResult::new(status, reps).value());
                assert_eq!(result.status(), Some(status));
                assert_eq!(result.reps_completed(), reps);
                assert_eq!(result.is_success(), status == HvStatus::Success);
            }
        }
        let unknown = HypercallResult::decode(0x0000_0002_0000_0079);
        assert_eq!((unknown.status_code(), unknown.status(), unknown.reps_completed()), (0x79, None, 2));
    }

    #[test]
    fn gpa_alignment() {
        assert_eq!(input_gpa_ok(0x1000, 256), Ok(()));
        assert_eq!(input_gpa_ok(0x1008, 8), Ok(()));
        for misaligned in [0x1001, 0x1004, 0x1007] {
            assert_eq!(input_gpa_ok(misaligned, 8), Err(HvStatus::InvalidAlignment));
        }
    }

    #[test]
    fn gpa_page_crossing() {
        // Ends exactly at the page end: fine. One byte further: crosses.
        assert_eq!(input_gpa_ok(0x1F00, 256), Ok(()));
        assert_eq!(input_gpa_ok(0x1F08, 256), Err(HvStatus::InvalidAlignment));
        assert_eq!(input_gpa_ok(0x1FF8, 8), Ok(()));
        assert_eq!(input_gpa_ok(0x1FF8, 9), Err(HvStatus::InvalidAlignment));
        assert_eq!(input_gpa_ok(0x2000, 4096), Ok(()));
        assert_eq!(input_gpa_ok(0x2000, 4097), Err(HvStatus::InvalidAlignment));
        assert_eq!(input_gpa_ok(0x2000, u64::MAX), Err(HvStatus::InvalidAlignment));
        assert_eq!(input_gpa_ok(u64::MAX - 7, 8), Ok(()));
        assert_eq!(input_gpa_ok(0x1FF8, 0), Ok(()));
    }
}
