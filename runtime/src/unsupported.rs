//! The calls std makes that a partition has no service for: files, directories, sockets,
//! reading standard input. Each returns a defined error (hermit-abi's errno values,
//! negated as std expects), never a crash, so std turns it into an `io::Error` the program
//! can print:
//!
//! - paths (`open`, `stat`, `lstat`, `mkdir`, `rmdir`, `unlink`): -ENOSYS, "Function not
//!   implemented": there is no file system;
//! - descriptors (`read`, `readv`, `close`, `dup`, `fstat`, `lseek`, `ioctl`,
//!   `getdents64`): -EBADF, since no descriptor but standard output and error exists
//!   (std reads EBADF on standard input as end of input);
//! - sockets: `socket` -ENOSYS, calls on a socket descriptor -EBADF, `poll` -ENOSYS,
//!   `getaddrinfo` EAI_FAIL (its own error space), `freeaddrinfo` nothing.

use core::ffi::{c_char, c_void};
use hermit_abi::{EAI_FAIL, EBADF, ENOSYS, addrinfo, dirent64, iovec, nfds_t, pollfd, sockaddr, socklen_t, stat};

const NO_FS: i32 = -ENOSYS;
const BAD_FD: i32 = -EBADF;

#[unsafe(no_mangle)]
pub extern "C" fn sys_open(_name: *const c_char, _flags: i32, _mode: i32) -> i32 {
    NO_FS
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_opendir(_name: *const c_char) -> i32 {
    NO_FS
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_stat(_name: *const c_char, _stat: *mut stat) -> i32 {
    NO_FS
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_lstat(_name: *const c_char, _stat: *mut stat) -> i32 {
    NO_FS
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_mkdir(_name: *const i8, _mode: u32) -> i32 {
    NO_FS
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_rmdir(_name: *const c_char) -> i32 {
    NO_FS
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_unlink(_name: *const c_char) -> i32 {
    NO_FS
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_read(_fd: i32, _buf: *mut u8, _len: usize) -> isize {
    BAD_FD as isize
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_readv(_fd: i32, _iov: *const iovec, _iovcnt: usize) -> isize {
    BAD_FD as isize
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_close(_fd: i32) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_dup(_fd: i32) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_fstat(_fd: i32, _stat: *mut stat) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_lseek(_fd: i32, _offset: isize, _whence: i32) -> isize {
    BAD_FD as isize
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_ioctl(_s: i32, _cmd: i32, _argp: *mut c_void) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_getdents64(_fd: i32, _dirp: *mut dirent64, _count: usize) -> i64 {
    i64::from(BAD_FD)
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_poll(_fds: *mut pollfd, _nfds: nfds_t, _timeout: i32) -> i32 {
    -ENOSYS
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_socket(_domain: i32, _type: i32, _protocol: i32) -> i32 {
    -ENOSYS
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_accept(_s: i32, _addr: *mut sockaddr, _addrlen: *mut socklen_t) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_bind(_s: i32, _name: *const sockaddr, _namelen: socklen_t) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_connect(_s: i32, _name: *const sockaddr, _namelen: socklen_t) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_listen(_s: i32, _backlog: i32) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_shutdown(_s: i32, _how: i32) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_getpeername(_s: i32, _name: *mut sockaddr, _namelen: *mut socklen_t) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_getsockname(_s: i32, _name: *mut sockaddr, _namelen: *mut socklen_t) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_getsockopt(_s: i32, _level: i32, _name: i32, _val: *mut c_void, _len: *mut socklen_t) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_setsockopt(_s: i32, _level: i32, _name: i32, _val: *const c_void, _len: socklen_t) -> i32 {
    BAD_FD
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_send(_s: i32, _mem: *const c_void, _len: usize, _flags: i32) -> isize {
    BAD_FD as isize
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_sendto(
    _s: i32,
    _mem: *const c_void,
    _len: usize,
    _flags: i32,
    _to: *const sockaddr,
    _tolen: socklen_t,
) -> isize {
    BAD_FD as isize
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_recv(_s: i32, _buf: *mut u8, _len: usize, _flags: i32) -> isize {
    BAD_FD as isize
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_recvfrom(
    _s: i32,
    _buf: *mut u8,
    _len: usize,
    _flags: i32,
    _addr: *mut sockaddr,
    _addrlen: *mut socklen_t,
) -> isize {
    BAD_FD as isize
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_getaddrinfo(
    _node: *const c_char,
    _service: *const c_char,
    _hints: *const addrinfo,
    _res: *mut *mut addrinfo,
) -> i32 {
    EAI_FAIL
}
#[unsafe(no_mangle)]
pub extern "C" fn sys_freeaddrinfo(_ai: *mut addrinfo) {}
