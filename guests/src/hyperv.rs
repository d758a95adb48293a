//! The guest side of the Hyper-V interface (TLFS), as a test payload uses it: discovery,
//! the hypercall page, and the two hypercalls. Layouts and numbers come from
//! `bulkhead_abi::hyperv`, the same definitions the hypervisor uses.

use bulkhead_abi::hyperv::hypercall::code;
use bulkhead_abi::hyperv::reference_tsc::{SEQUENCE_INVALID, SEQUENCE_INVALID_LEGACY, reference_time};
use bulkhead_abi::hyperv::{
    HypercallInput, HypercallMsr, HypercallResult, PageMsr, PostMessageInput, SignalEventInput, msr,
};

/// A page-aligned page of this payload's memory (guest-virtual = guest-physical here).
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

static mut HYPERCALL_PAGE: Page = Page([0; 4096]);
static mut REFERENCE_TSC_PAGE: Page = Page([0; 4096]);
/// Two pages: the input block goes at an offset the caller chooses (tests place it
/// misaligned or across the boundary on purpose).
static mut INPUT_PAGES: [Page; 2] = [Page([0; 4096]), Page([0; 4096])];

pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: synthetic MSRs the hypervisor answers (CPUID says which).
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: as in `rdmsr`.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// Sets GUEST_OS_ID (an open-source id: bit 63) and enables the hypercall page; returns
/// the HYPERCALL MSR as read back.
pub fn enable_hypercalls() -> u64 {
    const OPEN_SOURCE_ID: u64 = 1 << 63 | 0x42 << 48;
    wrmsr(msr::GUEST_OS_ID, OPEN_SOURCE_ID);
    let page = &raw const HYPERCALL_PAGE as u64;
    wrmsr(msr::HYPERCALL, HypercallMsr::new(page >> 12).enabled(true).value());
    rdmsr(msr::HYPERCALL)
}

/// Calls the hypercall page with the input value, input parameter and output parameter.
pub fn hypercall(control: u64, input: u64, output: u64) -> u64 {
    let result: u64;
    let page = &raw const HYPERCALL_PAGE as u64;
    // SAFETY: the hypervisor filled the page with its call sequence (`enable_hypercalls`);
    // the TLFS calling convention clobbers only RAX (and R9-R11 by Linux's convention).
    unsafe {
        core::arch::asm!(
            "call {page}",
            page = in(reg) page,
            in("rcx") control,
            in("rdx") input,
            in("r8") output,
            lateout("rax") result,
            lateout("r9") _,
            lateout("r10") _,
            lateout("r11") _,
        )
    };
    result
}

/// The status of a hypercall result.
pub fn status(result: u64) -> u16 {
    HypercallResult::decode(result).status_code()
}

/// HvCallSignalEvent, fast form.
pub fn signal_event(connection_id: u32, flag: u16) -> u16 {
    let input = HypercallInput::new(code::SIGNAL_EVENT).fast(true).value();
    status(hypercall(input, SignalEventInput::new(connection_id, flag).fast_value(), 0))
}

/// The guest-physical address of the input area at `offset` into the two input pages.
pub fn input_area(offset: usize) -> u64 {
    &raw const INPUT_PAGES as u64 + offset as u64
}

/// HvCallPostMessage with the input block at `offset` into the input pages (normally 0).
pub fn post_message_at(offset: usize, input: &PostMessageInput) -> u16 {
    let bytes = input.to_bytes();
    let base = &raw mut INPUT_PAGES as *mut u8;
    // SAFETY: within the two input pages (offset < 4096 + 256 by the callers).
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(offset), bytes.len()) };
    post_message_gpa(input_area(offset))
}

/// HvCallPostMessage with the input block at guest-physical `gpa`, wherever that is.
pub fn post_message_gpa(gpa: u64) -> u16 {
    status(hypercall(HypercallInput::new(code::POST_MESSAGE).value(), gpa, 0))
}

/// Enables the reference TSC page (TLFS "Partition Reference TSC Mechanism").
pub fn enable_reference_tsc_page() {
    let page = &raw const REFERENCE_TSC_PAGE as u64;
    wrmsr(msr::REFERENCE_TSC, PageMsr::new(page >> 12).enabled(true).value());
}

/// The partition's reference time (100 ns units) read from the page with the TLFS reader
/// protocol; `None` while its sequence says the page is invalid.
pub fn reference_time_from_page() -> Option<u64> {
    let page = &raw const REFERENCE_TSC_PAGE as *const u8;
    loop {
        // SAFETY: the page's sequence, scale and offset fields (offsets 0, 8, 16), which the
        // hypervisor writes; read volatile, the sequence around the others.
        let (before, scale, offset) = unsafe {
            (
                core::ptr::read_volatile(page as *const u32),
                core::ptr::read_volatile(page.add(8) as *const u64),
                core::ptr::read_volatile(page.add(16) as *const i64),
            )
        };
        if before == SEQUENCE_INVALID || before == SEQUENCE_INVALID_LEGACY {
            return None;
        }
        let time = reference_time(crate::rdtsc(), scale, offset);
        // SAFETY: as above.
        if unsafe { core::ptr::read_volatile(page as *const u32) } == before {
            return Some(time);
        }
    }
}
