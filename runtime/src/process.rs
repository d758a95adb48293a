//! The process std sees: `argc`/`argv` from the command line ([`crate::command_line`]),
//! `argv[0]` the partition's name (or `app`), an empty environment, and `sys_getpid`.

use crate::command_line;
use core::ffi::c_char;

/// The most arguments passed (the command line holds at most 4095 bytes).
const MAX_ARGS: usize = 256;
/// The argument strings, each NUL-terminated, copied out of the boot area.
const STRINGS: usize = 4096 + 64;

struct Args {
    strings: [u8; STRINGS],
    argv: [*const c_char; MAX_ARGS + 1],
    env: [*const c_char; 1],
}

static mut ARGS: Args =
    Args { strings: [0; STRINGS], argv: [core::ptr::null(); MAX_ARGS + 1], env: [core::ptr::null()] };

/// Builds argv and the environment once, at start; returns (argc, argv, env).
pub fn args(program: &str, cmdline: &str) -> (i32, *const *const c_char, *const *const c_char) {
    let pointer = &raw mut ARGS;
    // SAFETY: called once, on the boot vCPU, before std runs; nothing else touches ARGS.
    let args = unsafe { &mut *pointer };
    let mut used = 0;
    let mut argc = 0;
    for word in core::iter::once(program).chain(command_line::arguments(cmdline)) {
        if argc == MAX_ARGS || used + word.len() + 1 > STRINGS {
            break;
        }
        args.strings[used..used + word.len()].copy_from_slice(word.as_bytes());
        args.strings[used + word.len()] = 0;
        args.argv[argc] = args.strings[used..].as_ptr() as *const c_char;
        used += word.len() + 1;
        argc += 1;
    }
    args.argv[argc] = core::ptr::null();
    (argc as i32, args.argv.as_ptr(), args.env.as_ptr())
}

/// One process per partition: its id is 0.
#[unsafe(no_mangle)]
pub extern "C" fn sys_getpid() -> i32 {
    0
}

/// std reads errno only after a call failed, and every call here returns its error as a
/// negative value: there is no errno, it reads 0.
#[unsafe(no_mangle)]
pub extern "C" fn sys_get_errno() -> i32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_errno() -> i32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_getpagesize() -> i32 {
    4096
}
