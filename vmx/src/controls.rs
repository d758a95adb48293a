//! VM-execution, exit and entry controls derived from the capability MSRs.
//!
//! Each control MSR reports which bits may be 0 (low half: a set bit there means the
//! control must be set) and which may be 1 (high half). With IA32_VMX_BASIC bit 55 the
//! TRUE_* MSRs apply (SDM A.3 to A.5). A control is computed as
//! `(wanted | must_be_one) & may_be_one`; a wanted bit that is not allowed is a missing
//! feature and VMX is refused with its name.

/// Why VMX cannot be used on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingControl {
    /// `field` lacks the required `control` (its name, e.g. "enable EPT").
    Required { field: &'static str, control: &'static str },
}

/// One required control bit, with its name for the refusal message.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub bit: u32,
    pub name: &'static str,
}

/// Computes a control field from its capability MSR: all of `required` (named, refusing
/// if one is not allowed), plus those of `optional` the CPU allows.
pub fn adjust(field: &'static str, capability: u64, required: &[Want], optional: u32) -> Result<u32, MissingControl> {
    let must_be_one = capability as u32;
    let may_be_one = (capability >> 32) as u32;
    for want in required {
        if may_be_one & want.bit == 0 {
            return Err(MissingControl::Required { field, control: want.name });
        }
    }
    let wanted = required.iter().fold(0, |acc, w| acc | w.bit) | (optional & may_be_one);
    Ok((wanted | must_be_one) & may_be_one)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_ones_and_optional_bits() {
        // must-be-one 0x16, may-be-one 0x7f (Bochs skylake_x pin-based controls).
        let cap = 0x7f_0000_0016u64;
        assert_eq!(adjust("pin", cap, &[Want { bit: 1 << 3, name: "NMI exiting" }], 1 << 7).unwrap(), 0x1e);
    }

    #[test]
    fn missing_required_control_is_named() {
        let cap = 0x7f_0000_0016u64;
        let err = adjust("pin", cap, &[Want { bit: 1 << 7, name: "posted interrupts" }], 0).unwrap_err();
        assert_eq!(err, MissingControl::Required { field: "pin", control: "posted interrupts" });
    }
}
