//! libmemtrim.so: preloaded into a host process, it serves the host's malloc family from the
//! host's allocator, counts live bytes, and gives retained memory back. See DESIGN.md.
mod accounting;
mod capi;
mod environ;
mod exports;
mod glibc;
mod init;
mod panic_hook;
mod private_alloc;
mod release;
mod report;
mod stderr;
mod tls;

#[global_allocator]
static ALLOC: private_alloc::Private = private_alloc::Private;
