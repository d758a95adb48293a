//! Demo partition "control": for now it only parks its CPU (see the crate docs).
#![no_std]
#![no_main]

#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
extern "C" fn _start() -> ! {
    bulkhead_guests::idle()
}
