//! The real-time side of Linux messaging as a Rust std program: what the bare-metal
//! `linux-control` guest does for Linux's `bulkhead_msg` module and `bulkhead-msg`
//! command (docs/linux.md), written with the `bulkhead-messaging` crate.
//!
//! - every message on `to-control` goes back on `from-control`, in order: a payload
//!   starting with `ping` is answered with `pong` and the rest of the payload, any other is
//!   echoed unchanged. While Linux's queue is full the answer waits (the thread sleeps
//!   between tries) and no further message is taken, so back-pressure reaches Linux's
//!   sender and nothing is dropped;
//! - every signal on `to-control-event` is answered on `from-control-event`, by a second
//!   thread.
//!
//! Every `status_every=N` messages (default 2000) it prints how many it answered. It never
//! ends by itself (Linux gives the verdict).

use bulkhead_messaging::{EventReceiver, EventSender, Receiver, Sender};
use std::time::Duration;

/// How long an answer may wait for room in Linux's queue before the program gives up.
const ANSWER_PATIENCE: Duration = Duration::from_secs(600);

/// The answer to `payload`: `ping…` becomes `pong…`, anything else comes back unchanged.
fn answer(payload: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    if out.starts_with(b"ping") {
        out[..4].copy_from_slice(b"pong");
    }
    out
}

fn argument(name: &str) -> Option<u64> {
    std::env::args().filter_map(|a| a.strip_prefix(name)?.strip_prefix('=')?.parse().ok()).last()
}

/// The connection `name`, or the program ends with status 1 saying why (a system file
/// without it).
fn opened<T>(name: &str, connection: Result<T, bulkhead_messaging::Error>) -> T {
    connection.unwrap_or_else(|e| {
        eprintln!("linux-peer: connection {name}: {e}");
        std::process::exit(1)
    })
}

fn main() {
    let status_every = argument("status_every").unwrap_or(2000).max(1);
    let requests = opened("to-control", Receiver::open("to-control"));
    let replies = opened("from-control", Sender::open("from-control"));
    let kicks = opened("to-control-event", EventReceiver::open("to-control-event"));
    let answers = opened("from-control-event", EventSender::open("from-control-event"));
    println!("linux-peer: answering messages on to-control and signals on to-control-event");
    std::thread::spawn(move || {
        let mut signals = 0u64;
        loop {
            if kicks.wait().is_err() {
                continue;
            }
            // Linux's SynIC may not be up yet: try again shortly, as for messages.
            while answers.signal().is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
            signals += 1;
            if signals.is_multiple_of(100) {
                println!("linux-peer: {signals} signals answered");
            }
        }
    });
    let mut answered = 0u64;
    loop {
        let message = match requests.recv() {
            Ok(m) => m,
            Err(e) => {
                eprintln!("linux-peer: receive: {e}");
                continue;
            }
        };
        if let Err(e) = replies.send_retrying(message.message_type, &answer(message.payload()), ANSWER_PATIENCE) {
            eprintln!("linux-peer: answer {} refused: {e}", answered + 1);
            std::process::exit(1);
        }
        answered += 1;
        if answered.is_multiple_of(status_every) {
            println!("linux-peer: {answered} messages answered");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ping_becomes_pong() {
        assert_eq!(super::answer(b"ping 7"), b"pong 7");
        assert_eq!(super::answer(b"data"), b"data");
        assert_eq!(super::answer(b"pin"), b"pin");
    }
}
