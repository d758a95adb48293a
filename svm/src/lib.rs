//! AMD SVM backend (placeholder; filled in by the SVM work).
#![no_std]
