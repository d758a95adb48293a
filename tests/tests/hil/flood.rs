//! Isolation under load on every backend: a partition that floods its console and makes
//! hypercalls in a tight loop does not slow its neighbours down through the hypervisor
//! (tests/configs/bochs-flood.toml, guests/src/bin/test-flood.rs).

use bulkhead_tests::{Run, every_backend};

every_backend! {
    /// "flood" prints 150-character lines without pause, posts to a full queue and
    /// signals an event, all in a tight loop; "ping" measures 40 iterations of (message
    /// round trip to "pong", one 150-character console line) alone and again once the
    /// flood is past its console burst. Bounds (docs/testing.md): during the flood the
    /// phase takes at most 3/2 of the baseline + 20 ms, no round trip takes more than
    /// 20 ms longer than the longest baseline one, and ping's local APIC timer ticks at
    /// least half as often. Without the console rate limit and the fair console lock the
    /// flood doubles ping's phase time on Bochs (each of ping's lines waits for the
    /// flood's). The flood's dropped lines are counted in the log.
    fn isolation_flood_does_not_slow_the_neighbours(emulator) {
        Run::new(emulator)
            .cpus(3)
            .scenario("tests/configs/bochs-flood.toml")
            .timeout(std::time::Duration::from_secs(600))
            .expect("[flood] flood: past 400 lines: 3 posts accepted, 398 refused as full, ")
            .expect("[ping] flood: within the bounds: phase time true, round trip true, timer ticks true")
            .expect("partition flood: console: ")
            .expect(" lines dropped (rate limit)")
            .expect("partition ping: reports PASS")
            .forbid(": fault #")
            .execute()
            .assert_passed();
    }
}
