//! libmemtrim.so: preloaded into a host process, it serves the host's malloc family from the
//! host's allocator, counts live bytes, and gives retained memory back. See DESIGN.md.
mod accounting;
mod arena_tops;
mod backend;
mod capi;
mod cgroup;
mod clock;
mod divert;
mod environ;
mod exports;
mod glibc;
mod glibc_family;
mod glibc_heaps;
mod glibc_layout;
mod glibc_late;
mod heap_stats;
mod init;
mod jemalloc_ctl;
mod jemalloc_family;
mod lazy_start;
mod limits;
mod own_mapping;
mod panic_hook;
mod policy;
mod pressure;
mod page_file;
mod private_alloc;
mod procfs;
mod pymalloc;
mod pymalloc_arenas;
mod pymalloc_layout;
mod pymalloc_pools;
mod python_api;
mod python_fence;
mod release;
mod report;
mod report_gather;
mod sampler;
mod side_pool;
mod stderr;
mod tls;
mod worker;

#[global_allocator]
static ALLOC: private_alloc::Private = private_alloc::Private;
