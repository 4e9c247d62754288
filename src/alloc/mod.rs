//! What runs inside the host's malloc. The exports, the backends' families, the mappings they
//! take and the TLS word are the allocation path's own; the rest serves the layers above.
pub(crate) mod accounting;
pub(crate) mod backend;
pub(crate) mod divert;
// Not in a unit-test binary of the library, whose tests run on the system malloc.
#[cfg(not(test))]
mod exports;
mod glibc_family;
mod jemalloc_family;
pub(crate) mod lazy_start;
pub(crate) mod lifecycle;
mod own_mapping;
pub(crate) mod private_alloc;
pub(crate) mod side_pool;
mod tls;
