//! Converting a guest's IA32_TSC_DEADLINE between its offset TSC and the hardware's (the
//! local APIC compares the deadline with the unoffset TSC; SDM Vol. 3A 11.5.4.1).

/// A deadline the guest wrote (in its TSC, which is the hardware's plus `offset`, two's
/// complement) as the hardware's deadline: 0 stays 0 (disarmed), and a deadline already
/// past in hardware terms becomes 1, which fires at once.
pub fn deadline_to_hardware(guest: u64, offset: u64) -> u64 {
    if guest == 0 {
        return 0;
    }
    let signed = offset as i64;
    if signed > 0 && guest <= offset {
        return 1;
    }
    guest.wrapping_sub(offset).max(1)
}

/// The hardware's deadline as the guest reads it: 0 (disarmed) stays 0.
pub fn deadline_to_guest(hardware: u64, offset: u64) -> u64 {
    if hardware == 0 { 0 } else { hardware.wrapping_add(offset) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        // No offset: unchanged.
        assert_eq!(deadline_to_hardware(1000, 0), 1000);
        // Guest ahead by 500: the hardware deadline is 500 earlier; and back.
        assert_eq!(deadline_to_hardware(1000, 500), 500);
        assert_eq!(deadline_to_guest(500, 500), 1000);
        // Guest behind by 500 (negative offset).
        let behind = 0u64.wrapping_sub(500);
        assert_eq!(deadline_to_hardware(1000, behind), 1500);
        assert_eq!(deadline_to_guest(1500, behind), 1000);
        // Disarmed stays disarmed; a deadline before the guest's time zero fires at once.
        assert_eq!(deadline_to_hardware(0, 500), 0);
        assert_eq!(deadline_to_guest(0, 500), 0);
        assert_eq!(deadline_to_hardware(400, 500), 1);
        assert_eq!(deadline_to_hardware(500, 500), 1);
    }
}
