//! `flood`'s messages and the check of their echoes: message `seq` is `seq` (4 bytes,
//! little-endian) then `seq % 237` bytes of a pattern derived from `seq`, so lengths run
//! through 4..=240 and a corrupted, truncated or misrouted echo is seen.

use crate::MAX_PAYLOAD;

/// Length of message `seq`.
fn length(seq: u32) -> usize {
    4 + (seq as usize % (MAX_PAYLOAD - 3))
}

/// Message `seq`.
pub fn payload(seq: u32) -> Vec<u8> {
    let mut bytes = seq.to_le_bytes().to_vec();
    bytes.extend((0..length(seq) - 4).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8)));
    bytes
}

/// What the echoes of `count` messages showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    count: u64,
    /// The sequence number expected next.
    next: u64,
    seen: Vec<bool>,
    /// Echoes whose number was not the next expected.
    pub out_of_order: u64,
    /// Echoes that were not a message sent (bad length or pattern, unknown number).
    pub corrupt: u64,
    /// Echoes of a number already seen.
    pub duplicates: u64,
    /// Intact echoes, each number once.
    pub received: u64,
}

impl Check {
    pub fn new(count: u64) -> Self {
        Check {
            count,
            next: 0,
            seen: vec![false; count as usize],
            out_of_order: 0,
            corrupt: 0,
            duplicates: 0,
            received: 0,
        }
    }

    /// One echo.
    pub fn received(&mut self, bytes: &[u8]) {
        let Some(seq) = bytes.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) else {
            self.corrupt += 1;
            return;
        };
        if u64::from(seq) >= self.count || bytes != payload(seq).as_slice() {
            self.corrupt += 1;
            return;
        }
        if u64::from(seq) != self.next {
            self.out_of_order += 1;
        }
        self.next = u64::from(seq) + 1;
        if std::mem::replace(&mut self.seen[seq as usize], true) {
            self.duplicates += 1;
        } else {
            self.received += 1;
        }
    }

    /// Every message came back (whatever else happened).
    pub fn complete(&self) -> bool {
        self.received == self.count
    }

    /// Messages never echoed.
    pub fn lost(&self) -> u64 {
        self.count - self.received
    }

    /// All echoed once, in order, intact.
    pub fn ok(&self) -> bool {
        self.complete() && self.out_of_order == 0 && self.corrupt == 0 && self.duplicates == 0
    }

    pub fn summary(&self) -> String {
        format!(
            "{} sent, {} echoed, {} lost, {} out of order, {} corrupt, {} duplicates",
            self.count,
            self.received,
            self.lost(),
            self.out_of_order,
            self.corrupt,
            self.duplicates
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_cover_every_length_and_differ() {
        let lengths: std::collections::BTreeSet<usize> = (0..1000).map(|s| payload(s).len()).collect();
        assert_eq!(lengths.first(), Some(&4));
        assert_eq!(lengths.last(), Some(&MAX_PAYLOAD));
        assert_eq!(lengths.len(), MAX_PAYLOAD - 3);
        assert_ne!(payload(5)[4..], payload(5 + 237)[4..]);
    }

    #[test]
    fn in_order_echoes_pass() {
        let mut check = Check::new(300);
        for seq in 0..300 {
            check.received(&payload(seq));
        }
        assert!(check.ok(), "{}", check.summary());
        assert_eq!(check.summary(), "300 sent, 300 echoed, 0 lost, 0 out of order, 0 corrupt, 0 duplicates");
    }

    #[test]
    fn lost_reordered_corrupt_and_duplicate_echoes_fail() {
        let mut check = Check::new(5);
        for seq in [0, 2, 1, 1] {
            check.received(&payload(seq));
        }
        let mut bad = payload(3);
        bad[5] ^= 1;
        check.received(&bad);
        check.received(&payload(3)[..6]);
        check.received(&payload(9));
        check.received(&[1, 2]);
        assert!(!check.ok());
        assert_eq!((check.received, check.lost(), check.duplicates), (3, 2, 1));
        assert_eq!((check.out_of_order, check.corrupt), (3, 4));
    }
}
