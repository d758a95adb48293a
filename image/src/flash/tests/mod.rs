//! Tests of the flash module: decisions on fixture machines, whole flashes onto files, and
//! whole flashes onto loop devices where the machine offers them.

mod decisions;
mod files;
mod fixture;
mod loops;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{Answer, Expected, Plan, Stage, Ui};

/// What a test UI saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Begin(Stage, u64),
    Progress(u64),
    End(Stage),
}

/// A UI that answers as told, records everything and can act between steps.
struct TestUi {
    answer: Answer,
    plans: Vec<Plan>,
    events: Vec<Event>,
    notes: Vec<String>,
    /// Report Ctrl-C once this stage has seen any progress.
    interrupt_in: Option<Stage>,
    stage: Option<Stage>,
    /// Called when a stage begins (e.g. to corrupt the target before the read-back).
    on_begin: Option<Box<dyn FnMut(Stage)>>,
}

impl TestUi {
    fn yes() -> Self {
        Self::answering(Answer::Yes)
    }

    fn answering(answer: Answer) -> Self {
        TestUi {
            answer,
            plans: Vec::new(),
            events: Vec::new(),
            notes: Vec::new(),
            interrupt_in: None,
            stage: None,
            on_begin: None,
        }
    }

    fn stages(&self) -> Vec<Stage> {
        self.events.iter().filter_map(|e| if let Event::Begin(s, _) = e { Some(*s) } else { None }).collect()
    }

    /// Each stage's progress rises and ends at its total.
    fn assert_progress_complete(&self) {
        let mut current: Option<(Stage, u64, u64)> = None;
        for event in &self.events {
            match *event {
                Event::Begin(stage, total) => current = Some((stage, total, 0)),
                Event::Progress(done) => {
                    let (stage, total, last) = current.as_mut().expect("progress outside a stage");
                    assert!(done > *last && done <= *total, "{stage:?}: {done} after {last} of {total}");
                    *last = done;
                }
                Event::End(stage) => {
                    let (begun, total, last) = current.take().expect("end without begin");
                    assert_eq!(begun, stage);
                    assert_eq!(last, total, "{stage:?} ended at {last} of {total}");
                }
            }
        }
        assert!(current.is_none(), "a stage did not end");
    }
}

impl Ui for TestUi {
    fn confirm(&mut self, plan: &Plan) -> Answer {
        self.plans.push(plan.clone());
        self.answer.clone()
    }
    fn begin(&mut self, stage: Stage, total: u64) {
        self.stage = Some(stage);
        self.events.push(Event::Begin(stage, total));
        if let Some(hook) = &mut self.on_begin {
            hook(stage);
        }
    }
    fn progress(&mut self, done: u64) {
        self.events.push(Event::Progress(done));
    }
    fn end(&mut self, stage: Stage) {
        self.events.push(Event::End(stage));
    }
    fn note(&mut self, text: &str) {
        self.notes.push(text.to_string());
    }
    fn interrupted(&mut self) -> bool {
        self.interrupt_in.is_some()
            && self.interrupt_in == self.stage
            && matches!(self.events.last(), Some(Event::Progress(_)))
    }
}

/// Deterministic, non-repeating-looking content (so a shifted or partial copy cannot match).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut state = 0x9e37_79b9_u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// An image file and what its manifest would say about it.
fn image(dir: &Path, len: usize) -> (PathBuf, Expected, Vec<u8>) {
    let bytes = pattern(len, 1);
    let path = dir.join("bulkhead.img");
    fs::write(&path, &bytes).unwrap();
    let expected = Expected { size: len as u64, sha256: Sha256::digest(&bytes).into() };
    (path, expected, bytes)
}

/// A file's bytes and modification time, to prove nothing was written.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    bytes: Vec<u8>,
    modified: SystemTime,
}

impl Snapshot {
    fn of(path: &Path) -> Self {
        Snapshot { bytes: fs::read(path).unwrap(), modified: fs::metadata(path).unwrap().modified().unwrap() }
    }
}
