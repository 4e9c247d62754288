//! libmemtrim.so: preloaded into a host process, it serves the host's malloc family from the
//! host's allocator, counts live bytes, and gives retained memory back. See DESIGN.md.
mod alloc;
mod capi;
mod init;
mod python;
mod sys;
mod worker;

#[global_allocator]
static ALLOC: alloc::private_alloc::Private = alloc::private_alloc::Private;
