//! The exit profile (kernel feature `profile`, `cargo xtask bench --profile CASE`; see
//! `bulkhead_virt::profile` and docs/performance.md, "Profile"): each core sums the phases
//! of its exits from TSC stamps and prints the longest run of each kind of exit at the end
//! of the run. Not compiled in without the feature.

use crate::backend::Backend;
use crate::cpu::percpu::{self, MAX_CPUS};
use crate::log::info;
use bulkhead_virt::exit::{Exit, ExitVisitor, PortAccess};
use bulkhead_virt::profile::{Profile, Stamps, key, key_of};
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

/// Wraps the exit path's visitor: a stamp before and after each exit's handling (which
/// now includes its action), recorded with the backend's stamps around the world switch
/// under the exit's kind (`key_of`). Inlined: the next exit's dispatch begins with the
/// stamp this takes last, and a call's return would otherwise count there.
pub struct Profiled<'v, V>(pub &'v mut V);

impl<B: Backend, V: ExitVisitor<B>> ExitVisitor<B> for Profiled<'_, V> {
    type Output = V::Output;

    #[inline(always)]
    fn cpuid(&mut self, vcpu: &mut B, leaf: u32, subleaf: u32) -> V::Output {
        let before = stamp();
        let out = self.0.cpuid(vcpu, leaf, subleaf);
        record(vcpu, key::CPUID, before);
        out
    }

    #[inline(always)]
    fn io(&mut self, vcpu: &mut B, access: PortAccess) -> V::Output {
        let before = stamp();
        let out = self.0.io(vcpu, access);
        record(vcpu, if access.write { key::IO_WRITE } else { key::IO_READ }, before);
        out
    }

    #[inline(always)]
    fn msr_read(&mut self, vcpu: &mut B, msr: u32) -> V::Output {
        let before = stamp();
        let out = self.0.msr_read(vcpu, msr);
        record(vcpu, key::MSR_READ, before);
        out
    }

    #[inline(always)]
    fn msr_write(&mut self, vcpu: &mut B, msr: u32, value: u64) -> V::Output {
        let before = stamp();
        let out = self.0.msr_write(vcpu, msr, value);
        record(vcpu, key::MSR_WRITE, before);
        out
    }

    #[inline(always)]
    fn hypercall(&mut self, vcpu: &mut B) -> V::Output {
        // The call code, read before the handler writes its result.
        let key = key_of(&Exit::Hypercall, || vcpu.registers().rcx);
        let before = stamp();
        let out = self.0.hypercall(vcpu);
        record(vcpu, key, before);
        out
    }

    #[inline(always)]
    fn other(&mut self, vcpu: &mut B, exit: Exit) -> V::Output {
        let key = key_of(&exit, || vcpu.registers().rcx);
        let before = stamp();
        let out = self.0.other(vcpu, exit);
        record(vcpu, key, before);
        out
    }
}

/// Records one exit of kind `key` whose handling began at `before` and ended now.
#[inline(always)]
fn record<B: Backend>(vcpu: &mut B, key: u32, before_handler: u64) {
    let after_handler = stamp();
    let (entry, landed) = vcpu.profile_stamps();
    let profile = this_core();
    if profile.stamp_cost() == 0 {
        profile.set_stamp_cost(stamp_cost());
    }
    let stamps = Stamps { entry, landed, before_handler, after_handler, resumed: after_handler };
    profile.record(key, &stamps, stamp);
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
