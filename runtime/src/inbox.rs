//! Messages the SynIC interrupt took out of a SINT's message slot, waiting for a thread to
//! receive them: a small fixed array per SINT (no heap: the interrupt handler fills it),
//! oldest first. Several connections may deliver to one SINT; a receiver takes the oldest
//! message of its own connection (the hypervisor puts the connection ID in the header's
//! `origination_id`), so each connection's messages keep their order.
//!
//! When the inbox is full the interrupt handler leaves the next message in the slot (and
//! the hypervisor keeps the rest in the connection's queue, refusing the sender with
//! INSUFFICIENT_BUFFERS beyond its depth): nothing is dropped, it waits one level down.

use bulkhead_abi::hyperv::Message;

/// Messages one SINT's inbox holds.
pub const CAPACITY: usize = 8;

pub struct Inbox {
    len: usize,
    messages: [Message; CAPACITY],
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Inbox {
    pub const fn new() -> Self {
        Self { len: 0, messages: [Message::EMPTY; CAPACITY] }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == CAPACITY
    }

    /// Appends `message`; false (and the inbox unchanged) when it is full.
    #[must_use]
    pub fn push(&mut self, message: Message) -> bool {
        if self.is_full() {
            return false;
        }
        self.messages[self.len] = message;
        self.len += 1;
        true
    }

    /// Takes the oldest message of connection `connection_id`, keeping the others in order.
    pub fn take(&mut self, connection_id: u32) -> Option<Message> {
        let index =
            self.messages[..self.len].iter().position(|m| m.header.origination_id == u64::from(connection_id))?;
        let message = self.messages[index];
        self.messages.copy_within(index + 1..self.len, index);
        self.len -= 1;
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(connection: u32, seq: u8) -> Message {
        let mut m = Message::EMPTY;
        m.header.message_type = 1;
        m.header.origination_id = u64::from(connection);
        m.header.payload_size = 1;
        m.payload[0] = seq;
        m
    }

    #[test]
    fn each_connection_gets_its_own_messages_in_order() {
        let mut inbox = Inbox::new();
        for (connection, seq) in [(1, 0), (3, 0), (1, 1), (3, 1), (1, 2)] {
            assert!(inbox.push(message(connection, seq)));
        }
        assert_eq!(inbox.take(3).unwrap().payload(), [0]);
        assert_eq!(inbox.take(1).unwrap().payload(), [0]);
        assert_eq!(inbox.take(1).unwrap().payload(), [1]);
        assert_eq!(inbox.take(1).unwrap().payload(), [2]);
        assert_eq!(inbox.take(1), None);
        assert_eq!(inbox.take(3).unwrap().payload(), [1]);
        assert!(inbox.is_empty());
        assert_eq!(inbox.take(3), None);
    }

    #[test]
    fn a_full_inbox_gives_the_message_back() {
        let mut inbox = Inbox::new();
        for seq in 0..CAPACITY as u8 {
            assert!(inbox.push(message(1, seq)));
        }
        assert!(inbox.is_full());
        assert!(!inbox.push(message(1, 99)));
        assert_eq!(inbox.len(), CAPACITY);
        assert_eq!(inbox.take(1).unwrap().payload(), [0]);
        assert!(inbox.push(message(1, 99)));
        let order: Vec<u8> = core::iter::from_fn(|| inbox.take(1)).map(|m| m.payload()[0]).collect();
        assert_eq!(order, [1, 2, 3, 4, 5, 6, 7, 99]);
    }
}
