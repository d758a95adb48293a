//! `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp` and `strlen`, which std and the app
//! call as C functions. Written here rather than taken from `compiler_builtins`' `mem`
//! feature: the prebuilt `x86_64-unknown-none` library of the stable toolchain does not
//! export them, and building it with the feature needs `-Zbuild-std`. The copies and the
//! fill use the string instructions (fast with ERMS, SDM Vol. 1 §7.3.9.3); inline
//! assembly also keeps the compiler from turning them into calls to themselves.

use core::ffi::c_char;

/// # Safety
/// As C `memcpy`: `n` bytes readable at `src`, writable at `dest`, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: as the caller promises; DF is clear (System V ABI).
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
            options(nostack, preserves_flags))
    };
    dest
}

/// # Safety
/// As C `memmove`: `n` bytes readable at `src`, writable at `dest`; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // `dest` is below `src` or past its end: a forward copy never overwrites unread
        // bytes.
        // SAFETY: as the caller promises.
        return unsafe { memcpy(dest, src, n) };
    }
    // Backwards, from the last byte (DF set for the copy, cleared again after).
    // SAFETY: as the caller promises; `n` > 0 here since the difference is below `n`.
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _, options(nostack))
    };
    dest
}

/// # Safety
/// As C `memset`: `n` writable bytes at `dest`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: as the caller promises.
    unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
            options(nostack, preserves_flags))
    };
    dest
}

/// # Safety
/// As C `memcmp`: `n` readable bytes at `a` and at `b`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: as the caller promises.
        let (x, y) = unsafe { (a.add(i).read(), b.add(i).read()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// As [`memcmp`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: as the caller promises.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// As C `strlen`: a NUL-terminated string at `s`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: as the caller promises, every byte up to the NUL is readable.
    while unsafe { s.add(n).read() } != 0 {
        n += 1;
    }
    n
}
