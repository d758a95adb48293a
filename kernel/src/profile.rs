//! The exit profile (kernel feature `profile`, `cargo xtask bench --profile CASE`; see
//! `bulkhead_virt::profile` and docs/performance.md, "Profile"): each core sums the phases
//! of its exits from TSC stamps and prints the longest run of each kind of exit at the end
//! of the run. Not compiled in without the feature.

use crate::backend::Backend;
use crate::cpu::percpu::{self, MAX_CPUS};
use crate::log::info;
use bulkhead_virt::exit::Exit;
use bulkhead_virt::profile::{Profile, Stamps, key_of};
use core::cell::UnsafeCell;

struct PerCore(UnsafeCell<[Profile; MAX_CPUS]>);
// SAFETY: each core touches only its own entry (`current_index`).
unsafe impl Sync for PerCore {}

static PROFILES: PerCore = PerCore(UnsafeCell::new([const { Profile::new() }; MAX_CPUS]));

fn this_core() -> &'static mut Profile {
    // SAFETY: this core's own entry, used by its vCPU loop only.
    unsafe { &mut (*PROFILES.0.get())[percpu::current_index() as usize] }
}

/// A TSC stamp (instructions under Bochs `clock: sync=none`): the backends' own, so that
/// every stamp costs the same.
#[inline(always)]
pub fn stamp() -> u64 {
    bulkhead_vmx::profile_stamp()
}

/// Records the exit just handled: `exit`, the stamps around its handler and after its
/// action (`resumed`), and the backend's around the world switch. Inlined: the next
/// exit's dispatch begins with the stamp this takes last, and a call's return would
/// otherwise count there.
#[inline(always)]
pub fn record<B: Backend>(backend: &mut B, exit: &Exit, before_handler: u64, after_handler: u64, resumed: u64) {
    let (entry, landed) = backend.profile_stamps();
    let profile = this_core();
    if profile.stamp_cost() == 0 {
        profile.set_stamp_cost(stamp_cost());
    }
    let key = key_of(exit, || backend.registers().rcx);
    profile.record(key, &Stamps { entry, landed, before_handler, after_handler, resumed }, stamp);
}

/// The cost of one stamp: two back-to-back stamps.
#[inline(never)]
fn stamp_cost() -> u64 {
    let a = stamp();
    let b = stamp();
    b.wrapping_sub(a)
}

/// Prints this core's runs: `profile: cpu C key K exits N outside O/M dispatch D handler
/// H return R stamp S` (sums in instructions; O over the M exits it covers).
pub fn log() {
    let profile = this_core();
    profile.finish_run();
    let cpu = percpu::current_index();
    for (key, s) in profile.runs() {
        if s.exits < 100 {
            continue;
        }
        info!(
            "profile: cpu {=u32} key {=u32:#x} exits {=u64} outside {=u64}/{=u64} dispatch {=u64} handler {=u64} return {=u64} stamp {=u64}",
            cpu,
            key,
            s.exits,
            s.outside,
            s.outside_exits,
            s.dispatch,
            s.handler,
            s.ret,
            profile.stamp_cost()
        );
    }
}
